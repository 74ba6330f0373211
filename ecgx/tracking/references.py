"""``ecgx compare … references=<CODE test folder>``: the CODE test set's other annotators (the
paper's network ``dnn.csv``, the cardiologists', residents' and students' tables) as rows beside
ecgx runs scored on the same exams, in the CODE paper's metrics (Ribeiro et al., Nat Commun
2020, Table 2): per-class precision, recall (sensitivity), specificity and F1 of 0/1 decisions.

Why the annotators enter as in-memory runs, not as runs logged to MLflow: their tables are fixed
files, while the exams they are scored on depend on the compared runs (all 827 after ``ecgx eval
… dataset=code_test subset=all``, a test split of them after training on ``dataset=code_test``),
and each ecgx run's decisions need its own tuned thresholds applied at comparison time anyway.
Made here as run-like objects with their metrics and per-record predictions, they go through
compare's own machinery unchanged: the grouped table, its formats and HTML report, and
``against=<annotator>`` with its paired bootstrap on the same exams.

An ecgx run is thresholded as it says: its ``<split>/threshold_<class>`` metrics (tuned on its
validation split; ``ecgx eval`` on another dataset logs the training run's), decision
``p >= t`` as everywhere in ecgx; a run without them is decided at 0.5, and the command says so.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd

from ecgx.datasets.code15 import CLASSES, GOLD_CSV, REFERENCES
from ecgx.evaluation.metrics import decision_metrics
from ecgx.paths import project_root
from ecgx.tracking.compare import compare_error, default_group_by, study_rows
from ecgx.tracking.significance import (
    PREDICTIONS,
    RunPredictions,
    check_same_records,
    load_predictions,
    run_label,
)

#: the prefix of the metrics computed here (beside a run's own ``test/`` metrics)
PREFIX = "code_test/"
#: ``references=code_test``: the folder conf/dataset/code_test.yaml reads by default
DEFAULT_ROOT = Path("data") / "code-test"
REFERENCE_TAG = "ecgx.reference"


def default_metrics(classes: Sequence[str]) -> list[str]:
    """The paper's anchor: F1 per class, after its mean over the classes (the sort key)."""
    return [f"{PREFIX}macro_f1", *(f"{PREFIX}f1_{c}" for c in classes)]


def reference_root(value: str) -> Path:
    """The folder ``references=`` names: ``code_test`` is ``<project>/data/code-test``."""
    return project_root() / DEFAULT_ROOT if value == "code_test" else Path(value).expanduser()


def read_annotators(root: Path) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """``gold_standard.csv`` and the annotators' tables present in ``root`` (row i = exam i),
    each with the six classes as 0/1 columns in :data:`CLASSES` order."""
    gold_path = root / GOLD_CSV
    if not gold_path.is_file():
        raise compare_error(f"references={root}: no {GOLD_CSV} in it (the CODE test set folder)")
    tables = {}
    for name in ("gold_standard", *REFERENCES):
        path = root / f"{name}.csv"
        if not path.is_file():
            continue
        table = pd.read_csv(path)
        missing = [c for c in CLASSES if c not in table.columns]
        if missing:
            raise compare_error(f"{path}: missing columns {missing}")
        values = table[list(CLASSES)]
        if not values.isin([0, 1]).all().all():
            raise compare_error(f"{path}: values other than 0 and 1 (decisions are 0/1)")
        tables[name] = values.astype(int)
    gold = tables.pop("gold_standard")
    for name, table in tables.items():
        if len(table) != len(gold):
            raise compare_error(f"{root / f'{name}.csv'}: {len(table)} rows, {GOLD_CSV} "
                                f"{len(gold)}: the tables are aligned by row")  # fmt: skip
    if not tables:
        raise compare_error(f"references={root}: none of {[f'{n}.csv' for n in REFERENCES]}")
    return gold, tables


