"""Significance columns of ``ecgx compare … against=<group or run>``, computed from the per-record
test predictions every run logs (``predictions/test_predictions.csv``), and the critical
difference of models over datasets (``cd_by=<key>``).

Every group of the comparison table is compared with the reference (a group named by its key
values, or one run by id) on the same test records: the difference of the metric (mean over the
group's runs minus the reference's), its paired-bootstrap interval and p-value, DeLong's p for
an AUROC, and Holm's adjustment over the rows of the table. Runs scored on different records
are refused by name: a paired test on unpaired records would be silently wrong.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ecgx.evaluation import statistics as st
from ecgx.tracking.compare import (
    compare_error,
    group_labels,
    lower_is_better,
    run_value,
    table_keys,
)

PREDICTIONS = "predictions/test_predictions.csv"


def _metric_fns() -> dict[str, Callable[[np.ndarray, np.ndarray], float]]:
    from ecgx.evaluation.metrics import fmax_ptbxl, mean_accuracy, ranking_metrics

    return {
        "macro_auroc": st.fast_macro_auroc,
        "macro_auprc": lambda y, p: float(ranking_metrics(y, p)["macro_auprc"]),
        "fmax_ptbxl": fmax_ptbxl,
        "mean_accuracy": mean_accuracy,
        "accuracy": lambda y, p: float(np.mean(np.argmax(p, 1) == np.argmax(y, 1))),
    }


def metric_function(
    metric: str, classes: Sequence[str]
) -> tuple[Callable[[np.ndarray, np.ndarray], float], int | None]:
    """The function computing ``metric`` (any ``<split>/`` prefix) from (targets, probs), and
    the class column it reads (``auroc_<class>``, ``f1_<class>``, …), or None for all. SystemExit naming the
    metrics it knows otherwise (a loss or a challenge score needs more than the predictions)."""
    from ecgx.evaluation.metrics import DECISION_STATS, decision_metrics

    # The prefix (test/, all/ of an eval child run, code_test/ of compare's references=) says
    # which records were scored, not what the metric is.
    name = metric.split("/", 1)[-1]
    fns = _metric_fns()
    if name in fns:
        return fns[name], None
    if name.startswith("auroc_") and name.removeprefix("auroc_") in classes:
        return st.fast_macro_auroc, list(classes).index(name.removeprefix("auroc_"))
    for stat in DECISION_STATS:
        # macro_f1 and the others: of the decisions p >= 0.5 (as evaluate_split's macro_f1);
        # on 0/1 predictions (references=), of the decisions as given.
        per_class = name.startswith(f"{stat}_") and name[len(stat) + 1 :] in classes
        if name == f"macro_{stat}" or per_class:
            column = list(classes).index(name[len(stat) + 1 :]) if per_class else None

            def fn(y: np.ndarray, p: np.ndarray, stat: str = stat) -> float:
                decided = (p >= 0.5).astype(int)
                return decision_metrics(y, decided, range(y.shape[1]), [stat])[f"macro_{stat}"]

            return fn, column
    known = [*fns, *(f"auroc_{c}" for c in classes), *(f"macro_{s}" for s in DECISION_STATS),
             *(f"{s}_{c}" for s in DECISION_STATS for c in classes)]  # fmt: skip
    raise compare_error(
        f"against: metric '{metric}' cannot be recomputed from the per-record predictions; "
        f"name one with against_metric= (one of: {', '.join('test/' + k for k in known)})"
    )


@dataclass
class RunPredictions:
    """One run's test predictions, rows sorted by record id."""

    run_id: str
    name: str
    record_ids: np.ndarray
    probs: np.ndarray
    targets: np.ndarray
    classes: list[str] = field(default_factory=list)


def run_label(run: Any) -> str:
    """A run as the messages name it: its name and id."""
    return f"{run.info.run_name or '?'} ({run.info.run_id})"


