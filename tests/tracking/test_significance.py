"""``ecgx compare … against=`` and ``cd_by=`` on runs fabricated in a temporary MLflow store, each
with the ``predictions/test_predictions.csv`` that training logs (no training here)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from ecgx.commands.compare import main
from ecgx.evaluation.metrics import ranking_metrics
from ecgx.tracking.compare import compare_table, default_metrics, lower_is_better, search_runs
from ecgx.tracking.significance import against_columns

CLASSES = ["NORM", "MI", "STTC"]
N = 240


def _truth() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    return np.array([f"r{i:04d}" for i in range(N)]), (rng.random((N, 3)) < 0.35).astype(int)


def _probs(strength: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    _, y = _truth()
    return 1 / (1 + np.exp(-(strength * y + rng.normal(size=y.shape))))


def _log_run(client: MlflowClient, tmp: Path, exp: str, model: str, seed: int, probs: np.ndarray,
             ids: np.ndarray | None = None, shuffle: bool = False, dataset: str = "") -> str:  # fmt: skip
    found = client.get_experiment_by_name(exp)
    exp_id = found.experiment_id if found else client.create_experiment(exp)
    run_id = client.create_run(exp_id, run_name=f"{model}-s{seed}").info.run_id
    record_ids, y = _truth()
    ids = record_ids if ids is None else ids
    table = pd.DataFrame({"record_id": ids})
    for i, c in enumerate(CLASSES):
        table[f"prob_{c}"], table[f"true_{c}"] = probs[:, i], y[:, i]
    if shuffle:  # the order a run wrote its records in must not matter
        table = table.sample(frac=1.0, random_state=seed)
    folder = tmp / run_id
    folder.mkdir()
    table.to_csv(folder / "test_predictions.csv", index=False)
    client.log_artifact(run_id, str(folder / "test_predictions.csv"), "predictions")
    overrides = [f"model={model}", f"seed={seed}"] + ([f"dataset={dataset}"] if dataset else [])
    auroc = float(ranking_metrics(y, probs)["macro_auroc"])
    client.log_batch(run_id, metrics=[Metric("test/macro_auroc", auroc, 0, 0)],
                     params=[Param("choice/model", model), Param("seed", str(seed)),
                             Param("data/classes", ",".join(CLASSES))],
                     tags=[RunTag("ecgx.overrides", json.dumps(overrides))])  # fmt: skip
    client.set_terminated(run_id, "FINISHED")
    return run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    tmp = tmp_path_factory.mktemp("sig")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = MlflowClient(uri)
    for seed in (0, 1):
        _log_run(client, tmp, "pairs", "strong", seed, _probs(2.0, 10 + seed))
        _log_run(client, tmp, "pairs", "weak", seed, _probs(0.8, 20 + seed))
        # The weak runs' own predictions, written in another record order.
        _log_run(client, tmp, "pairs", "copy", seed, _probs(0.8, 20 + seed), shuffle=True)
    ids, _ = _truth()
    other = ids.copy()
    other[:5] = [f"x{i}" for i in range(5)]
    _log_run(client, tmp, "unpaired", "strong", 0, _probs(2.0, 10))
    _log_run(client, tmp, "unpaired", "elsewhere", 0, _probs(2.0, 11), ids=other)
    # Three models over four datasets for the critical difference, "c" always best.
    for d, dataset in enumerate(["d1", "d2", "d3", "d4"]):
        for model, strength in (("a", 0.5), ("b", 1.0), ("c", 2.5)):
            _log_run(client, tmp, "cd", model, 0, _probs(strength, 100 * d + int(10 * strength)),
                     dataset=dataset)  # fmt: skip
    return uri


def test_against_a_group_differences_and_p_values(store: str) -> None:
    runs = search_runs(store, ["pairs"])
    table = compare_table(runs, ["model"], ["test/macro_auroc"])
    out = against_columns(table, runs, store, "weak", n_resamples=200).set_index("model")
    _, y = _truth()
    mean = {m: np.mean([ranking_metrics(y, _probs(s, base + k))["macro_auroc"] for k in (0, 1)])
            for m, s, base in (("strong", 2.0, 10), ("weak", 0.8, 20))}  # fmt: skip
    delta = out.loc["strong", "Δ test/macro_auroc"]
    assert delta == pytest.approx(mean["strong"] - mean["weak"], abs=1e-6)
    assert out.loc["strong", "Δ low"] < delta < out.loc["strong", "Δ high"]
    assert out.loc["strong", "p DeLong"] < 1e-6 and out.loc["strong", "p bootstrap"] < 0.01
    # Identical predictions in another record order: nothing changes, p = 1.
    assert out.loc["copy", "Δ test/macro_auroc"] == 0.0
    assert (out.loc["copy", "p DeLong"], out.loc["copy", "p bootstrap"]) == (1.0, 1.0)
    assert out.loc["copy", ["Δ low", "Δ high"]].tolist() == [0.0, 0.0]
    # The reference itself has no test; Holm over the two others is never below the raw p.
    assert np.isnan(out.loc["weak", "p DeLong"]) and np.isnan(out.loc["weak", "p Holm"])
    assert out.loc["strong", "p Holm"] == pytest.approx(2 * out.loc["strong", "p DeLong"])
    assert out.loc["copy", "p Holm"] == 1.0


def test_against_a_run_and_a_per_class_metric(store: str) -> None:
    runs = search_runs(store, ["pairs"])
    table = compare_table(runs, ["model"], ["test/macro_auroc"])
    (ref,) = [r for r in runs if r.info.run_name == "strong-s0"]
    out = against_columns(table, runs, store, ref.info.run_id, "test/auroc_MI", n_resamples=50)
    assert out.attrs["against"].startswith("run strong-s0")
    row = out.set_index("model").loc["weak"]
    _, y = _truth()
    by_hand = np.mean([ranking_metrics(y, _probs(0.8, s))["auroc_per_class"][1] for s in (20, 21)])
    by_hand -= ranking_metrics(y, _probs(2.0, 10))["auroc_per_class"][1]
    assert row["Δ test/auroc_MI"] == pytest.approx(by_hand, abs=1e-6)
    assert row["p DeLong"] < 0.05


def test_runs_on_different_records_are_refused_by_name(store: str) -> None:
    runs = search_runs(store, ["unpaired"])
    table = compare_table(runs, ["model"], ["test/macro_auroc"])
    both = r"(?=.*strong-s0 \()(?=.*elsewhere-s0 \()"  # in whichever order MLflow lists them
    with pytest.raises(SystemExit, match=both + r".*different test records "
                                         r"\(5 only in the first, 5 only in the second\)"):  # fmt: skip
        against_columns(table, runs, store, "strong", n_resamples=10)
    with pytest.raises(SystemExit, match="against=nobody: no group"):
        against_columns(table, runs, store, "nobody")
    with pytest.raises(SystemExit, match="'test/loss' cannot be recomputed"):
        against_columns(table, runs, store, "strong", "test/loss")


def test_cli_against_and_critical_difference(
    store: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    main(["experiment=pairs", "group_by=model", "against=weak", "resamples=50", "format=markdown",
          f"tracking_uri={store}"])  # fmt: skip
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("|")]
    header = lines[0].split(" | ")
    assert "Δ test/macro_auroc vs weak" in header and "p Holm" in header[-1]
    assert "test/macro_auroc 95% CI" in header  # two seeds per group: an interval of the mean

    out = tmp_path / "cd.html"
    main(["experiment=cd", "group_by=model", "cd_by=dataset", "format=html", f"output={out}",
          f"tracking_uri={store}"])  # fmt: skip
    printed = capsys.readouterr().out
    assert re.search(r"1\.00  c\n", printed) and "Nemenyi CD = 1.657" in printed
    assert "Critical difference" in out.read_text()
    with pytest.raises(SystemExit, match="cd_by=nope: no selected run"):
        main(["experiment=cd", "group_by=model", "cd_by=nope", f"tracking_uri={store}"])


def test_calibration_metrics_sort_lower_first_and_temperature_is_no_column() -> None:
    assert all(lower_is_better(m) for m in ("test/ece", "test/mce", "test/brier",
                                            "test/ece_uncalibrated"))  # fmt: skip
    assert not lower_is_better("test/macro_auroc")

    class Run:  # what default_metrics reads of an MLflow run
        class data:  # noqa: N801
            params = {"data/classes": "NORM,MI"}
            metrics = dict.fromkeys(["test/macro_auroc", "test/ece", "test/ece_MI",
                                     "test/temperature", "test/temperature_MI"], 0.5)  # fmt: skip

    assert default_metrics([Run]) == ["test/macro_auroc", "test/ece"]
