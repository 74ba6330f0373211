"""The SPH reader on the real sample (flat layout) and on a pristine-layout copy made here."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from ecgx.datasets.sph import SNOMED_CLASSES, SPH
from ecgx.errors import ConfigValueError, MissingPathError
from ecgx.formats.record import LEADS, RecordError
from tests.conftest import SAMPLES, needs_samples

SPH_SAMPLES = SAMPLES / "sph"


@needs_samples(SPH_SAMPLES)
def test_sample_metadata_in_the_flat_layout() -> None:
    reader = SPH(SPH_SAMPLES)
    reader.ensure()
    meta = reader.metadata()
    assert reader.layout == "flat"
    # SPH00005.h5 is on disk but not in metadata.csv: the intermediate repository dropped the
    # rows its AHA -> SNOMED mapping could not label.
    assert meta["record_id"].tolist() == [f"SPH{i:05d}" for i in (1, 2, 3, 4, 6, 7, 8, 9, 10)]
    first = meta.iloc[0]
    assert first["path"] == "SPH00001.h5" and first["patient_id"] == "S00001"
    assert (first["age"], first["sex"]) == (55.0, 0.0)
    assert first["labels"] == {"22": 1.0, "23": 1.0}
    assert meta["sex"].tolist().count(1.0) == 3


@needs_samples(SPH_SAMPLES)
def test_sample_records_equal_h5py() -> None:
    reader = SPH(SPH_SAMPLES)
    meta = reader.metadata()
    for _, row in meta.iterrows():
        rec = reader.read(row)
        with h5py.File(SPH_SAMPLES / row["path"], "r") as f:
            expected = f["ecg"][()]
        assert expected.dtype == np.float16
        assert rec.signal.dtype == np.float32 and rec.leads == LEADS and rec.fs == 500.0
        assert rec.signal.shape == (12, row["n_samples"])
        np.testing.assert_array_equal(rec.signal, expected.astype(np.float32))


@needs_samples(SPH_SAMPLES)
def test_sample_labels_per_task() -> None:
    meta = SPH(SPH_SAMPLES).metadata()
    y, classes, keep = SPH(SPH_SAMPLES, task="primary").labels(meta)
    assert classes == ["1", "22", "23", "106"] and keep.all()
    assert y.sum(axis=0).tolist() == [6, 1, 2, 1]
    # The SNOMED task agrees with the SNOMEDCTCode column the intermediate repository derived
    # (its SR imputation gave SR exactly to the normal ECGs here).
    y, classes, keep = SPH(SPH_SAMPLES, task="snomed").labels(meta)
    assert classes == list(SNOMED_CLASSES) and keep.all()
    for row, target in zip(meta.itertuples(), y):
        assert {classes[j] for j in np.flatnonzero(target)} == set(row.snomed_ct.split(","))


def test_modifier_forms() -> None:
    meta = pd.DataFrame(
        {"labels": [{"50+346": 1.0, "147+367": 1.0}, {"30+308": 1.0, "1": 1.0}, {"999": 1.0}]}
    )
    y, classes, keep = SPH(".", task="primary").labels(meta)
    assert classes == ["1", "30", "50", "147", "999"]
    assert y.tolist() == [[0, 0, 1, 1, 0], [1, 1, 0, 0, 0], [0, 0, 0, 0, 1]]
    _, classes, _ = SPH(".", task="statements").labels(meta)
    assert classes == ["1", "30+308", "50+346", "147+367", "999"]
    assert SPH.snomed_codes(meta["labels"][0]) == {"164889003", "59931005"}  # AF, T inversion
    assert SPH.snomed_codes(meta["labels"][1]) == {"284470004", "426783006"}  # PAC, SR
    y, _, keep = SPH(".", task="snomed").labels(meta)
    assert keep.tolist() == [True, True, False]  # 999 maps to nothing: record left out


def _pristine(root: Path, n: int = 5000) -> np.ndarray:
    (root / "records").mkdir(parents=True)
    signal = np.random.default_rng(1).normal(0, 0.3, (12, n)).astype(np.float16)
    with h5py.File(root / "records" / "A00001.h5", "w") as f:
        f.create_dataset("ecg", data=signal)
    pd.DataFrame(
        {"ECG_ID": ["A00001"], "AHA_Code": ["50+346;147"], "Patient_ID": ["P00001"],
         "Age": [70], "Sex": ["F"], "N": [5000], "Date": ["2020-01-01"]}
    ).to_csv(root / "metadata.csv", index=False)  # fmt: skip
    return signal


def test_pristine_layout(tmp_path: Path) -> None:
    signal = _pristine(tmp_path)
    reader = SPH(tmp_path)
    meta = reader.metadata()
    assert reader.layout == "pristine" and reader.signal_spec()["layout"] == "pristine"
    row = meta.iloc[0]
    assert (row["record_id"], row["path"], row["sex"]) == ("A00001", "records/A00001.h5", 1.0)
    assert row["labels"] == {"50+346": 1.0, "147": 1.0}
    np.testing.assert_array_equal(reader.read(row).signal, signal.astype(np.float32))


def test_errors_name_the_file_or_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigValueError, match="dataset.task"):
        SPH(tmp_path, task="superdiagnostic")
    with pytest.raises(MissingPathError, match="metadata.csv"):
        SPH(tmp_path).ensure()
    _pristine(tmp_path)
    reader = SPH(tmp_path)
    row = reader.metadata().iloc[0].copy()
    row["n_samples"] = 6000
    with pytest.raises(RecordError, match=r"A00001\.h5: 5000 samples, metadata N says 6000"):
        reader.read(row)
    row["path"] = "records/A00002.h5"
    with pytest.raises(RecordError, match=r"A00002\.h5: record file missing"):
        reader.read(row)
    table = pd.read_csv(tmp_path / "metadata.csv")
    table["AHA_Code"] = ["50+AF"]
    table.to_csv(tmp_path / "metadata.csv", index=False)
    with pytest.raises(RecordError, match=r"metadata\.csv: A00001\.h5: AHA_Code '50\+AF'"):
        reader.metadata()