def _predictions_artifact(client: Any, run: Any) -> str | None:
    """A training run's ``predictions/test_predictions.csv``, or the one
    ``predictions/<subset>_predictions.csv`` an ``ecgx eval`` child run logs."""
    names = [a.path for a in client.list_artifacts(run.info.run_id, "predictions")]
    if PREDICTIONS in names:
        return PREDICTIONS
    found = [n for n in names if n.endswith("_predictions.csv")]
    return found[0] if len(found) == 1 else None


def _thresholds(run: Any, split: str, classes: Sequence[str]) -> np.ndarray | None:
    keys = [f"{split}/threshold_{c}" for c in classes]
    metrics = run.data.metrics
    return np.array([metrics[k] for k in keys]) if all(k in metrics for k in keys) else None


def _run_decisions(
    tracking_uri: str, runs: Sequence[Any], gold: pd.DataFrame
) -> dict[str, RunPredictions]:
    """Each run's 0/1 decisions at its thresholds, with its records checked against the gold
    standard: record id = row of gold_standard.csv, and the run's labels must be its rows'."""
    from mlflow.tracking import MlflowClient

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    client = MlflowClient(tracking_uri)
    artifacts, missing = {}, []
    for run in runs:
        found = _predictions_artifact(client, run)
        if found is None:
            missing.append(run_label(run))
        artifacts[run.info.run_id] = found or PREDICTIONS
    if missing:
        raise compare_error(f"references: no per-record predictions logged by {', '.join(missing)}")
    out = load_predictions(tracking_uri, runs, artifacts)
    for run in runs:
        pred = out[run.info.run_id]
        unknown = [c for c in pred.classes if c not in CLASSES]
        if unknown:
            raise compare_error(f"references: run {pred.name} has classes {unknown} the CODE "
                                f"test set lacks ({', '.join(CLASSES)})")  # fmt: skip
        rows = pd.to_numeric(pd.Series(pred.record_ids), errors="coerce").to_numpy()
        if np.isnan(rows).any() or (rows < 0).any() or (rows >= len(gold)).any():
            bad = pred.record_ids[np.isnan(rows) | ~((rows >= 0) & (rows < len(gold)))][0]
            raise compare_error(f"references: run {pred.name} has record id {bad!r}, no row of "
                                f"{GOLD_CSV} (0-{len(gold) - 1}): was it scored on "
                                f"dataset=code_test?")  # fmt: skip
        truth = gold[pred.classes].to_numpy()[rows.astype(int)]
        if (truth != pred.targets).any():
            i = int(np.argwhere((truth != pred.targets).any(axis=1))[0, 0])
            raise compare_error(f"references: run {pred.name} labels record {pred.record_ids[i]} "
                                f"otherwise than {GOLD_CSV} does")  # fmt: skip
        split = Path(artifacts[run.info.run_id]).name.removesuffix("_predictions.csv")
        thresholds = _thresholds(run, split, pred.classes)
        if thresholds is None:
            print(f"ecgx compare: run {pred.name} logged no {split}/threshold_<class>: its "
                  "decisions are p >= 0.5", file=sys.stderr)  # fmt: skip
            thresholds = np.full(len(pred.classes), 0.5)
        pred.probs = (pred.probs >= thresholds).astype(float)
    return out


def with_parent_config(runs: Sequence[Any], tracking_uri: str) -> list[Any]:
    """``runs`` with an ``ecgx eval`` child run's parent's params and tags (its model, its
    overrides) under its own: the child logs only what it evaluated, and would otherwise be a
    row without a model name."""
    from mlflow.tracking import MlflowClient

    client, parents, out = MlflowClient(tracking_uri), {}, []
    for run in runs:
        parent_id = run.data.tags.get("mlflow.parentRunId")
        if not parent_id:
            out.append(run)
            continue
        if parent_id not in parents:
            parents[parent_id] = client.get_run(parent_id).data
        parent = parents[parent_id]
        tags = {k: v for k, v in parent.tags.items() if not k.startswith("mlflow.")}
        out.append(_run_like(run.info.run_id, run.info.run_name, dict(run.data.metrics),
                             {**parent.params, **run.data.params}, {**tags, **run.data.tags},
                             run.info.experiment_id))  # fmt: skip
    return out


