"""Metrics by subgroup of the evaluated records (``ecgx eval … subgroups=<preset>``): by sex, by
age band, by source/site or by any metadata column of the run's data, each group with its count
and a bootstrap interval, and per column the largest gap between the groups scored.

A group smaller than ``min_size`` is listed with its count and status ``too small``, not scored:
an AUROC on a dozen records says more about the draw than about the model. A group on which the
metric is undefined (one label value only) is listed as ``undefined``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from ecgx.errors import ConfigValueError
from ecgx.evaluation.metrics import bootstrap_ci
from ecgx.evaluation.scoring import quiet_metrics

#: Record.sex coding across ecgx's readers (PTB-XL's): 0 male, 1 female
SEX_NAMES = {0: "male", 1: "female"}
UNKNOWN = "unknown"
SCORED, TOO_SMALL, UNDEFINED = "scored", "too small", "undefined"


@dataclass
class SubgroupResult:
    """One row per (column, group); one row per column in ``gaps``."""

    metric: str
    table: pd.DataFrame
    gaps: pd.DataFrame


def group_labels(meta: pd.DataFrame, column: str, age_bins: Sequence[float]) -> pd.Series:
    """The group of every record for ``column``: sex as male/female, age as ``[lo, hi)``
    bands of ``age_bins``, anything else as its value; a missing value is ``unknown``."""
    if column not in meta.columns:
        raise ConfigValueError(
            f"subgroups.columns: {column!r} is not a metadata column of the evaluated data; "
            f"columns: {[c for c in meta.columns if c not in ('labels', 'path')]}"
        )
    values = meta[column]
    if column == "age":
        bins = [float(b) for b in age_bins]
        if len(bins) < 2 or any(b >= c for b, c in zip(bins, bins[1:])):
            raise ConfigValueError(f"subgroups.age_bins must be increasing edges, got {bins}")
        labels = [f"[{b:g}, {c:g})" for b, c in zip(bins, bins[1:])]
        banded = pd.cut(pd.to_numeric(values, errors="coerce"), bins, right=False, labels=labels)
        out = banded.astype(object)
        # An age outside every band is not the same as no age at all.
        outside = banded.isna() & values.notna()
        out[outside] = "outside bins"
        return out.where(values.notna(), UNKNOWN).astype(str)
    if column == "sex":
        numeric = pd.to_numeric(values, errors="coerce")
        return numeric.map(lambda v: SEX_NAMES.get(int(v), str(v)) if v == v else UNKNOWN)
    return values.map(lambda v: UNKNOWN if pd.isna(v) else str(v))


def subgroup_table(
    meta: pd.DataFrame,
    targets: np.ndarray,
    outputs: np.ndarray,
    fn: Callable[[np.ndarray, np.ndarray], float],
    metric: str,
    columns: Sequence[str],
    age_bins: Sequence[float] = (0, 40, 60, 80, 150),
    min_size: int = 30,
    n_resamples: int = 200,
    seed: int = 0,
    higher_is_better: bool = True,
) -> SubgroupResult:
    """Score ``fn(targets, outputs)`` within each group of each column (``meta`` row i is
    record i of ``targets``/``outputs``). The gap of a column is best − worst among its scored
    groups (``higher_is_better`` says which end is best)."""
    if len(meta) != len(targets) or len(targets) != len(outputs):
        raise ValueError(f"{len(meta)} metadata rows, {len(targets)} targets, "
                         f"{len(outputs)} outputs: one each per record")  # fmt: skip
    if not columns:
        raise ConfigValueError("subgroups.columns: empty; name at least one metadata column")
    rows, gaps = [], []
    for column in columns:
        labels = group_labels(meta.reset_index(drop=True), str(column), age_bins).to_numpy()
        for group in sorted(set(labels), key=str):
            idx = np.flatnonzero(labels == group)
            row = {"column": column, "group": group, "n": len(idx), "metric": metric,
                   "value": np.nan, "ci_low": np.nan, "ci_high": np.nan}  # fmt: skip
            if len(idx) < min_size:
                row["status"] = TOO_SMALL
            else:
                with quiet_metrics():
                    ci = bootstrap_ci(fn, targets[idx], outputs[idx], n_resamples, seed)
                row["status"] = SCORED if np.isfinite(ci.point) else UNDEFINED
                row.update(value=ci.point, ci_low=ci.low, ci_high=ci.high)
            rows.append(row)
        scored = [r for r in rows if r["column"] == column and r["status"] == SCORED]
        gap = {"column": column, "metric": metric, "groups_scored": len(scored),
               "best": "", "worst": "", "gap": np.nan}  # fmt: skip
        if len(scored) >= 2:
            order = sorted(scored, key=lambda r: r["value"], reverse=higher_is_better)
            gap.update(best=order[0]["group"], worst=order[-1]["group"],
                       gap=abs(order[0]["value"] - order[-1]["value"]))  # fmt: skip
        gaps.append(gap)
    table = pd.DataFrame(rows, columns=["column", "group", "n", "status", "metric", "value",
                                        "ci_low", "ci_high"])  # fmt: skip
    return SubgroupResult(metric, table, pd.DataFrame(gaps))


def format_subgroups(result: SubgroupResult) -> str:
    """The table as a person reads it, each column's largest gap under its groups."""
    lines = [f"{'column':<12} {'group':<16} {'n':>6}  {result.metric + ' (95 % CI)':<28}",
             "-" * 66]  # fmt: skip
    gaps = {g["column"]: g for g in result.gaps.to_dict("records")}
    for column, rows in result.table.groupby("column", sort=False):
        for r in rows.itertuples(index=False):
            cell = (f"{r.value:.4f} ({r.ci_low:.4f}-{r.ci_high:.4f})" if r.status == SCORED
                    else r.status)  # fmt: skip
            lines.append(f"{r.column:<12} {r.group:<16} {r.n:>6}  {cell}")
        g = gaps[column]
        if g["groups_scored"] >= 2:
            lines.append(f"{'':<12} largest gap {g['gap']:.4f} ({g['best']} vs {g['worst']})")
        else:
            lines.append(f"{'':<12} no gap: {g['groups_scored']} group(s) scored")
    return "\n".join(lines)


