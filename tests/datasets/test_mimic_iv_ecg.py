"""dataset=mimic_iv_ecg on the real headers and tables in ../shared/ecg-samples/mimic_iv_ecg,
with .dat files written here to fit each header, so every sample's value is known."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from hydra.utils import instantiate

from ecgx.datasets.mimic_iv_ecg import MIMICIVECG
from ecgx.errors import ConfigValueError, MissingPathError
from ecgx.formats.record import LEADS, RecordError
from tests.conftest import ROOT, SAMPLES, needs_samples

MIMIC = SAMPLES / "mimic_iv_ecg"
STATEMENTS = yaml.safe_load((ROOT / "conf/dataset/mimic_iv_ecg.yaml").read_text())["statements"]
pytestmark = needs_samples(MIMIC)


def _write_dat(hea: Path, digital: np.ndarray | None = None) -> np.ndarray:
    """A format-16 .dat fitting ``hea`` (every lead's gain 200/mV, baseline 0): ``digital``
    (samples, leads) or a ramp distinct per lead; returns the signal in mV, file lead order."""
    first, *lines = [ln for ln in hea.read_text().splitlines() if ln and ln[0] != "#"]
    n_sig, n = int(first.split()[1]), int(first.split()[3])
    assert all(ln.split()[2] == "200.0(0)/mV" for ln in lines)  # what the real headers say
    if digital is None:
        digital = (np.arange(n)[:, None] % 50 + 100 * np.arange(n_sig)[None, :]).astype("<i2")
    digital.astype("<i2").tofile(hea.with_suffix(".dat"))
    return (digital.T / 200.0).astype(np.float32)


def _nested(tmp_path: Path) -> Path:
    root = tmp_path / "mimic"
    shutil.copytree(MIMIC, root)
    return root


def test_nested_layout_reads_record_list_and_measurements(tmp_path: Path) -> None:
    root = _nested(tmp_path)
    hea = root / "files/p1000/p10000032/s40689238/40689238.hea"
    expected = _write_dat(hea)
    reader = MIMICIVECG(root, statements=STATEMENTS)
    reader.ensure()
    meta = reader.metadata()
    row = meta.iloc[0]
    assert (row["record_id"], row["patient_id"]) == ("40689238", "10000032")
    # the real row: qrs 170-258 ms, P 40 ms, T end 518 ms
    assert (row["qrs_duration"], row["pr_interval"], row["qt_interval"]) == (88, 130, 348)
    assert "Sinus rhythm" in row["labels"] and "Borderline ECG" in row["labels"]
    record = reader.read(row.to_dict())
    assert record.fs == 500 and record.signal.shape == (12, 5000) and record.leads == LEADS
    # file order I, II, III, aVR, aVF, aVL, V1-V6: aVF and aVL swap places
    file_order = ["I", "II", "III", "aVR", "aVF", "aVL", *LEADS[6:]]
    for k, name in enumerate(file_order):
        np.testing.assert_array_equal(record.signal[LEADS.index(name)], expected[k])
    y, classes, keep = reader.labels(meta)
    assert classes == ["SR", "AF", "IAVB", "LBBB", "RBBB", "LVH"]
    assert y[0].tolist() == [1, 0, 0, 0, 0, 0] and keep.tolist() == [True]
    y, names, keep = MIMICIVECG(root, task="intervals").labels(meta)
    assert names == ["qrs_duration", "pr_interval", "qt_interval"] and y[0].tolist() == [
        88,
        130,
        348,
    ]
    y, names, keep = MIMICIVECG(root, task="none").labels(meta)
    assert y.shape == (1, 0) and keep.all()


def test_lead_mapping_by_name_avl_only(tmp_path: Path) -> None:
    root = _nested(tmp_path)
    hea = root / "files/p1000/p10000032/s49036311/49036311.hea"
    digital = np.zeros((5000, 12), dtype="<i2")
    digital[:, 5] = 200 * np.sin(np.arange(5000) / 40)  # header position 5 is aVL
    _write_dat(hea, digital)
    (root / "record_list.csv").write_text(
        "subject_id,study_id,file_name,ecg_time,path\n"
        "10000032,49036311,49036311,2180-08-06 09:07:00,files/p1000/p10000032/s49036311/49036311\n"
    )
    reader = MIMICIVECG(root, statements=STATEMENTS)
    signal = reader.read(reader.metadata().iloc[0].to_dict()).signal
    live = [LEADS[i] for i in np.flatnonzero(np.abs(signal).max(axis=1) > 0)]
    assert live == ["aVL"]
    # no machine_measurements row for this study: no statements, not a crash
    assert reader.metadata().iloc[0]["labels"] == {}


def test_demo_layout_and_listing_without_record_list(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    root.mkdir()
    shutil.copy(MIMIC / "demo_record_list_head.csv", root / "record_list.csv")
    real = MIMIC / "files/p1000/p10000032/s40689238/40689238.hea"
    head = (MIMIC / "demo_record_list_head.csv").read_text().splitlines()[1].split(",")
    subject, study, rel = head[0], head[1], head[4]
    hea = root / f"{rel}.hea"
    hea.parent.mkdir(parents=True)
    hea.write_text(real.read_text().replace("40689238", study))
    expected = _write_dat(hea)
    reader = MIMICIVECG(root, task="none")
    reader.ensure()  # task=none needs no machine_measurements.csv
    meta = reader.metadata()
    assert len(meta) == 6 and meta.iloc[0]["path"] == f"files/p{subject}/s{study}/{study}"
    np.testing.assert_array_equal(reader.read(meta.iloc[0].to_dict()).signal[0], expected[0])
    # the other demo rows have no files: a missing record names its file
    with pytest.raises(RecordError, match=f"{meta.iloc[1]['record_id']}.*missing"):
        reader.read(meta.iloc[1].to_dict())
    (root / "record_list.csv").unlink()
    listed = MIMICIVECG(root, task="none").metadata()
    assert listed[["record_id", "patient_id"]].values.tolist() == [[study, subject]]


def test_bad_records_error_or_counted_skip(tmp_path: Path, compose_train) -> None:
    root = _nested(tmp_path)
    base = root / "files/p1000/p10000032"
    (root / "record_list.csv").write_text(
        "subject_id,study_id,file_name,ecg_time,path\n"
        "10000032,40689238,40689238,,files/p1000/p10000032/s40689238/40689238\n"
        "10000032,49036311,49036311,,files/p1000/p10000032/s49036311/49036311\n"
    )
    digital = np.ones((5000, 12), dtype="<i2")
    digital[100, 3] = -32768  # a missing sample: NaN in wfdb, never a NaN tensor here
    _write_dat(base / "s40689238/40689238.hea", digital)  # 49036311 has no .dat
    reader = MIMICIVECG(root, task="none")
    rows = reader.metadata().to_dict("records")
    with pytest.raises(RecordError, match="40689238.hea: 1 NaN/Inf samples"):
        reader.read(rows[0])
    with pytest.raises(RecordError, match="data file missing .*49036311.dat"):
        reader.read(rows[1])
    cfg = compose_train("dataset=mimic_iv_ecg", f"dataset.root={root}", "dataset.task=none",
                        "data.on_error=skip")  # fmt: skip
    dm = instantiate(cfg.data)
    with pytest.raises(RecordError, match="no readable records"):
        dm.prepare_data()  # both bad: nothing to train on is an error, with the skips counted
    _write_dat(base / "s49036311/49036311.hea")
    dm = instantiate(cfg.data)
    dm.prepare_data()
    cache = dm.cache
    assert len(cache) == 1 and list(cache.meta["record_id"]) == ["49036311"]
    assert [s["record_id"] for s in cache.skipped] == ["40689238"]
    assert "NaN" in cache.skipped[0]["error"]
    assert np.isfinite(cache[0]).all()
    # an unknown lead name: an error naming the file and the name
    hea = base / "s49036311/49036311.hea"
    hea.write_text(hea.read_text().replace(" V6", " V7x"))
    with pytest.raises(RecordError, match="49036311.hea: non-standard lead name 'V7x'"):
        reader.read(rows[1])


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigValueError, match="dataset.task"):
        MIMICIVECG(tmp_path, task="diagnoses")
    with pytest.raises(ConfigValueError, match="dataset.intervals"):
        MIMICIVECG(tmp_path, task="intervals", intervals=["qtc"])
    with pytest.raises(ConfigValueError, match="dataset.statements.AF: needs a non-empty"):
        MIMICIVECG(tmp_path, statements={"AF": {"contains": ["x"]}})
    with pytest.raises(MissingPathError, match="dataset.statements"):
        MIMICIVECG(tmp_path, statements=str(tmp_path / "map.yaml"))
    (tmp_path / "files").mkdir()
    with pytest.raises(MissingPathError, match="machine_measurements.csv is missing"):
        MIMICIVECG(tmp_path, statements=STATEMENTS).ensure()


def test_statement_matching() -> None:
    reader = MIMICIVECG(".", statements=STATEMENTS)
    cases = {
        "Sinus rhythm with 1st degree A-V block": {"SR", "IAVB"},
        "Atrial fibrillation with rapid ventricular response": {"AF"},
        "Incomplete right bundle branch block": set(),
        "RBBB with left anterior fascicular block": {"RBBB"},
        "Left  bundle branch block": {"LBBB"},
        "Possible left ventricular hypertrophy": set(),
        "Left ventricular hypertrophy with repolarization abnormality": {"LVH"},
        "Atrial fibrillation no longer present": set(),
    }
    for text, classes in cases.items():
        assert reader.classify(text) == classes, text


def test_age_and_sex_from_mimic_iv_patients(tmp_path: Path, caplog) -> None:
    """dataset.patients: age at the ECG from anchor_age/anchor_year and the ecg_time of the real
    demo record list; sex from gender; a subject missing from the table is NaN and logged."""
    import gzip

    from ecgx.data.extras import demographics
    from ecgx.evaluation.subgroups import group_labels

    root = tmp_path / "demo"
    root.mkdir()
    shutil.copy(MIMIC / "demo_record_list_head.csv", root / "record_list.csv")
    # subjects 10000032 (3 ECGs in 2180), 10001217 (2 in 2157); 10001725 is left out
    hosp = root / "hosp"
    hosp.mkdir()
    text = ("subject_id,gender,anchor_age,anchor_year,anchor_year_group,dod\n"
            "10000032,F,52,2180,2014 - 2016,2180-09-09\n"
            "10001217,M,55,2155,2011 - 2013,\n")  # fmt: skip
    with gzip.open(hosp / "patients.csv.gz", "wt") as f:
        f.write(text)
    reader = MIMICIVECG(root, task="none", patients="hosp/patients.csv.gz")
    reader.ensure()
    with caplog.at_level("WARNING"):
        meta = reader.metadata()
    assert meta["age"].tolist()[:5] == [52, 52, 52, 57, 57]  # 55 + (2157 - 2155)
    assert meta["sex"].tolist()[:5] == [1, 1, 1, 0, 0]
    assert np.isnan(meta["age"].iloc[5]) and np.isnan(meta["sex"].iloc[5])
    assert "1 of 6 records (1 subjects, first 10001725) have no row" in caplog.text
    # what subgroups=default and the SE-ResNet's demographics read from these columns
    assert group_labels(meta, "sex", [0, 40, 60, 80, 150]).tolist()[3:] == [
        "male", "male", "unknown"]  # fmt: skip
    assert group_labels(meta, "age", [0, 40, 60, 80, 150]).tolist()[:2] == ["[40, 60)"] * 2
    np.testing.assert_allclose(demographics(meta["age"], meta["sex"], 3)[[0, 5]],
                               [[0.52, 1, 0], [0, 0, 0]])  # fmt: skip
    # the cache key follows the table: a changed patients file rebuilds the cache
    assert "patients" in reader.signal_spec()
    # absolute path too; without the key, NaN as before
    assert MIMICIVECG(root, task="none", patients=hosp / "patients.csv.gz").metadata()[
        "sex"].iloc[0] == 1  # fmt: skip
    assert MIMICIVECG(root, task="none").metadata()["age"].isna().all()
    # bad input names the file and what is wrong
    with pytest.raises(MissingPathError, match="dataset.patients=.*nope.csv: no such file"):
        MIMICIVECG(root, task="none", patients="nope.csv").ensure()
    (hosp / "p.csv").write_text("subject_id,gender,anchor_age\n10000032,F,52\n")
    with pytest.raises(RecordError, match=r"p.csv: missing columns \['anchor_year'\]"):
        MIMICIVECG(root, task="none", patients="hosp/p.csv").metadata()
    (hosp / "p.csv").write_text(text.replace(",F,", ",X,"))
    with pytest.raises(RecordError, match="p.csv: gender 'X': expected M or F"):
        MIMICIVECG(root, task="none", patients="hosp/p.csv").metadata()
