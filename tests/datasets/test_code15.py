"""dataset=code15 and dataset=code_test: HDF5 files written here in the documented layout, the
CODE test set's real annotation tables from ../shared/ecg-samples/code_test."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from ecgx.datasets.code15 import CLASSES, CODE15, CODETest
from ecgx.errors import ConfigValueError, MissingPathError
from ecgx.formats.record import LEADS, RecordError
from tests.conftest import SAMPLES, needs_samples

CODE_TEST = SAMPLES / "code_test"
AVL = 3  # the file's lead order: DI, DII, DIII, AVL, AVF, AVR, V1-V6


def _tracing(seconds: int, lead: int | None = None, seed: int = 0) -> np.ndarray:
    """(4096, 12) in 1e-4 V: ``seconds`` at 400 Hz centred in zeros, as the files pad them;
    non-zero in ``lead`` only when given."""
    n = 400 * seconds
    x = np.zeros((4096, 12), np.float32)
    signal = np.random.default_rng(seed).uniform(1, 5, size=(n, 12)).astype(np.float32)
    if lead is not None:
        signal[:, np.arange(12) != lead] = 0
    pad = (4096 - n) // 2
    x[pad : pad + n] = signal
    return x


def _part(path: Path, exam_ids: list[int], tracings: list[np.ndarray]) -> None:
    with h5py.File(path, "w") as f:
        f["exam_id"] = np.array([*exam_ids, 0], dtype=np.int64)
        f["tracings"] = np.stack([*tracings, np.zeros((4096, 12), np.float32)])


def _code15(root: Path) -> dict[int, np.ndarray]:
    """Exams 11, 12 in part 0; 13 and 99 (not in exams.csv) in part 1; 14 in an absent part."""
    root.mkdir(parents=True, exist_ok=True)
    x = {11: _tracing(7, seed=1), 12: _tracing(10, lead=AVL, seed=2), 13: _tracing(10, seed=3),
         99: _tracing(10, seed=4)}  # fmt: skip
    _part(root / "exams_part0.hdf5", [11, 12], [x[11], x[12]])
    _part(root / "exams_part1.hdf5", [13, 99], [x[13], x[99]])
    pd.DataFrame(
        {
            "exam_id": [14, 13, 12, 11], "age": [50, 61, 72, 83],
            "is_male": [True, False, True, False], "nn_predicted_age": [51.0, 60.2, 70.1, 80.9],
            "1dAVb": [False, True, False, False], "RBBB": [False, False, True, False],
            "LBBB": [False] * 4, "SB": [False] * 4, "ST": [False, False, False, True],
            "AF": [False, True, False, False], "patient_id": [7, 7, 8, 9],
            "death": [None] * 4, "timey": [None] * 4, "normal_ecg": [True, False, False, False],
            "trace_file": ["exams_part2.hdf5", "exams_part1.hdf5", "exams_part0.hdf5",
                           "exams_part0.hdf5"],
        }
    ).to_csv(root / "exams.csv", index=False)  # fmt: skip
    return x


def test_code15_joins_exams_and_parts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    x = _code15(tmp_path)
    reader = CODE15(tmp_path)
    reader.ensure()
    with caplog.at_level(logging.INFO):
        meta = reader.metadata()
    # 14's part is absent, 99 is not in exams.csv, the exam_id 0 rows are padding
    assert list(meta["record_id"]) == ["11", "12", "13"]
    assert "exams_part1.hdf5: 1 exam_ids missing from" in caplog.text and "first: 99" in caplog.text
    assert meta["patient_id"].tolist() == ["9", "8", "7"]
    assert meta["sex"].tolist() == [1.0, 0.0, 1.0] and meta["age"].tolist() == [83, 72, 61]
    assert meta.iloc[2]["labels"] == {"1dAVb": 1.0, "AF": 1.0}
    y, classes, keep = reader.labels(meta)
    assert classes == list(CLASSES) and keep.all()  # a normal exam is a negative, kept
    assert y[:, classes.index("ST")].tolist() == [1, 0, 0]
    # padding removed: 7 s -> 2,800 samples, 10 s -> 4,000; 1e-4 V -> mV
    short = reader.read(meta.iloc[0].to_dict())
    assert short.fs == 400 and short.signal.shape == (12, 2800)
    pad = (4096 - 2800) // 2
    np.testing.assert_allclose(short.signal[LEADS.index("I")], x[11][pad : pad + 2800, 0] * 0.1,
                               rtol=1e-6)  # fmt: skip
    np.testing.assert_allclose(short.signal[LEADS.index("aVR")], x[11][pad : pad + 2800, 5] * 0.1,
                               rtol=1e-6)  # fmt: skip
    # leads by name: a signal in the file's AVL column lands in aVL only
    lead_only = reader.read(meta.iloc[1].to_dict()).signal
    assert lead_only.shape == (12, 4000)
    assert [LEADS[i] for i in np.flatnonzero(np.abs(lead_only).max(axis=1))] == ["aVL"]


def test_code15_bad_files_name_the_file_and_fault(tmp_path: Path) -> None:
    with pytest.raises(MissingPathError, match="exams.csv is missing"):
        CODE15(tmp_path).ensure()
    _code15(tmp_path)
    with pytest.raises(ConfigValueError, match="dataset.classes"):
        CODE15(tmp_path, classes=["MI"])
    with pytest.raises(ValueError, match="dataset.leads: non-standard lead name 'AVX'"):
        CODE15(tmp_path, leads=["DI", "DII", "DIII", "AVL", "AVF", "AVX", *LEADS[6:]])
    reader = CODE15(tmp_path)
    rows = reader.metadata().to_dict("records")
    # a truncated part: the error names the file
    part = tmp_path / "exams_part1.hdf5"
    part.write_bytes(part.read_bytes()[:4000])
    with pytest.raises(RecordError, match="exams_part1.hdf5: unreadable HDF5 file, truncated"):
        CODE15(tmp_path).metadata()
    with pytest.raises(RecordError, match="exams_part1.hdf5"):
        CODE15(tmp_path).read(rows[2])
    # an exam stored in two parts
    _part(tmp_path / "exams_part1.hdf5", [11], [_tracing(10)])
    with pytest.raises(RecordError, match=r"exam_id 11 is stored twice \(exams_part0.hdf5\[0\]"):
        CODE15(tmp_path).metadata()


@needs_samples(CODE_TEST)
def test_code_test_set_with_the_real_tables(tmp_path: Path) -> None:
    for name in ("gold_standard", "attributes", "dnn", "cardiologist1"):
        shutil.copy(CODE_TEST / f"{name}.csv", tmp_path)
    gold = pd.read_csv(CODE_TEST / "gold_standard.csv")
    n = len(gold)
    assert n == 827
    written = {0: _tracing(10, seed=5), 826: _tracing(7, seed=6)}
    with h5py.File(tmp_path / "ecg_tracings.hdf5", "w") as f:
        # chunked: the rows not written stay unallocated, so the file stays small
        ds = f.create_dataset("tracings", (n, 4096, 12), "f4", chunks=(1, 4096, 12))
        for i, x in written.items():
            ds[i] = x
    reader = CODETest(tmp_path)
    reader.ensure()
    meta = reader.metadata()
    y, classes, keep = reader.labels(meta)
    assert len(meta) == n and keep.all()
    np.testing.assert_array_equal(y, gold[classes].to_numpy(np.float32))  # by name, not position
    attributes = pd.read_csv(CODE_TEST / "attributes.csv")
    assert meta["age"].tolist() == attributes["age"].tolist()
    assert meta["sex"].tolist() == attributes["sex"].map({"M": 0.0, "F": 1.0}).tolist()
    assert reader.read(meta.iloc[826].to_dict()).signal.shape == (12, 2800)
    with pytest.raises(RecordError, match=r"ecg_tracings.hdf5\[5\]: every sample is zero"):
        reader.read(meta.iloc[5].to_dict())
    refs = reader.references()
    assert set(refs) == {"dnn", "cardiologist1"} and refs["dnn"].shape == (n, 6)
    assert list(refs["dnn"].columns) == list(CLASSES)
    # the gold standard and the tracings must align row for row
    gold.iloc[:-1].to_csv(tmp_path / "gold_standard.csv", index=False)
    with pytest.raises(RecordError, match="holds 827 tracings, .*gold_standard.csv 826 rows"):
        CODETest(tmp_path).metadata()