def _run_like(run_id: str, name: str, metrics: dict, params: dict, tags: dict, experiment: Any):
    info = SimpleNamespace(run_id=run_id, run_name=name, experiment_id=experiment)
    return SimpleNamespace(info=info, data=SimpleNamespace(metrics=metrics, params=params,
                                                           tags=tags))  # fmt: skip


def add_references(
    runs: Sequence[Any], tracking_uri: str, root: Path, group_by: Sequence[str]
) -> tuple[list[Any], dict[str, RunPredictions]]:
    """``runs`` with their ``code_test/<stat>_<class>`` and ``code_test/macro_<stat>`` metrics
    added, then one run-like row per annotator of ``root`` (run id = its name: ``dnn``,
    ``cardiologist1``, …; its name in the first ``group_by`` column) scored on the runs'
    records; and every row's 0/1 decisions by run id, for ``against=``. Without runs, the
    annotators are scored on every exam. SystemExit naming the runs scored on different
    records (a reference row is scored on the same exams as the runs beside it)."""
    gold, annotators = read_annotators(root)
    decisions = _run_decisions(tracking_uri, runs, gold) if runs else {}
    if decisions:
        check_same_records([decisions[r.info.run_id] for r in runs])
        first = decisions[runs[0].info.run_id]
        record_ids, classes = first.record_ids, first.classes
    else:
        # Sorted as text, as every run's records are (significance.load_predictions).
        record_ids = np.array(sorted(str(i) for i in range(len(gold))))
        classes = list(CLASSES)
    rows = record_ids.astype(int)
    truth = gold[classes].to_numpy()[rows]
    out = []
    for run in runs:
        pred = decisions[run.info.run_id]
        scored = decision_metrics(truth, pred.probs.astype(int), classes)
        metrics = {**run.data.metrics, **{PREFIX + k: v for k, v in scored.items()}}
        out.append(_run_like(run.info.run_id, run.info.run_name, metrics, run.data.params,
                             run.data.tags, run.info.experiment_id))  # fmt: skip
    keys = list(group_by) or ["model"]
    experiment = runs[0].info.experiment_id if runs else None
    for name, table in annotators.items():
        given = table[classes].to_numpy()[rows]
        metrics = {PREFIX + k: v for k, v in decision_metrics(truth, given, classes).items()}
        params = {"data/classes": ",".join(classes), keys[0]: name}
        tags = {REFERENCE_TAG: str(root / f"{name}.csv")}
        out.append(_run_like(name, f"CODE test {name}", metrics, params, tags, experiment))
        decisions[name] = RunPredictions(name, f"CODE test {name} ({name})", record_ids,
                                         given.astype(float), truth, list(classes))  # fmt: skip
    return out, decisions


def with_references(
    runs: Sequence[Any],
    tracking_uri: str,
    references: str,
    group_by: Sequence[str] | None,
    metrics: Sequence[str] | None,
    layout: str = "groups",
) -> tuple[list[Any], list[str], list[str], dict[str, RunPredictions]]:
    """What ``ecgx compare … references=`` compares: (the runs and the annotators of the
    folder ``references`` names, the grouping keys, the metrics, every row's decisions)."""
    runs = with_parent_config(runs, tracking_uri)
    if group_by is None and runs:
        group_by = study_rows(runs) if layout == "study" else default_group_by(runs)
    group_by = list(group_by or []) or ["model"]
    runs, decisions = add_references(runs, tracking_uri, reference_root(references), group_by)
    classes = runs[-1].data.params["data/classes"].split(",")  # an annotator's: always there
    return runs, group_by, list(metrics or default_metrics(classes)), decisions
