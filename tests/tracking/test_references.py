"""``ecgx compare … references=<CODE test folder>`` on the real annotation tables in
../shared/ecg-samples/code_test (gold standard, the paper's network, cardiologist 1), beside runs
fabricated in a temporary MLflow store with the per-record predictions training and ``ecgx eval``
log (no training here). The anchor: the CODE paper's published Table 2, recomputed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from torchmetrics.functional.classification import binary_cohen_kappa

from ecgx.commands.compare import main
from ecgx.datasets.code15 import CLASSES
from ecgx.evaluation.metrics import decision_metrics
from ecgx.tracking.references import read_annotators
from tests.conftest import SAMPLES, needs_samples

CODE_TEST = SAMPLES / "code_test"
pytestmark = needs_samples(CODE_TEST)

# Ribeiro et al., Nat Commun 11:1760 (2020), Table 2 (= outputs/tables/scores.csv of
# antonior92/automatic-ecg-diagnosis): precision, recall, specificity, F1 per class of the DNN,
# 4th-year cardiology residents, 3rd-year emergency residents and 5th-year medical students.
PAPER_ORDER = ("1dAVb", "RBBB", "LBBB", "SB", "AF", "ST")
TABLE2 = {
    "dnn": {
        "precision": (0.867, 0.895, 1.000, 0.833, 1.000, 0.947),
        "recall": (0.929, 1.000, 1.000, 0.938, 0.769, 0.973),
        "specificity": (0.995, 0.995, 1.000, 0.996, 1.000, 0.997),
        "f1": (0.897, 0.944, 1.000, 0.882, 0.870, 0.960),
    },
    "cardiology_residents": {
        "precision": (0.905, 0.868, 1.000, 0.833, 0.769, 0.968),
        "recall": (0.679, 0.971, 0.900, 0.938, 0.769, 0.811),
        "specificity": (0.997, 0.994, 1.000, 0.996, 0.996, 0.999),
        "f1": (0.776, 0.917, 0.947, 0.882, 0.769, 0.882),
    },
    "emergency_residents": {
        "precision": (0.639, 0.963, 0.963, 0.824, 0.800, 0.946),
        "recall": (0.821, 0.765, 0.867, 0.875, 0.615, 0.946),
        "specificity": (0.984, 0.999, 0.999, 0.996, 0.998, 0.997),
        "f1": (0.719, 0.852, 0.912, 0.848, 0.696, 0.946),
    },
    "medical_students": {
        "precision": (0.605, 0.914, 0.931, 0.750, 0.571, 0.912),
        "recall": (0.929, 0.941, 0.900, 0.750, 0.923, 0.838),
        "specificity": (0.979, 0.996, 0.997, 0.995, 0.989, 0.996),
        "f1": (0.732, 0.928, 0.915, 0.750, 0.706, 0.873),
    },
}
# The cardiologists built the gold standard, so the paper scores them by agreement instead:
# Cohen's kappa of the DNN against cardiologist 1 (Supplementary Table 2b; kappas.csv there).
KAPPA_DNN_CARDIOLOGIST1 = (0.758, 0.928, 0.964, 0.770, 0.696, 0.847)


def test_paper_table2_recomputed_from_the_annotation_tables() -> None:
    gold, annotators = read_annotators(CODE_TEST)
    assert len(gold) == 827 and {"dnn", "cardiologist1"} <= set(annotators)
    checked = 0
    for name, published in TABLE2.items():
        if name not in annotators:  # the samples hold dnn.csv; the full data/ holds them all
            continue
        got = decision_metrics(gold.to_numpy(), annotators[name].to_numpy(), CLASSES)
        for stat, values in published.items():
            for cls, value in zip(PAPER_ORDER, values):
                assert round(got[f"{stat}_{cls}"], 3) == value, (name, stat, cls)
                checked += 1
    assert checked >= 24
    dnn, cardiologist = annotators["dnn"], annotators["cardiologist1"]
    for cls, value in zip(PAPER_ORDER, KAPPA_DNN_CARDIOLOGIST1):
        kappa = binary_cohen_kappa(torch.tensor(dnn[cls].to_numpy()),
                                   torch.tensor(cardiologist[cls].to_numpy()))  # fmt: skip
        assert round(float(kappa), 3) == value, cls


def _f1(truth: np.ndarray, decided: np.ndarray) -> np.ndarray:
    """F1 per class, counted by hand (independent of the code under test)."""
    tp = (truth & decided).sum(0)
    return 2 * tp / (truth.sum(0) + decided.sum(0))


def _log_run(client: MlflowClient, tmp: Path, exp: str, model: str, ids: np.ndarray,
             probs: np.ndarray, truth: np.ndarray, split: str = "test",
             thresholds: np.ndarray | None = None) -> str:  # fmt: skip
    found = client.get_experiment_by_name(exp)
    exp_id = found.experiment_id if found else client.create_experiment(exp)
    config = [Param("choice/model", model), Param("data/classes", ",".join(CLASSES))]
    tags = [RunTag("ecgx.overrides", json.dumps([f"model={model}"]))]
    if split == "all":  # as `ecgx eval`: a child run without the training run's config
        found = client.get_experiment_by_name("trained")
        trained = found.experiment_id if found else client.create_experiment("trained")
        parent = client.create_run(trained, run_name=model).info.run_id
        client.log_batch(parent, params=config, tags=tags)
        client.set_terminated(parent, "FINISHED")
        config, tags = [], [RunTag("mlflow.parentRunId", parent)]
    run_id = client.create_run(
        exp_id, run_name=f"{model}-{split}", tags={t.key: t.value for t in tags}
    ).info.run_id
    table = pd.DataFrame({"record_id": ids})
    for i, c in enumerate(CLASSES):
        table[f"prob_{c}"], table[f"true_{c}"] = probs[:, i], truth[:, i]
    folder = tmp / run_id
    folder.mkdir()
    path = folder / f"{split}_predictions.csv"
    table.sample(frac=1.0, random_state=0).to_csv(path, index=False)  # order must not matter
    client.log_artifact(run_id, str(path), "predictions")
    metrics = [Metric(f"{split}/macro_auroc", 0.9, 0, 0)]
    if thresholds is not None:
        metrics += [Metric(f"{split}/threshold_{c}", float(t), 0, 0)
                    for c, t in zip(CLASSES, thresholds)]  # fmt: skip
    client.log_batch(run_id, metrics=metrics, params=config)
    client.set_terminated(run_id, "FINISHED")
    return run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("refs")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = MlflowClient(uri)
    gold, annotators = read_annotators(CODE_TEST)
    truth = gold.to_numpy()
    ids = np.array([str(i) for i in range(len(gold))])
    rng = np.random.default_rng(0)
    probs = 1 / (1 + np.exp(-(4 * truth - 2 + rng.normal(size=truth.shape))))
    thresholds = np.array([0.6, 0.5, 0.4, 0.55, 0.45, 0.7])
    # an `ecgx eval … dataset=code_test subset=all` child run, thresholds from its training run
    _log_run(client, tmp, "code", "seresnet18", ids, probs, truth, "all", thresholds)
    # a run whose outputs are the paper network's decisions, logging no thresholds
    _log_run(client, tmp, "code", "dnn_copy", ids, annotators["dnn"].to_numpy(float), truth)
    # trained on dataset=code_test: its test split is 150 of the exams
    part = np.sort(rng.choice(len(gold), 150, replace=False))
    _log_run(client, tmp, "split", "seresnet18", ids[part], probs[part], truth[part], "test",
             thresholds)  # fmt: skip
    _log_run(client, tmp, "bad_ids", "x", np.array([f"r{i}" for i in ids]), probs, truth)
    flipped = truth.copy()
    flipped[7, 0] = 1 - flipped[7, 0]
    _log_run(client, tmp, "bad_labels", "x", ids, probs, flipped)
    client.create_experiment("empty")
    return {"uri": uri, "gold": gold, "annotators": annotators, "probs": probs,
            "thresholds": thresholds, "part": part}  # fmt: skip


def _csv(capsys: pytest.CaptureFixture, *argv: str) -> tuple[pd.DataFrame, str]:
    main([*argv, "format=csv"])
    out = capsys.readouterr()
    return pd.read_csv(pd.io.common.StringIO(out.out)).set_index("model"), out.err


def test_references_beside_runs_with_paired_statistics(store: dict, capsys) -> None:
    uri, gold, annotators = store["uri"], store["gold"], store["annotators"]
    truth = gold.to_numpy()
    table, err = _csv(capsys, f"references={CODE_TEST}", f"tracking_uri={uri}", "experiment=code",
                      "against=dnn", "resamples=50")  # fmt: skip
    assert set(table.index) == {"seresnet18", "dnn_copy", "dnn", "cardiologist1"}
    # the paper's network on all 827 exams: its published F1 per class
    for cls, value in zip(PAPER_ORDER, TABLE2["dnn"]["f1"]):
        assert round(table.loc["dnn", f"code_test/f1_{cls} mean"], 3) == value
    # the other rows, counted independently: cardiologist 1 as given, the ecgx run at its
    # logged thresholds (p >= t), the run without thresholds at 0.5
    expected = {
        "cardiologist1": _f1(truth, annotators["cardiologist1"].to_numpy()),
        "seresnet18": _f1(truth, (store["probs"] >= store["thresholds"]).astype(int)),
        "dnn_copy": _f1(truth, annotators["dnn"].to_numpy()),
    }
    for row, f1 in expected.items():
        got = [table.loc[row, f"code_test/f1_{c} mean"] for c in CLASSES]
        np.testing.assert_allclose(got, f1, atol=1e-12, err_msg=row)
        assert table.loc[row, "code_test/macro_f1 mean"] == pytest.approx(f1.mean())
    assert "dnn_copy-test (" in err and "logged no test/threshold_<class>" in err
    # rows best first by macro F1; Δ against the paper's network, paired on the same exams
    assert list(table["code_test/macro_f1 mean"]) == sorted(table["code_test/macro_f1 mean"],
                                                             reverse=True)  # fmt: skip
    assert table.loc["dnn_copy", "Δ code_test/macro_f1"] == 0
    assert table.loc["dnn_copy", "Δ low"] == table.loc["dnn_copy", "Δ high"] == 0
    delta = table.loc["seresnet18", "Δ code_test/macro_f1"]
    assert delta == pytest.approx(expected["seresnet18"].mean() - expected["dnn_copy"].mean())
    assert table.loc["seresnet18", "Δ low"] <= delta <= table.loc["seresnet18", "Δ high"]
    assert np.isnan(table.loc["dnn", "p bootstrap"])  # the reference itself


def test_references_on_a_test_split_and_without_runs(store: dict, capsys) -> None:
    uri, gold, annotators, part = store["uri"], store["gold"], store["annotators"], store["part"]
    table, _ = _csv(capsys, f"references={CODE_TEST}", f"tracking_uri={uri}", "experiment=split",
                    "metrics=code_test/f1_AF,code_test/specificity_ST", "against=dnn",
                    "against_metric=code_test/f1_AF", "resamples=20")  # fmt: skip
    # the annotators are scored on the run's 150 exams only
    dnn, af = annotators["dnn"].to_numpy()[part], CLASSES.index("AF")
    dnn_af = _f1(gold.to_numpy()[part], dnn)[af]
    assert table.loc["dnn", "code_test/f1_AF mean"] == pytest.approx(dnn_af)
    run = _f1(gold.to_numpy()[part], (store["probs"][part] >= store["thresholds"]).astype(int))
    assert table.loc["seresnet18", "Δ code_test/f1_AF"] == pytest.approx(run[af] - dnn_af)
    st = CLASSES.index("ST")
    negatives = gold.to_numpy()[part][:, st] == 0
    assert table.loc["dnn", "code_test/specificity_ST mean"] == pytest.approx(
        (dnn[negatives, st] == 0).mean()
    )
    # no runs: the paper's table itself, on all 827 exams
    table, _ = _csv(capsys, f"references={CODE_TEST}", f"tracking_uri={uri}", "experiment=empty")
    assert set(table.index) == {"dnn", "cardiologist1"}
    assert [round(table.loc["dnn", f"code_test/f1_{c} mean"], 3) for c in PAPER_ORDER] == list(
        TABLE2["dnn"]["f1"]
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["experiment=bad_ids"], "record id 'r0', no row of gold_standard.csv .*dataset=code_test"),
        (["experiment=bad_labels"], "labels record 7 otherwise than gold_standard.csv"),
        (["experiment=code", "against=nobody"], "against=nobody: no group"),
    ],
)
def test_references_refuse_what_is_not_the_code_test_set(store: dict, argv, message) -> None:
    with pytest.raises(SystemExit, match=message):
        main([f"references={CODE_TEST}", f"tracking_uri={store['uri']}", *argv])


def test_reference_folder_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=re.escape(f"references={tmp_path}: no gold_standard.csv")):
        read_annotators(tmp_path)
    gold = pd.read_csv(CODE_TEST / "gold_standard.csv")
    gold.to_csv(tmp_path / "gold_standard.csv", index=False)
    with pytest.raises(SystemExit, match="none of"):
        read_annotators(tmp_path)
    gold.iloc[:-1].to_csv(tmp_path / "dnn.csv", index=False)
    with pytest.raises(SystemExit, match="dnn.csv: 826 rows, gold_standard.csv 827"):
        read_annotators(tmp_path)
    gold.assign(AF=gold["AF"] * 0.7).to_csv(tmp_path / "dnn.csv", index=False)
    with pytest.raises(SystemExit, match="dnn.csv: values other than 0 and 1"):
        read_annotators(tmp_path)


@pytest.mark.slow
def test_trained_and_evaluated_runs_beside_the_references(
    store: dict, tmp_path: Path, compose_train, capsys
) -> None:
    """The real path: train on dataset=code_test (tracings written here, the real tables), then
    `ecgx eval … dataset=code_test subset=all`; compare places both beside the annotators, each
    run decided at the thresholds it logged."""
    import shutil

    import h5py

    from ecgx.commands.evaluate import evaluate_run
    from ecgx.commands.train import train

    root = tmp_path / "code-test"
    root.mkdir()
    for name in ("gold_standard", "dnn", "cardiologist1", "attributes"):
        shutil.copy(CODE_TEST / f"{name}.csv", root)
    rng = np.random.default_rng(0)
    with h5py.File(root / "ecg_tracings.hdf5", "w") as f:
        f["tracings"] = rng.normal(size=(827, 800, 12)).astype("f4")
    # the fabricated runs' store: a new MLflow database takes ~7 s of migrations here
    data = ["dataset=code_test", f"dataset.root={root}", f"tracking_uri={store['uri']}"]
    cfg = compose_train("debug=smoke", "model=compact_resnet", "experiment_name=trained_code",
                        "transform=default", *data)  # fmt: skip
    train(cfg)
    client = MlflowClient(cfg.tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("trained_code").experiment_id])
    evaluate_run(compose_train(f"run_id={run.info.run_id}", *data, "subset=all", config="eval"))
    capsys.readouterr()  # what training and eval printed
    gold, annotators = read_annotators(CODE_TEST)
    uri, run_id = cfg.tracking_uri, run.info.run_id
    # the training run (its test split) and its eval child run (all 827 exams)
    child = f"tags.mlflow.parentRunId = '{run_id}'"
    for where, split, search in ((f"filter=attributes.run_id = '{run_id}'", "test",
                                  f"attributes.run_id = '{run_id}'"),
                                 (f"filter={child}", "all", child)):  # fmt: skip
        table, err = _csv(capsys, f"references={root}", f"tracking_uri={uri}", where)
        assert set(table.index) == {"compact_resnet", "dnn", "cardiologist1"}, err
        (logged,) = client.search_runs([run.info.experiment_id], search)
        path = client.download_artifacts(logged.info.run_id,
                                         f"predictions/{split}_predictions.csv", str(tmp_path))  # fmt: skip
        pred = pd.read_csv(path, dtype={"record_id": str})
        rows = pred["record_id"].astype(int).to_numpy()
        assert len(rows) == 827 if split == "all" else 0 < len(rows) < 827
        t = np.array([logged.data.metrics[f"{split}/threshold_{c}"] for c in CLASSES])
        truth = gold.to_numpy()[rows]
        ours = _f1(truth, (pred[[f"prob_{c}" for c in CLASSES]].to_numpy() >= t).astype(int))
        dnn = _f1(truth, annotators["dnn"].to_numpy()[rows])
        got = table.loc[["compact_resnet", "dnn"], [f"code_test/f1_{c} mean" for c in CLASSES]]
        np.testing.assert_allclose(got.to_numpy(), np.nan_to_num([ours, dnn]), atol=1e-12)