def evaluate_subgroups(
    cfg: DictConfig,
    task: str,
    names: list[str],
    meta: pd.DataFrame,
    targets: np.ndarray,
    outputs: np.ndarray,
    split: str,
) -> tuple[SubgroupResult, dict[str, float], list[Path]]:
    """``ecgx eval … subgroups=<preset>``: the table of ``cfg.subgroups`` on the evaluated
    records, written as CSV to the job's folder, and the metrics to log to the eval child run
    (``subgroup/<split>/<column>/<group>/<metric>`` and ``…/n``, ``…/<column>/gap``; outside
    ``<split>/`` so that ``ecgx compare``'s default columns stay the headline ones)."""
    from ecgx.evaluation.scoring import DEFAULT_METRIC, check_metric, metric_function
    from ecgx.tracking.child_runs import metric_name
    from ecgx.tracking.compare import lower_is_better
    from ecgx.tracking.runs import output_dir

    node = cfg.subgroups
    metric = str(node.get("metric") or DEFAULT_METRIC[task])
    check_metric(task, metric, names, targets, outputs, "subgroups.metric")
    result = subgroup_table(
        meta, targets, outputs, metric_function(task, metric, names), metric,
        list(node.get("columns") or []), list(node.get("age_bins") or (0, 40, 60, 80, 150)),
        int(node.get("min_size", 30)), int(node.get("bootstrap_resamples", 200)),
        int(cfg.get("seed", 0)), not lower_is_better(metric),
    )  # fmt: skip
    path = output_dir("eval") / f"subgroups_{split}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    result.table.to_csv(path, index=False)
    gaps = path.with_name(f"subgroup_gaps_{split}.csv")
    result.gaps.to_csv(gaps, index=False)
    metrics: dict[str, float] = {}
    for r in result.table.to_dict("records"):
        key = metric_name(f"subgroup/{split}/{r['column']}/{r['group']}")
        metrics[f"{key}/n"] = float(r["n"])
        if r["status"] == SCORED:
            metrics[f"{key}/{metric}"] = r["value"]
            metrics[f"{key}/{metric}_ci_low"] = r["ci_low"]
            metrics[f"{key}/{metric}_ci_high"] = r["ci_high"]
    for g in result.gaps.to_dict("records"):
        if np.isfinite(g["gap"]):
            metrics[metric_name(f"subgroup/{split}/{g['column']}/gap")] = g["gap"]
    return result, metrics, [path, gaps]
