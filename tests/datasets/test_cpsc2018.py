"""The CPSC 2018 reader on the original training files and REFERENCE.csv."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from hydra.utils import instantiate

from ecgx.datasets.cinc_labels import CPSC_ABBREVIATIONS
from ecgx.datasets.cpsc2018 import CLASSES, CPSC2018, SNOMED_TO_CLASS, read_reference
from ecgx.formats.record import LEADS, RecordError
from tests.conftest import SAMPLES, needs_samples

CPSC = SAMPLES / "cpsc2018"

# Read by hand from REFERENCE.csv (codes) and the files' ECG.sex / ECG.age.
HAND = {
    "A1980": ({"PAC"}, 0.0, 52.0),  # 6
    "A1981": ({"STD"}, 1.0, 48.0),  # 8
    "A1982": ({"IAVB"}, 0.0, 89.0),  # 3
    "A1983": ({"SNR"}, 0.0, 49.0),  # 1
    "A1986": ({"RBBB"}, 1.0, 53.0),  # 5
    "A1988": ({"IAVB"}, 1.0, 49.0),  # 3
}


def _root_with(tmp_path: Path, names: list[str]) -> Path:
    root = tmp_path / "cpsc2018"
    root.mkdir()
    shutil.copyfile(CPSC / "REFERENCE.csv", root / "REFERENCE.csv")
    for name in names:
        shutil.copyfile(CPSC / f"{name}.mat", root / f"{name}.mat")
    return root


@needs_samples(CPSC)
def test_every_file_equals_loadmat() -> None:
    reader = CPSC2018(CPSC)
    reader.ensure()
    meta = reader.metadata()
    assert list(meta["record_id"]) == [f"A{n}" for n in range(1980, 1990)]
    for _, row in meta.iterrows():
        rec = reader.read(row)
        data = scipy.io.loadmat(str(CPSC / row["path"]))["ECG"][0, 0]["data"]
        assert rec.fs == 500 == row["fs"]
        assert rec.leads == LEADS
        assert rec.signal.dtype == np.float32
        assert rec.signal.shape == data.shape == (12, row["n_samples"])
        np.testing.assert_array_equal(rec.signal, data.astype(np.float32))
    assert meta.set_index("record_id").loc["A1988", "n_samples"] == 27157  # 54 s, kept whole


@needs_samples(CPSC)
def test_labels_and_demographics_match_hand_reading() -> None:
    reader = CPSC2018(CPSC)
    meta = reader.metadata()
    y, names, keep = reader.labels(meta)
    assert names == list(CLASSES) and keep.all()
    got = {rid: {names[j] for j in np.flatnonzero(row)} for rid, row in zip(meta["record_id"], y)}
    table = meta.set_index("record_id")
    for rid, (classes, sex, age) in HAND.items():
        assert got[rid] == classes, rid
        assert table.loc[rid, ["sex", "age"]].tolist() == [sex, age], rid


@needs_samples(CPSC)
def test_class_subset_in_the_order_given() -> None:
    reader = CPSC2018(CPSC, classes=["STD", "IAVB"])
    meta = reader.metadata()
    y, names, keep = reader.labels(meta)
    assert names == ["STD", "IAVB"]
    by_id = dict(zip(meta["record_id"], y.tolist()))
    assert by_id["A1981"] == [1.0, 0.0] and by_id["A1982"] == [0.0, 1.0]
    assert not keep[list(meta["record_id"]).index("A1980")]  # PAC is not in this task


@needs_samples(CPSC)
def test_reference_table() -> None:
    reference = read_reference(CPSC / "REFERENCE.csv")
    assert len(reference) == 6877
    assert reference["A0001"] == ["RBBB"]
    assert reference["A0043"] == ["RBBB", "AF"]  # First_label 5, Second_label 2
    assert max(len(v) for v in reference.values()) == 3


def test_snomed_map_covers_the_cinc_abbreviations() -> None:
    # Both releases of the same records must land on the same nine classes.
    by_abbreviation = {a: SNOMED_TO_CLASS[code] for a, code in CPSC_ABBREVIATIONS.items()}
    assert sorted(by_abbreviation.values()) == sorted(CLASSES)
    assert by_abbreviation["Normal"] == "SNR" and by_abbreviation["I-AVB"] == "IAVB"


@needs_samples(CPSC)
def test_broken_files_are_clear_errors(tmp_path: Path) -> None:
    root = _root_with(tmp_path, ["A1980"])
    data = scipy.io.loadmat(str(CPSC / "A1980.mat"))["ECG"][0, 0]["data"]
    target = root / "A1980.mat"
    reader = CPSC2018(root)

    def write(**fields: object) -> None:
        scipy.io.savemat(str(target), fields)

    cases = [
        (lambda: target.write_bytes((CPSC / "A1980.mat").read_bytes()[:4000]),
         r"A1980\.mat: unreadable MATLAB file"),
        (lambda: write(val=data), r"A1980\.mat: no struct ECG"),
        (lambda: write(ECG={"sex": "Male", "age": 52, "data": data[:11]}),
         r"A1980\.mat: ECG\.data is \(11, 5000\)"),
        (lambda: write(ECG={"sex": "Male", "age": 52, "data": np.where(data > 1, np.nan, data)}),
         r"A1980\.mat: \d+ NaN/Inf samples"),
        (lambda: target.unlink(), r"A1980\.mat: file missing"),
    ]  # fmt: skip
    row = reader.metadata().iloc[0]
    for damage, message in cases:
        shutil.copyfile(CPSC / "A1980.mat", target)
        damage()
        with pytest.raises(RecordError, match=message):
            CPSC2018(root).read(row)
    # A damaged file still gets its metadata row; reading it is what raises.
    shutil.copyfile(CPSC / "A1980.mat", target)
    target.write_bytes(target.read_bytes()[:4000])
    meta = CPSC2018(root).metadata()
    assert np.isnan(meta.loc[0, "age"]) and meta.loc[0, "labels"] == {"PAC": 1.0}


@needs_samples(CPSC)
def test_bad_reference_rows_name_the_file(tmp_path: Path) -> None:
    root = _root_with(tmp_path, ["A1980"])
    ref = root / "REFERENCE.csv"
    ref.write_text(ref.read_text().replace("A1980,6,,", "A1980,10,,"))
    with pytest.raises(RecordError, match=r"REFERENCE\.csv: A1980 First_label='10'"):
        CPSC2018(root).metadata()
    ref.write_text("Recording,Label\nA1980,6\n")
    with pytest.raises(RecordError, match=r"REFERENCE\.csv: missing columns"):
        CPSC2018(root).metadata()


@needs_samples(CPSC)
def test_file_without_reference_row_has_no_label(tmp_path: Path) -> None:
    root = _root_with(tmp_path, ["A1980"])
    shutil.copyfile(CPSC / "A1981.mat", root / "B0001.mat")
    reader = CPSC2018(root)
    meta = reader.metadata()
    assert list(meta["record_id"]) == ["A1980", "B0001"]
    assert reader.labels(meta)[2].tolist() == [True, False]


def test_bad_arguments_name_the_key() -> None:
    with pytest.raises(ValueError, match="dataset.classes"):
        CPSC2018("x", classes=["SNR", "Normal"])
    with pytest.raises(ValueError, match="dataset.classes"):
        CPSC2018("x", classes=["AF", "AF"])
    with pytest.raises(ValueError, match="dataset.fs"):
        CPSC2018("x", fs=0)


def test_missing_root_or_reference_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        CPSC2018(tmp_path / "does-not-exist").ensure()
    with pytest.raises(FileNotFoundError, match="REFERENCE.csv"):
        CPSC2018(tmp_path).ensure()


@needs_samples(CPSC)
def test_config_builds_a_working_reader(compose_train) -> None:
    cfg = compose_train("dataset=cpsc2018", f"dataset.root={CPSC}")
    reader = instantiate(cfg.dataset)
    assert isinstance(reader, CPSC2018)
    reader.ensure()
    meta = reader.metadata()
    assert len(meta) == 10
    assert reader.read(meta.iloc[0]).signal.shape == (12, 5000)
    assert reader.labels(meta)[1] == list(CLASSES)
