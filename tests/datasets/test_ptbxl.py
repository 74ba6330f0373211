"""The PTB-XL reader on the real sample of the database and on the synthetic set."""

from __future__ import annotations

import numpy as np
import pytest
import wfdb

from ecgx.datasets.ptbxl import PTBXL
from ecgx.formats.record import LEADS, RecordError
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


@needs_samples(PTBXL_SAMPLES)
def test_mi_subdisease_follows_the_seed_rules() -> None:
    got = _labels_by_id(PTBXL(PTBXL_SAMPLES, task="mi_subdisease"))
    assert got["139"] == {"IMI"}  # IMI 100
    assert got["210"] == {"IMI"}  # IMI 80
    assert got["177"] == {"ASMI"}  # ASMI 100
    assert got["181"] == {"ASMI"}  # ASMI 100; IMI at 15 does not count
    assert got["270"] == set()  # ASMI and IMI both at 100: not exactly one
    assert got["8"] == set()  # IMI 35 is excluded
    assert got["1"] == {"NORM"}  # NORM 100
    assert got["2"] == set()  # NORM 80 is not enough


@needs_samples(PTBXL_SAMPLES)
def test_mi_subdisease_split(compose_train) -> None:
    from hydra.utils import instantiate

    cfg = compose_train(f"dataset.root={PTBXL_SAMPLES}", "dataset.task=mi_subdisease",
                        "split=mi_subdisease", "split.norm_train=20", "split.norm_test=5")  # fmt: skip
    dm = instantiate(cfg.data)
    dm.setup("fit")
    meta = dm.cache.meta
    folds = {k: meta["strat_fold"].iloc[v] for k, v in dm.indices.items()}
    y = dm.targets
    norm_train = y[dm.indices["train"], 2] > 0
    assert norm_train.sum() == 20 and set(folds["train"][norm_train]) <= {1, 2}
    assert set(folds["train"][~norm_train]) <= set(range(1, 9))
    norm_test = y[dm.indices["test"], 2] > 0
    assert norm_test.sum() == 5 and set(folds["test"][norm_test]) == {3}
    assert set(folds["test"][~norm_test]) <= {9, 10}
    assert (dm.indices["val"] == dm.indices["test"]).all()  # the seed validates on test
    first_norm = sorted(int(r) for r in meta["record_id"].iloc[dm.indices["train"]][norm_train])
    fold12_norm = [int(r) for r, f, n in zip(meta["record_id"], meta["strat_fold"], y[:, 2])
                   if n and f in (1, 2)]  # fmt: skip
    assert first_norm == sorted(fold12_norm)[:20]


def _one_record_copy(tmp_path):
    import shutil

    root = tmp_path / "ptbxl"
    (root / "records100" / "00000").mkdir(parents=True)
    for name in ("ptbxl_database.csv", "scp_statements.csv"):
        shutil.copy(PTBXL_SAMPLES / name, root / name)
    for ext in ("hea", "dat"):
        shutil.copy(PTBXL_SAMPLES / f"records100/00000/00001_lr.{ext}", root / "records100/00000")
    (root / "records100/00000/00001_lr.hea").chmod(0o644)
    (root / "records100/00000/00001_lr.dat").chmod(0o644)
    return root, root / "records100/00000/00001_lr"


