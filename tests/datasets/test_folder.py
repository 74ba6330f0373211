"""dataset=folder: every record under a root, labelled from a CSV or not at all."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate

from ecgx.datasets.folder import Folder
from ecgx.errors import ConfigValueError, MissingPathError
from ecgx.formats.record import LEADS
from tests.conftest import PTBXL_SAMPLES, needs_samples

N_NPY = 12


def _npy_folder(root: Path, n: int = N_NPY) -> dict[str, np.ndarray]:
    """``n`` .npy records in two site folders, each lead holding a known ramp."""
    rng = np.random.default_rng(0)
    out = {}
    for i in range(n):
        rel = f"site_{'ab'[i % 2]}/deep/r{i:03d}"
        x = rng.normal(size=(len(LEADS), 1000)).astype(np.float32)
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        np.save(root / f"{rel}.npy", x)
        out[rel] = x
    return out


def test_unlabelled_folder_reads_every_record_and_keeps_all(tmp_path: Path) -> None:
    signals = _npy_folder(tmp_path)
    reader = Folder(tmp_path, fs=250)
    meta = reader.metadata()
    assert list(meta["record_id"]) == sorted(signals)
    assert set(meta["source"]) == {"site_a", "site_b"}
    row = meta.iloc[3].to_dict()
    record = reader.read(row)
    assert record.fs == 250 and record.leads == LEADS
    np.testing.assert_array_equal(record.signal, signals[row["record_id"]])
    y, classes, keep = reader.labels(meta)
    assert y.shape == (N_NPY, 0) and classes == [] and keep.all()


def test_labels_csv_joins_by_path_or_unique_name(tmp_path: Path) -> None:
    _npy_folder(tmp_path)
    (tmp_path / "labels.csv").write_text(
        "path,labels,patient_id,age,sex\n"
        "site_a/deep/r000.npy,AF;RBBB,p1,61,M\n"
        "r002,AF,p1,62,F\n"  # the file name alone: unique under the root
        "site_b/deep/r001,,p2,,\n"
        "not/there,AF,p3,1,M\n"  # names no record: left out, logged
    )
    reader = Folder(tmp_path, labels_csv="labels.csv", fs=500)
    meta = reader.metadata().set_index("record_id")
    assert meta.loc["site_a/deep/r000", "labels"] == {"AF": 1.0, "RBBB": 1.0}
    assert meta.loc["site_a/deep/r002", "labels"] == {"AF": 1.0}
    assert meta.loc["site_a/deep/r002", "patient_id"] == "p1"
    assert meta.loc["site_a/deep/r002", "sex"] == 1.0 and meta.loc["site_a/deep/r000", "sex"] == 0
    assert meta.loc["site_a/deep/r000", "age"] == 61
    assert meta.loc["site_a/deep/r004", "patient_id"] == "site_a/deep/r004"  # not in the CSV
    y, classes, keep = reader.labels(reader.metadata())
    assert classes == ["AF", "RBBB"]
    assert int(keep.sum()) == 2 and y.sum() == 3
    # 0/1 columns instead of a labels column; a class order from config
    # (outside the root: a CSV under it that is no labels table is read as a Chapman record)
    (tmp_path / "labels.csv").unlink()
    hot_csv = tmp_path.parent / f"{tmp_path.name}-hot.csv"
    hot_csv.write_text("record_id,RBBB,AF\nsite_a/deep/r000,1,0\nr003,0,1\n")
    hot = Folder(tmp_path, labels_csv=hot_csv, fs=500, classes=["AF", "RBBB"])
    meta = hot.metadata()
    y, classes, keep = hot.labels(meta)
    at = {rid: i for i, rid in enumerate(meta["record_id"])}
    assert classes == ["AF", "RBBB"] and keep.sum() == 2
    assert y[at["site_a/deep/r000"]].tolist() == [0, 1]
    assert y[at["site_b/deep/r003"]].tolist() == [1, 0]


def test_bad_input_names_the_file_or_key(tmp_path: Path) -> None:
    with pytest.raises(MissingPathError, match="dataset.root"):
        Folder(tmp_path / "absent").ensure()
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingPathError, match="no record files"):
        Folder(tmp_path / "empty").metadata()
    rec = tmp_path / "rec"  # the tables beside it: a CSV under it would count as a record
    _npy_folder(rec, 2)
    with pytest.raises(MissingPathError, match="dataset.labels_csv"):
        Folder(rec, labels_csv="nope.csv").ensure()
    (tmp_path / "nokey.csv").write_text("name,AF\nr000,1\n")
    with pytest.raises(ConfigValueError, match="no key column"):
        Folder(rec, labels_csv=tmp_path / "nokey.csv").metadata()
    (tmp_path / "twice.csv").write_text("record_id,labels\nr000,AF\nr000.npy,AF\n")
    with pytest.raises(ConfigValueError, match="listed twice"):
        Folder(rec, labels_csv=tmp_path / "twice.csv").metadata()
    (tmp_path / "bad.csv").write_text("record_id,AF\nr000,yes\n")
    with pytest.raises(ValueError, match="bad.csv: column 'AF' holds 'yes'"):
        Folder(rec, labels_csv=tmp_path / "bad.csv").metadata()
    (tmp_path / "ok.csv").write_text("record_id,labels\nr000,AF\n")
    reader = Folder(rec, labels_csv=tmp_path / "ok.csv", classes=["LBBB"])
    with pytest.raises(ConfigValueError, match="dataset.classes"):
        reader.labels(reader.metadata())
    reader = Folder(rec)
    with pytest.raises(ValueError, match="r000.npy: a .npy file carries no sampling rate"):
        reader.read(reader.metadata().iloc[0].to_dict())


@needs_samples(PTBXL_SAMPLES)
def test_unlabelled_datamodule_from_config(tmp_path: Path, compose_train) -> None:
    """dataset=folder in unlabelled mode through the DataModule, as pretraining uses it: a
    WFDB tree (PTB-XL records at 100 Hz, the tables beside them ignored), every record in one
    of the three splits, no class."""
    root = tmp_path / "records"
    shutil.copytree(PTBXL_SAMPLES / "records100" / "00000", root / "00000",
                    ignore=lambda d, names: [n for n in names if n[:5] > "00040"])  # fmt: skip
    (root / "ptbxl_database.csv").write_text("not a record\n")
    cfg = compose_train("dataset=folder", f"dataset.root={root}")
    assert cfg.split._target_.endswith("StratifiedShuffleSplit")
    dm = instantiate(cfg.data)
    dm.setup()
    assert dm.num_classes == 0 and dm.num_leads == 12
    parts = [set(v.tolist()) for v in dm.indices.values()]
    assert sum(map(len, parts)) == len(dm.cache) == 40
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    batch = next(iter(dm.train_dataloader()))
    assert batch["signal"].shape[1:] == (12, 1000) and batch["target"].shape[1] == 0
