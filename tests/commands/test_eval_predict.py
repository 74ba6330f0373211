"""``ecgx eval`` and ``ecgx predict`` on smoke runs of the synthetic set (and real samples)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import wfdb
from mlflow.tracking import MlflowClient

from ecgx.commands.evaluate import evaluate_run
from ecgx.commands.predict import find_records, predict_run, read_file
from ecgx.commands.train import train
from ecgx.data.datamodule import ECGDataset
from ecgx.errors import ConfigValueError, MissingPathError
from ecgx.formats.record import LEADS, RecordError
from ecgx.tracking.runs import load_checkpoint, load_run, rebuild
from tests.conftest import SAMPLES

RESAMPLE_100 = "transform.offline=[{_target_:ecgx.transforms.signal.Resample,fs:100}]"


def _train(compose_train, experiment: str, *overrides: str) -> tuple[MlflowClient, str]:
    cfg = compose_train("debug=smoke", f"experiment_name={experiment}", *overrides)
    train(cfg)
    client = MlflowClient(cfg.tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return client, run.info.run_id


def _children(client: MlflowClient, run_id: str) -> dict[str, object]:
    experiment = client.get_run(run_id).info.experiment_id
    runs = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{run_id}'")
    return {r.info.run_name: r for r in runs}


def _copy_record(src: Path, folder: Path) -> None:
    for suffix in (".hea", ".dat", ".mat"):
        if src.with_suffix(suffix).is_file():
            shutil.copy(src.with_suffix(suffix), folder)


def test_predict_checks_its_input_before_fetching_the_run(tmp_path: Path, monkeypatch) -> None:
    from omegaconf import OmegaConf

    from ecgx.commands import predict

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("the run was fetched before the input was checked")

    monkeypatch.setattr(predict, "load_run", never)
    (tmp_path / "notes.txt").write_text("")
    cfg = OmegaConf.create({"run_id": "0" * 32, "input": str(tmp_path / "notes.txt")})
    with pytest.raises(RecordError, match=r"notes.txt: not a supported record file; ecgx "
                       r"reads WFDB \(.hea"):  # fmt: skip
        predict.predict_run(cfg)
    (tmp_path / "empty").mkdir()
    cfg.input = str(tmp_path / "empty")
    with pytest.raises(MissingPathError, match="no record files in it; ecgx reads WFDB"):
        predict.predict_run(cfg)


def test_find_records_and_unsupported(tmp_path: Path) -> None:
    (tmp_path / "a.hea").write_text("x")
    (tmp_path / "a.mat").write_bytes(b"")  # the header's signal file, not a record of its own
    (tmp_path / "b.mat").write_bytes(b"")
    (tmp_path / "REFERENCE.csv").write_text("Recording,First_label\n")
    (tmp_path / "notes.txt").write_text("")
    assert [p.name for p in find_records(tmp_path)] == ["a.hea", "b.mat"]
    with pytest.raises(MissingPathError, match="no such file"):
        find_records(tmp_path / "absent")
    with pytest.raises(RecordError, match="notes.txt: not a supported record file; .* WFDB"):
        read_file(tmp_path / "notes.txt")
    np.save(tmp_path / "x.npy", np.zeros((12, 10), np.float32))
    with pytest.raises(RecordError, match=r"x.npy: a .npy file carries no sampling rate"):
        read_file(tmp_path / "x.npy")
    np.save(tmp_path / "y.npy", np.zeros((10, 12), np.float32))
    with pytest.raises(RecordError, match=r"y.npy: expected \(12 leads, samples\)"):
        read_file(tmp_path / "y.npy", fs=100)


@pytest.mark.slow
def test_eval_reproduces_the_test_metrics_in_a_child_run(compose_train, tmp_path: Path) -> None:
    client, run_id = _train(compose_train, "eval-test")
    trained = client.get_run(run_id).data.metrics

    result = evaluate_run(compose_train(f"run_id={run_id}", config="eval"))
    # The smoke run tests at most 2 batches of 32: all of this set's test split.
    assert 0 < len(result.predictions) <= 64
    assert result.thresholds == "val"
    for key in ("test/macro_auroc", "test/loss", "test/macro_f1", "test/threshold_NORM"):
        assert result.metrics[key] == pytest.approx(trained[key], abs=1e-6), key
    children = _children(client, run_id)
    child = children["eval-test"]
    assert child.data.tags["mlflow.parentRunId"] == run_id
    assert child.data.metrics["test/macro_auroc"] == pytest.approx(trained["test/macro_auroc"])
    logged = {a.path for a in client.list_artifacts(child.info.run_id, "predictions")}
    assert logged == {"predictions/test_predictions.csv"}
    table = pd.read_csv(result.predictions_path)
    assert list(table.columns[:3]) == ["record_id", f"prob_{result.class_names[0]}",
                                       f"true_{result.class_names[0]}"]  # fmt: skip

    # The robustness matrix reads the raw records and runs the run's pipeline itself: its clean
    # row reproduces the run's test AUROC; one child run per row, grouped by compare.
    robust = evaluate_run(compose_train(f"run_id={run_id}", "robustness=leads",
                                        "robustness.bootstrap_resamples=10", config="eval"))  # fmt: skip
    rows = robust.robustness.table.set_index("perturbation")
    assert rows.loc["clean", "perturbed"] == pytest.approx(trained["test/macro_auroc"], abs=1e-5)
    assert rows.loc["limb_from_I_II", "drop_abs"] == pytest.approx(0, abs=0.02)
    assert len(rows) == 9 and (rows["n_records"] == len(result.predictions)).all()
    runs = client.search_runs([client.get_run(run_id).info.experiment_id],
                              "tags.`ecgx.robustness` = 'leads'")  # fmt: skip
    assert {r.data.tags["perturbation"] for r in runs} == set(rows.index)
    assert all(r.data.tags["mlflow.parentRunId"] == run_id for r in runs)
    clean_run = robust.robustness.child_run_ids["clean"]
    assert {a.path for a in client.list_artifacts(clean_run, "robustness")} == {
        "robustness/robustness_leads_test.csv"}  # fmt: skip
    from ecgx.tracking.compare import compare_table

    grouped = compare_table(runs, group_by=["perturbation"], metrics=["test/macro_auroc"])
    assert len(grouped) == 9 and set(grouped["n"]) == {1}

    groups = evaluate_run(compose_train(f"run_id={run_id}", "subgroups=default",
                                        "subgroups.min_size=5", "subgroups.bootstrap_resamples=10",
                                        config="eval"))  # fmt: skip
    table = groups.subgroups.table
    for column in ("sex", "age", "source"):
        assert table.loc[table["column"] == column, "n"].sum() == len(groups.predictions)
    logged = client.get_run(groups.child_run_id).data.metrics
    assert logged["subgroup/test/source/ptbxl/n"] == len(groups.predictions)
    assert "subgroup/test/sex/male/macro_auroc" in logged
    logged = {a.path for a in client.list_artifacts(groups.child_run_id, "evaluation")}
    assert logged == {"evaluation/subgroups_test.csv", "evaluation/subgroup_gaps_test.csv"}

    every = evaluate_run(compose_train(f"run_id={run_id}", "subset=all", config="eval"))
    assert every.thresholds == "run"  # the run's tuned thresholds, not tuned on these records
    assert len(every.predictions) > 200 and "all/macro_auroc" in every.metrics
    child = _children(client, run_id)["eval-all"]
    assert "all/macro_auroc" in child.data.metrics
    logged = {a.path for a in client.list_artifacts(child.info.run_id, "predictions")}
    assert logged == {"predictions/all_predictions.csv"}

    mismatch = compose_train(f"run_id={run_id}", "+dataset.task=subdiagnostic", config="eval")
    with pytest.raises(ConfigValueError, match=r"classes differ(.|\n)*run: +\['CD'"):
        evaluate_run(mismatch)

    # The run did not resample (transform=default): a 500 Hz record is refused, naming both.
    sample = SAMPLES / "cinc2020_cpsc" / "A0001.hea"
    if sample.is_file():
        cfg = compose_train(f"run_id={run_id}", f"input={sample}", config="predict")
        with pytest.raises(RecordError, match=r"A0001.hea: 500 Hz .* trained at 100 Hz"):
            predict_run(cfg)


@pytest.mark.slow
def test_predict_matches_the_datamodule_and_reads_real_formats(
    compose_train, synthetic_root: Path, tmp_path: Path
) -> None:
    client, run_id = _train(compose_train, "predict-test", RESAMPLE_100)

    folder = tmp_path / "records"
    folder.mkdir()
    heads = sorted((synthetic_root / "records100").rglob("*.hea"))[:3]
    for hea in heads:
        _copy_record(hea, folder)
    signal = read_file(heads[0]).signal
    np.save(folder / "as_numpy.npy", signal)  # the first record again, as leads × samples
    out = tmp_path / "preds.csv"
    result = predict_run(compose_train(f"run_id={run_id}", f"input={folder}", "fs=100",
                                       f"output={out}", config="predict"))  # fmt: skip
    table = pd.read_csv(out)
    assert len(table) == 4 and result.path == out
    assert result.threshold_source == "run"  # the smoke run logged test/threshold_<class>
    names = result.table.filter(like="prob_").columns.str.removeprefix("prob_").tolist()
    assert table.filter(like="label_").shape[1] == len(names)

    # The same records through the run's datamodule and model.
    run_cfg, ckpt = load_run(compose_train(f"run_id={run_id}", config="predict"))
    datamodule, net = rebuild(run_cfg, load_checkpoint(ckpt))
    paths = datamodule.cache.meta["path"].tolist()
    rows = np.array(
        [paths.index(str(h.relative_to(synthetic_root).with_suffix(""))) for h in heads]
    )
    data = ECGDataset(datamodule.cache, rows, datamodule.targets, datamodule.transform, False)
    with torch.no_grad():
        batch = torch.stack([data[i]["signal"] for i in range(len(rows))])
        expected = torch.sigmoid(net(batch)).numpy()
    by_id = table.set_index("record_id")
    got = by_id.loc[[h.stem for h in heads], [f"prob_{n}" for n in names]].to_numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(by_id.loc["as_numpy", [f"prob_{n}" for n in names]].to_numpy(
        dtype=float), expected[0], atol=1e-5)  # fmt: skip

    # explainer=<name>: one paper-ECG plot per record, its path in the table.
    cfg = compose_train(f"run_id={run_id}", f"input={folder / heads[0].name}", "explainer=saliency",
                        f"output={tmp_path / 'explained' / 'p.csv'}", config="predict")  # fmt: skip
    explained = predict_run(cfg).table
    plot = Path(explained.loc[0, "explanation"])
    assert plot == tmp_path / "explained" / "explain" / "saliency" / f"record_{heads[0].stem}.png"
    assert plot.stat().st_size > 0

    # An unreadable file: named by default, counted and listed with on_error=skip.
    (folder / "broken.hea").write_text("not a header\n")
    cfg = compose_train(f"run_id={run_id}", f"input={folder}", "fs=100", config="predict")
    with pytest.raises(RecordError, match="broken.hea"):
        predict_run(cfg)
    cfg = compose_train(f"run_id={run_id}", f"input={folder}", "fs=100", "on_error=skip",
                        f"output={tmp_path / 'skip.csv'}", config="predict")  # fmt: skip
    skipped = predict_run(cfg)
    assert len(skipped.table) == 4 and [Path(f).name for f, _ in skipped.skipped] == ["broken.hea"]

    # Real records at 500 Hz in their own formats, resampled to 100 Hz by the run's transform.
    real = [SAMPLES / "cinc2020_cpsc" / "A0001.hea", SAMPLES / "cpsc2018" / "A1980.mat",
            SAMPLES / "ptbxl" / "records500" / "00000" / "00001_hr.hea"]  # fmt: skip
    real += sorted((SAMPLES / "sph").glob("*.h5"))[:1]
    real += sorted((SAMPLES / "chapman_shaoxing").rglob("*.csv"))[:1]
    real = [p for p in real if p.is_file()]
    if len(real) < 2:
        pytest.skip(f"fewer than two real sample records under {SAMPLES}")
    samples = tmp_path / "real"
    samples.mkdir()
    for path in real:
        _copy_record(path, samples) if path.suffix == ".hea" else shutil.copy(path, samples)
    cfg = compose_train(f"run_id={run_id}", f"input={samples}",
                        f"output={tmp_path / 'real.csv'}", config="predict")  # fmt: skip
    found = predict_run(cfg).table
    assert sorted(found["record_id"]) == sorted(p.stem for p in real)
    probs = found.filter(like="prob_").to_numpy()
    assert np.isfinite(probs).all() and ((probs >= 0) & (probs <= 1)).all()

    # The hospital formats, mixed in one folder (the same trained run): every file predicted,
    # its format, rate and leads named; a MUSE recording written out as WFDB predicts the same.
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    formats = {"muse_xml/EGM_muse-sinus.xml": "MUSE XML", "dicom/pydicom_waveform_ecg.dcm": "DICOM",
               "dicom/dcm-waveform_test_ecg.dcm": "DICOM", "hl7_aecg/Example_aECG.xml": "HL7 aECG",
               "scp_ecg/ecgviewer_demo.scp": "SCP-ECG", "edf/contec_0000050.ECG.edf": "EDF"}  # fmt: skip
    for name in formats:
        shutil.copy(SAMPLES / name, mixed)
    muse = read_file(mixed / "EGM_muse-sinus.xml")
    # Twice MUSE's 4.88 µV step per unit: the derived aVR = -(I + II)/2 is a whole number too.
    gain = 2 / 0.00488
    wfdb.wrsamp("muse_as_wfdb", fs=muse.fs, units=["mV"] * 12, sig_name=list(LEADS),
                d_signal=np.round(muse.signal.astype(np.float64) * gain).astype(np.int16).T,
                fmt=["16"] * 12, adc_gain=[gain] * 12, baseline=[0] * 12,
                write_dir=str(mixed))  # fmt: skip
    table = predict_run(compose_train(f"run_id={run_id}", f"input={mixed}",
                                      f"output={tmp_path / 'mixed.csv'}", config="predict")).table  # fmt: skip
    by_name = table.assign(name=table["file"].map(lambda f: Path(f).name)).set_index("name")
    assert sorted(by_name.index) == sorted([Path(n).name for n in formats] + ["muse_as_wfdb.hea"])
    for name, fmt in formats.items():
        assert by_name.loc[Path(name).name, "format"] == fmt, name
    assert by_name.loc["muse_as_wfdb.hea", "format"] == "WFDB"
    assert by_name.loc["dcm-waveform_test_ecg.dcm", "fs"] == 240.0
    assert by_name.loc["ecgviewer_demo.scp", "leads"] == "I II V1 V2 V3 V4 V5 V6"
    assert by_name.loc["ecgviewer_demo.scp", "derived_leads"] == "III aVR aVL aVF"
    probs = [c for c in table.columns if c.startswith("prob_")]
    np.testing.assert_allclose(by_name.loc["muse_as_wfdb.hea", probs].to_numpy(float),
                               by_name.loc["EGM_muse-sinus.xml", probs].to_numpy(float), atol=1e-5)  # fmt: skip
    assert np.isfinite(table[probs].to_numpy(float)).all()