@needs_samples(PTBXL_SAMPLES)
@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("nan", "NaN/Inf samples"),
        ("lead_name", "non-standard lead name 'XYZ'"),
        ("eleven_leads", "missing leads"),
        ("missing_dat", "data file missing"),
        ("length", "header says 1200 samples"),
        ("gain_zero", "lead III has ADC gain 0"),
        ("other_dat", "names data file '00002_lr.dat'"),
        ("hundredfold", "100000 samples (1000 s); every PTB-XL record lasts 10 s"),
    ],
)
def test_damaged_ptbxl_records_are_named(tmp_path, damage: str, message: str) -> None:
    import shutil

    root, record = _one_record_copy(tmp_path)
    hea, dat = record.with_suffix(".hea"), record.with_suffix(".dat")
    lines = hea.read_text().splitlines()
    if damage == "nan":  # -32768 is format 16's missing-sample marker
        raw = bytearray(dat.read_bytes())
        raw[100:102] = (-32768).to_bytes(2, "little", signed=True)
        dat.write_bytes(bytes(raw))
    elif damage == "lead_name":
        lines[5] = lines[5].rsplit(" ", 1)[0] + " XYZ"
        hea.write_text("\n".join(lines) + "\n")
    elif damage == "eleven_leads":
        raw = np.fromfile(dat, "<i2").reshape(-1, 12)[:, :11]
        raw.tofile(dat)
        first = lines[0].split()
        first[1] = "11"
        hea.write_text("\n".join([" ".join(first), *lines[1:12]]) + "\n")
    elif damage == "missing_dat":
        dat.unlink()
    elif damage == "length":
        first = lines[0].split()
        first[3] = "1200"
        hea.write_text("\n".join([" ".join(first), *lines[1:]]) + "\n")
    elif damage == "gain_zero":  # WFDB would read 0 as its default 200 adu/mV: 5x too big
        lines[3] = lines[3].replace(" 1000.0(0)/mV ", " 0(0)/mV ")
        hea.write_text("\n".join(lines) + "\n")
    elif damage == "other_dat":  # the next record's data file, present beside it
        shutil.copy(PTBXL_SAMPLES / "records100/00000/00002_lr.dat", dat.parent)
        hea.write_text("\n".join(ln.replace("00001_lr.dat", "00002_lr.dat") for ln in lines))
    elif damage == "hundredfold":  # a consistent header and data file, 100x the 10 s norm
        np.tile(np.fromfile(dat, "<i2").reshape(-1, 12), (100, 1)).tofile(dat)
        first = lines[0].split()
        first[3] = "100000"
        hea.write_text("\n".join([" ".join(first), *lines[1:]]) + "\n")
    reader = PTBXL(root)
    with pytest.raises(RecordError, match="00001_lr") as err:
        reader.read(reader.metadata().iloc[0])
    assert message in str(err.value)


@needs_samples(PTBXL_SAMPLES)
def test_an_ecg_id_listed_twice_is_an_error_naming_the_table(tmp_path) -> None:
    root, _ = _one_record_copy(tmp_path)
    table = root / "ptbxl_database.csv"
    text = table.read_text().splitlines()
    table.write_text("\n".join([*text[:3], text[1], *text[3:]]) + "\n")  # ecg_id 1 again
    with pytest.raises(
        RecordError, match=r"ptbxl_database\.csv: ecg_id listed more than once: \[1\]"
    ):
        PTBXL(root).metadata()


@needs_samples(PTBXL_SAMPLES)
def test_flat_lead_and_bad_gain_under_on_error(tmp_path) -> None:
    """A constant lead is kept unless data.reject_flat_leads; then it, like any damaged record,
    stops the build naming the file, or is skipped and counted with on_error=skip."""
    from ecgx.data.cache import build_or_open

    root, record = _one_record_copy(tmp_path)
    shutil_copy_record(root, "00002_lr")
    dat = record.with_suffix(".dat")
    raw = np.fromfile(dat, "<i2").reshape(-1, 12)
    raw[:, 5] = 37  # aVF disconnected: one constant value
    raw.tofile(dat)
    reader = PTBXL(root)
    meta = reader.metadata()
    meta = meta[meta["record_id"].isin(["1", "2"])].reset_index(drop=True)

    def build(key: int, **kw):
        return build_or_open(tmp_path / "cache", {"k": key}, meta, reader.read,
                             lambda x, fs: (x, fs), **kw)  # fmt: skip

    assert len(build(1)) == 2
    with pytest.raises(RecordError, match=r"record 1: constant \(flat\) leads \['aVF'\]"):
        build(2, reject_flat_leads=True)
    skipped = build(3, reject_flat_leads=True, on_error="skip")
    assert len(skipped) == 1 and [s["record_id"] for s in skipped.skipped] == ["1"]
    hea = record.with_suffix(".hea")  # now a gain of 0 in another lead: skipped and counted
    hea.write_text(hea.read_text().replace("1000.0(0)/mV 16 0 -55", "0(0)/mV 16 0 -55"))
    skipped = build(4, on_error="skip")
    assert [s["record_id"] for s in skipped.skipped] == ["1"]
    assert "lead II has ADC gain 0" in skipped.skipped[0]["error"]


def shutil_copy_record(root, name: str) -> None:
    import shutil

    for ext in ("hea", "dat"):
        target = root / "records100/00000" / f"{name}.{ext}"
        shutil.copy(PTBXL_SAMPLES / f"records100/00000/{name}.{ext}", target)
        target.chmod(0o644)
