"""The PTB-XL reader on the real sample of the database and on the synthetic set."""

from __future__ import annotations

import numpy as np
import pytest
import wfdb

from ecgx.data.ptbxl import PTBXL
from ecgx.data.record import LEADS, RecordError
from tests.conftest import PTBXL_SAMPLES, needs_samples

# Superdiagnostic classes read by hand from the sample's ptbxl_database.csv and
# scp_statements.csv (every statement at any likelihood, the IMLE-Net rule).
HAND_LABELLED = {
    "1": {"NORM"},  # NORM 100
    "2": {"NORM"},  # NORM 80, SBRAD (rhythm)
    "8": {"MI"},  # IMI 35
    "17": set(),  # AFLT only: no diagnostic statement -> dropped from the task
    "22": {"STTC"},  # NDT 100
    "26": {"STTC"},  # NST_ 100, DIG 100
    "30": {"HYP"},  # LVH 100
    "32": {"CD"},  # LPFB 100
    "39": {"MI", "STTC"},  # IMI 15, LNGQT, NST_, DIG
}


def _labels_by_id(reader: PTBXL) -> dict[str, set[str]]:
    meta = reader.metadata()
    y, classes, _ = reader.labels(meta)
    return {
        rid: {classes[j] for j in np.flatnonzero(row)} for rid, row in zip(meta["record_id"], y)
    }


@needs_samples(PTBXL_SAMPLES)
@pytest.mark.parametrize("rate", [100, 500])
def test_real_signals_equal_wfdb(rate: int) -> None:
    reader = PTBXL(PTBXL_SAMPLES, sampling_rate=rate)
    reader.ensure()
    meta = reader.metadata()
    assert len(meta) == 300
    for _, row in meta.iloc[[0, 7, 150, 299]].iterrows():
        rec = reader.read(row)
        expected, fields = wfdb.rdsamp(str(PTBXL_SAMPLES / row["path"]))
        assert rec.fs == rate == fields["fs"]
        assert rec.leads == LEADS
        assert rec.signal.shape == (12, 10 * rate)
        assert rec.signal.dtype == np.float32
        # PTB-XL stores the leads in canonical order already, as AVR/AVL/AVF.
        np.testing.assert_allclose(rec.signal, expected.T, rtol=0, atol=1e-6)


@needs_samples(PTBXL_SAMPLES)
def test_real_superdiagnostic_labels_match_hand_reading() -> None:
    got = _labels_by_id(PTBXL(PTBXL_SAMPLES, task="superdiagnostic"))
    for rid, classes in HAND_LABELLED.items():
        assert got[rid] == classes, rid


@needs_samples(PTBXL_SAMPLES)
def test_min_likelihood_drops_weak_statements() -> None:
    got = _labels_by_id(PTBXL(PTBXL_SAMPLES, task="superdiagnostic", min_likelihood=50))
    assert got["8"] == set()  # IMI at 35 no longer counts
    assert got["39"] == {"STTC"}  # IMI at 15 dropped, NST_ 100 kept
    assert got["2"] == {"NORM"}  # NORM at 80 kept


@needs_samples(PTBXL_SAMPLES)
def test_tasks_have_the_benchmark_class_counts() -> None:
    # Class counts of the PTB-XL benchmark tasks, from the complete scp_statements.csv.
    expected = {"superdiagnostic": 5, "subdiagnostic": 23, "diagnostic": 44, "form": 19,
                "rhythm": 12, "all": 71}  # fmt: skip
    for task, n in expected.items():
        _, classes, _ = PTBXL(PTBXL_SAMPLES, task=task).labels(PTBXL(PTBXL_SAMPLES).metadata())
        assert len(classes) == n, task
    _, classes, _ = PTBXL(PTBXL_SAMPLES).labels(PTBXL(PTBXL_SAMPLES).metadata())
    assert classes == ["CD", "HYP", "MI", "NORM", "STTC"]


def test_synthetic_set_reads_like_ptbxl(synthetic_root) -> None:
    reader = PTBXL(synthetic_root, sampling_rate=100)
    reader.ensure()
    meta = reader.metadata()
    y, classes, keep = reader.labels(meta)
    assert classes == ["CD", "HYP", "MI", "NORM", "STTC"]
    assert keep.mean() > 0.9 and y[keep].sum(0).min() > 0
    rec = reader.read(meta.iloc[0])
    expected, _ = wfdb.rdsamp(str(synthetic_root / meta.iloc[0]["path"]))
    np.testing.assert_allclose(rec.signal, expected.T, atol=1e-6)


def test_missing_root_names_the_path(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        PTBXL(tmp_path / "does-not-exist").ensure()
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="ptbxl_database.csv"):
        PTBXL(tmp_path / "empty").ensure()


def test_bad_arguments_name_the_key() -> None:
    with pytest.raises(ValueError, match="dataset.sampling_rate"):
        PTBXL("x", sampling_rate=250)
    with pytest.raises(ValueError, match="dataset.task"):
        PTBXL("x", task="nope")


@needs_samples(PTBXL_SAMPLES)
def test_truncated_record_is_a_clear_error(tmp_path) -> None:
    import shutil

    root = tmp_path / "ptbxl"
    shutil.copytree(PTBXL_SAMPLES, root, ignore=shutil.ignore_patterns("records500"))
    dat = root / "records100" / "00000" / "00001_lr.dat"
    dat.chmod(0o644)
    dat.write_bytes(dat.read_bytes()[:1000])
    reader = PTBXL(root)
    with pytest.raises(RecordError, match="00001_lr"):
        reader.read(reader.metadata().iloc[0])


def test_cache_spec_changes_when_the_database_table_changes(synthetic_root, tmp_path) -> None:
    import os
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(synthetic_root, root)
    before = PTBXL(root).signal_spec()
    assert PTBXL(root).signal_spec() == before
    stat = (root / "ptbxl_database.csv").stat()
    os.utime(root / "ptbxl_database.csv", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert PTBXL(root).signal_spec() != before  # a regenerated set gets a fresh cache