def load_predictions(
    tracking_uri: str, runs: Sequence[Any], artifacts: dict[str, str] | None = None
) -> dict[str, RunPredictions]:
    """Each run's ``predictions/test_predictions.csv`` (or the artifact ``artifacts`` names for
    its run id), sorted by record id (so that the order a run wrote its records in never
    matters). SystemExit naming the runs without one."""
    from mlflow.tracking import MlflowClient

    # One progress bar per run's small CSV would bury the table in the terminal.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    client = MlflowClient(tracking_uri)
    out, missing = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        for run in runs:
            try:
                artifact = (artifacts or {}).get(run.info.run_id, PREDICTIONS)
                path = client.download_artifacts(run.info.run_id, artifact, tmp)
            except Exception:  # MLflow raises several types for a missing artifact
                missing.append(run_label(run))
                continue
            frame = pd.read_csv(path, dtype={"record_id": str}).sort_values("record_id",
                                                                             kind="stable")  # fmt: skip
            Path(path).unlink()
            probs = [c for c in frame.columns if c.startswith("prob_")]
            if not probs:
                raise compare_error(f"run {run_label(run)}: {artifact} has no prob_<class> "
                                    f"columns (a regression run?); against= compares classifiers")  # fmt: skip
            classes = [c.removeprefix("prob_") for c in probs]
            if frame["record_id"].duplicated().any():
                raise compare_error(f"run {run_label(run)}: {artifact} lists a record twice")
            out[run.info.run_id] = RunPredictions(
                run.info.run_id, run_label(run), frame["record_id"].to_numpy(),
                frame[probs].to_numpy(float), frame[[f"true_{c}" for c in classes]].to_numpy(int),
                classes,
            )  # fmt: skip
    if missing:
        raise compare_error(f"no {PREDICTIONS} logged by: {', '.join(missing)}")
    return out


def check_same_records(predictions: Sequence[RunPredictions]) -> None:
    """SystemExit naming the runs whose records, classes or labels differ from the first's."""
    first = predictions[0]
    for other in predictions[1:]:
        if other.classes != first.classes:
            raise compare_error(f"runs {first.name} and {other.name} have different classes: "
                                f"{first.classes} vs {other.classes}")  # fmt: skip
        if (
            len(other.record_ids) != len(first.record_ids)
            or (other.record_ids != first.record_ids).any()
        ):
            only_a = len(np.setdiff1d(first.record_ids, other.record_ids))
            only_b = len(np.setdiff1d(other.record_ids, first.record_ids))
            raise compare_error(
                f"runs {first.name} and {other.name} were scored on different test records "
                f"({only_a} only in the first, {only_b} only in the second): a paired "
                f"comparison needs the same records"
            )
        if (other.targets != first.targets).any():
            raise compare_error(f"runs {first.name} and {other.name} give the same records "
                                f"different labels")  # fmt: skip


def _reference(table: pd.DataFrame, runs: Sequence[Any], against: str) -> tuple[str, list[Any]]:
    """(label, runs) of the reference: a group by its label (or its value of the one key), or
    one run by id."""
    keys = table_keys(table)
    labels = group_labels(table)
    by_group = {label: [r for r in runs if _group_of(r, keys) == label] for label in labels}
    if against in by_group:
        return against, by_group[against]
    by_run = [r for r in runs if r.info.run_id == against]
    if by_run:
        return f"run {run_label(by_run[0])}", by_run
    raise compare_error(f"against={against}: no group ({', '.join(labels)}) and no compared run "
                        f"has that name or id")  # fmt: skip


def _group_of(run: Any, keys: Sequence[str]) -> str:
    if keys == ["group"]:
        return "all"
    return " / ".join(run_value(run, k) for k in keys)


def against_columns(
    table: pd.DataFrame,
    runs: Sequence[Any],
    tracking_uri: str,
    against: str,
    metric: str | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    predictions: dict[str, RunPredictions] | None = None,
) -> pd.DataFrame:
    """``table`` with, per row, the comparison with the reference ``against``:
    ``Δ <metric>`` (row − reference, mean over runs), ``Δ low`` / ``Δ high`` (95 % paired
    bootstrap), ``p bootstrap``, ``p DeLong`` (AUROC metrics) and ``p Holm`` (Holm over the
    rows, on DeLong's p where there is one, else the bootstrap's). The reference row, and a
    row whose runs are the reference's, get no p-value. ``predictions``: each run's, by run id,
    where the caller holds them (``references=``); else they are downloaded from MLflow."""
    keys = table_keys(table)
    metric = metric or next(c.removesuffix(" mean") for c in table.columns if c.endswith(" mean"))
    label, reference = _reference(table, runs, against)
    # The metric's name is checked before any download (the classes as the runs logged them).
    metric_function(metric, runs[0].data.params.get("data/classes", "").split(","))
    if predictions is None:
        predictions = load_predictions(tracking_uri, runs)
    check_same_records([predictions[r.info.run_id] for r in runs])
    first = predictions[runs[0].info.run_id]
    fn, column = metric_function(metric, first.classes)
    targets = first.targets if column is None else first.targets[:, [column]]

    def probs(group: Sequence[Any]) -> list[np.ndarray]:
        out = [predictions[r.info.run_id].probs for r in group]
        return out if column is None else [p[:, [column]] for p in out]

    short = metric.split("/", 1)[-1]
    auroc = short == "macro_auroc" or short.startswith("auroc_")
    # Each run is scored once per resample, on draws shared by all: paired, and no run is
    # scored again for every row it is compared in.
    draws = st.bootstrap_draws(len(targets), n_resamples, seed)
    scored = {r.info.run_id: st.resampled_metric(fn, targets, p, draws)
              for r, p in zip(runs, probs(runs))}  # fmt: skip
    ref_scored = [scored[r.info.run_id] for r in reference]
    ref_components = [st.auroc_components(targets, p) for p in probs(reference)] if auroc else []
    ref_ids = {r.info.run_id for r in reference}
    rows: list[dict[str, float]] = []
    for group in group_labels(table):
        members = [r for r in runs if _group_of(r, keys) == group]
        boot = st.difference_interval([scored[r.info.run_id] for r in members], ref_scored)
        row = {f"Δ {metric}": boot.difference, "Δ low": boot.low, "Δ high": boot.high,
               "p bootstrap": boot.p_value}  # fmt: skip
        if auroc:
            components = [st.auroc_components(targets, p) for p in probs(members)]
            row["p DeLong"] = st.delong_difference(components, ref_components).p_value
        if {r.info.run_id for r in members} == ref_ids:
            row.update({k: math.nan for k in row if k.startswith("p ")})
        rows.append(row)
    extra = pd.DataFrame(rows, index=table.index)
    primary = extra["p DeLong"] if "p DeLong" in extra else extra["p bootstrap"]
    extra["p Holm"] = st.holm(primary.to_numpy())
    out = pd.concat([table, extra], axis=1)
    out.attrs["against"] = label
    out.attrs["against_metric"] = metric
    return out


def critical_difference_table(
    runs: Sequence[Any],
    model_key: Sequence[str],
    dataset_key: str,
    metric: str,
    alpha: float = 0.05,
) -> st.CriticalDifference:
    """Friedman + Nemenyi of the groups (``model_key`` values) over the values of
    ``dataset_key``: each model's score on a dataset is the mean of its runs there. SystemExit
    naming the (model, dataset) pairs without a run."""
    frame = pd.DataFrame({
        "model": [" / ".join(run_value(r, k) for k in model_key) or "all" for r in runs],
        "dataset": [run_value(r, dataset_key) for r in runs],
        "score": [r.data.metrics.get(metric, math.nan) for r in runs],
    })  # fmt: skip
    if (frame["dataset"] == "").all():
        raise compare_error(f"cd_by={dataset_key}: no selected run has that key")
    scores = frame.pivot_table(index="dataset", columns="model", values="score", aggfunc="mean")
    holes = [f"{m} on {d}" for d in scores.index for m in scores.columns
             if not np.isfinite(scores.loc[d, m])]  # fmt: skip
    if holes:
        raise compare_error(f"cd_by={dataset_key}: no {metric} for {', '.join(holes)}")
    try:
        return st.critical_difference(scores.to_numpy(), list(scores.columns),
                                      not lower_is_better(metric), alpha)  # fmt: skip
    except ValueError as err:
        raise compare_error(f"cd_by={dataset_key}: {err}") from None


def format_critical_difference(result: st.CriticalDifference, metric: str) -> str:
    lines = [f"critical difference of {metric} over {result.n_datasets} datasets: "
             f"Friedman p = {result.friedman_p:.4g}, Nemenyi CD = {result.cd:.3f} "
             f"(α = {result.alpha})", "average rank (1 = best):"]  # fmt: skip
    for i in np.argsort(result.average_ranks, kind="stable"):
        lines.append(f"  {result.average_ranks[i]:.2f}  {result.models[i]}")
    return "\n".join(lines) + "\n"
