"""Runs logged to MLflow as a comparison table: selected by experiment, sweep, status, tags and
params; grouped by chosen keys (by default the overridden keys that vary, except the seed); each
metric as mean ± std with the run count per group, beside the model's cost where runs logged it.
``ecgx compare`` (:mod:`ecgx.commands.compare`) prints it; :mod:`ecgx.tracking.report` draws it."""

from __future__ import annotations

import difflib
import json
import math
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from ecgx.evaluation.statistics import mean_interval
from ecgx.tracking.mlflow_run import CHOICE_PREFIX, OVERRIDES_TAG, SWEEP_TAG

DEFAULT_IGNORE = ("seed",)
REPORT_TAG = "ecgx.report"
REPORT_RUN_NAME = "compare-report"
STATUSES = ("FINISHED", "FAILED", "RUNNING", "KILLED", "SCHEDULED")
#: what ``ecgx train`` logs as params about the model's cost (see ``ecgx.commands.train``)
COST_KEYS = ("cost/parameters", "cost/flops_per_sample", "cost/checkpoint_mb",
             "cost/inference_ms_per_record")  # fmt: skip
COST_HEADERS = {"cost/parameters": "parameters", "cost/flops_per_sample": "GFLOPs",
                "cost/checkpoint_mb": "ckpt MB", "cost/inference_ms_per_record": "ms/record"}  # fmt: skip
#: default metrics come in this order (those present), then the other test/ metrics, loss last
HEADLINE = ("test/macro_auroc", "test/fmax_ptbxl", "test/macro_auprc", "test/macro_f1",
            "test/accuracy", "test/challenge_score", "test/r2", "test/mae")  # fmt: skip
#: per-class metrics by prefix, for runs that did not log their class names (data/classes)
PER_CLASS_PREFIXES = ("auroc_", "auprc_", "f1_tuned_", "threshold_", "f1_")
LOWER_IS_BETTER = ("loss", "mae", "mse", "rmse", "error", "ece", "mce", "brier")
#: logged with the test metrics but no score of the model (module.calibrate's fitted value)
NOT_SCORES = ("temperature",)


def compare_error(message: str) -> SystemExit:
    return SystemExit(f"ecgx compare: {message}")


def _overrides(run: Any) -> dict[str, str]:
    out = {}
    for item in json.loads(run.data.tags.get(OVERRIDES_TAG, "[]")):
        key, _, value = item.partition("=")
        out[key.lstrip("+~")] = value
    return out


def param_value(run: Any, key: str) -> str | None:
    """A run's value for a param key: command-line override, group choice, then param."""
    overrides = _overrides(run)
    if key in overrides:
        return overrides[key]
    params = run.data.params
    for source in (params.get(f"{CHOICE_PREFIX}{key}"), params.get(key)):
        if source is not None:
            return source
    return None


def run_value(run: Any, key: str) -> str:
    """A run's value for a grouping key: command-line override, group choice, param, tag."""
    value = param_value(run, key)
    if value is None:
        value = run.data.tags.get(key)
    return "" if value is None else value


def _param_keys(run: Any) -> set[str]:
    params = run.data.params
    choices = {k.removeprefix(CHOICE_PREFIX) for k in params if k.startswith(CHOICE_PREFIX)}
    return set(_overrides(run)) | choices | set(params)


def _unknown_key(kind: str, key: str, known: Iterable[str], extra: str = "") -> SystemExit:
    close = difflib.get_close_matches(key, sorted(set(known)), n=4, cutoff=0.6)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return compare_error(f"unknown {kind} '{key}': no selected run has it{hint}{extra}")


def search_runs(
    tracking_uri: str,
    experiments: Sequence[str] = (),
    sweep: str | None = None,
    filter_string: str = "",
    status: str = "FINISHED",
) -> list[Any]:
    """Runs of the named experiments (all if none) with this status (``any``: all), of one
    sweep if given; report runs (tag ``ecgx.report=true``) are never among them.

    ``sweep="latest"`` picks the sweep of the most recently started swept run.
    """
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    if experiments:
        found = [client.get_experiment_by_name(name) for name in experiments]
        missing = [n for n, e in zip(experiments, found) if e is None]
        if missing:
            known = [e.name for e in client.search_experiments()]
            raise compare_error(
                f"no MLflow experiment {missing} at {tracking_uri} (known: {known})"
            )
        ids = [e.experiment_id for e in found]
    else:
        ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)]
    clauses = []
    if status.lower() not in ("any", "all"):
        if status.upper() not in STATUSES:
            raise compare_error(f"status={status}: expected one of {', '.join(STATUSES)} or any")
        clauses.append(f"attributes.status = '{status.upper()}'")
    if filter_string:
        clauses.append(filter_string)
    if sweep == "latest":
        swept = client.search_runs(ids, " and ".join([*clauses, f"tags.`{SWEEP_TAG}` != ''"]),
                                   order_by=["attributes.start_time DESC"], max_results=1)  # fmt: skip
        if not swept:
            raise compare_error("no multirun (sweep) found")
        sweep = swept[0].data.tags[SWEEP_TAG]
    if sweep:
        clauses.append(f"tags.`{SWEEP_TAG}` = '{sweep}'")
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs(ids, " and ".join(clauses), max_results=1000, page_token=token)
        # A report run carries no metrics of its own: comparing it would only add an empty group.
        runs.extend(r for r in page if r.data.tags.get(REPORT_TAG) != "true")
        token = page.token
        if not token:
            return runs


def _same(a: str, b: str) -> bool:
    """Param values as logged ("0.001") and as typed ("1e-3") name the same number."""
    if a == b:
        return True
    try:
        return float(a) == float(b)
    except ValueError:
        return False


def select_runs(
    runs: Sequence[Any],
    params: dict[str, Sequence[str]] | None = None,
    tags: dict[str, Sequence[str]] | None = None,
    hints: Iterable[str] = (),
) -> list[Any]:
    """The runs whose every param / tag key has one of the given values.

    A key that none of ``runs`` has is an error naming it (a typo would otherwise silently
    select nothing), suggesting close param names or ``hints`` (the command's options: a
    mistyped option arrives here as a param filter).
    """
    selected = list(runs)
    for key, values in (params or {}).items():
        if not any(key in _param_keys(r) for r in runs):
            known = set(hints).union(*(_param_keys(r) for r in runs))
            raise _unknown_key("param filter key", key, known,
                               "; use tag.<key>=<value> for a tag")  # fmt: skip
        selected = [r for r in selected
                    if any(_same(param_value(r, key) or "", v) for v in values)]  # fmt: skip
    for key, values in (tags or {}).items():
        if not any(key in r.data.tags for r in runs):
            known = {k for r in runs for k in r.data.tags if not k.startswith("mlflow.")}
            raise _unknown_key("tag filter key", key, known)
        selected = [r for r in selected if r.data.tags.get(key) in set(values)]
    return selected


def study_rows(runs: Sequence[Any]) -> list[str]:
    """The row keys of ``layout=study``: the model, or the ``study_row`` label a study's files
    set (e.g. experiments/fm_protocol: objective, protocol and model); and the label fraction
    where the runs differ in it (label-efficiency studies)."""
    keys = (
        ["study_row"]
        if any(run_value(r, "study_row") not in ("", "None") for r in runs)
        else ["model"]
    )
    if len({run_value(r, "data.label_fraction") for r in runs}) > 1:
        keys.append("data.label_fraction")
    return keys


def default_group_by(runs: Sequence[Any], ignore: Sequence[str] = DEFAULT_IGNORE) -> list[str]:
    """The overridden keys whose values differ across the runs, except the seed."""
    keys: list[str] = []
    for run in runs:
        keys += [k for k in _overrides(run) if k not in keys and k not in ignore]
    return [k for k in keys if len({run_value(r, k) for r in runs}) > 1]


def _classes(run: Any) -> list[str]:
    return [c for c in run.data.params.get("data/classes", "").split(",") if c]


def _is_summary(run: Any, metric: str) -> bool:
    """Not a per-class metric and not a bootstrap interval bound."""
    name = metric.removeprefix("test/")
    if "_ci_" in name or name.startswith(NOT_SCORES):
        return False
    if any(name.endswith(f"_{c}") for c in _classes(run)):
        return False
    return not name.startswith(PER_CLASS_PREFIXES)


def default_metrics(runs: Sequence[Any]) -> list[str]:
    """The test/ metrics summarising a run: headline first, then the others, loss last."""
    found = sorted({m for r in runs for m in r.data.metrics
                    if m.startswith("test/") and _is_summary(r, m)})  # fmt: skip
    rest = [m for m in found if m not in HEADLINE and m != "test/loss"]
    return [m for m in HEADLINE if m in found] + rest + [m for m in ("test/loss",) if m in found]


def lower_is_better(metric: str) -> bool:
    name = metric.rsplit("/", 1)[-1]
    return any(name == w or name.endswith(f"_{w}") or name.startswith(f"{w}_")
               for w in LOWER_IS_BETTER)  # fmt: skip


def _cost(run: Any, key: str) -> float:
    value = run.data.params.get(key, run.data.metrics.get(key))
    try:
        return float(value) if value is not None else math.nan
    except ValueError:
        return math.nan


def compare_table(
    runs: Sequence[Any],
    group_by: Sequence[str] | None = None,
    metrics: Sequence[str] | None = None,
    layout: str = "groups",
    sort: bool = True,
) -> pd.DataFrame:
    """One row per group: its key values, ``n`` runs, ``<metric> mean`` / ``<metric> std``
    (sample std, NaN for one run), ``<metric> ci_low`` / ``<metric> ci_high`` (95 % Student-t
    interval of the mean over the group's runs, e.g. seeds; for a single run, the bootstrap
    interval over test records that the run logged, NaN if none), ``<metric> n``
    where some runs lack the metric, and the mean of each ``cost/*`` param that any run logged.

    ``layout="study"`` groups by model. Rows are ordered best first by the first metric
    (descending, ascending for losses and errors); ``sort=False`` keeps the group order.
    """
    if not runs:
        raise compare_error("no runs match")
    if layout == "study":
        group_by = study_rows(runs)
        pooled = [k for k in default_group_by(runs) if k not in group_by]
        if pooled:
            # One row per model is the study's table; say what its rows average over.
            print(f"ecgx compare: layout=study pools runs that differ in {pooled}",
                  file=sys.stderr)  # fmt: skip
    elif layout != "groups":
        raise compare_error(f"layout={layout}: expected groups or study")
    group_by = list(group_by) if group_by is not None else default_group_by(runs)
    for key in group_by:
        if all(run_value(r, key) == "" for r in runs):
            known = set().union(*(_param_keys(r) for r in runs)) | {
                k for r in runs for k in r.data.tags if not k.startswith("mlflow.")
            }
            raise _unknown_key("group_by key", key, known)
    metrics = list(metrics) if metrics is not None else default_metrics(runs)
    if not metrics:
        raise compare_error("the selected runs logged no test/ metrics: name some with metrics=...")
    for m in metrics:
        if not any(m in r.data.metrics for r in runs):
            raise _unknown_key("metric", m, {k for r in runs for k in r.data.metrics})
    costs = [k for k in COST_KEYS if any(not math.isnan(_cost(r, k)) for r in runs)]

    rows = []
    for run in runs:
        row: dict[str, Any] = {k: run_value(run, k) for k in group_by}
        row.update({m: run.data.metrics.get(m, math.nan) for m in metrics})
        # The run's own bootstrap interval of the metric (the module logs <metric>_ci_low/high
        # for the headline metrics): a group of one run shows it.
        for m in metrics:
            row[f"{m} own_low"] = run.data.metrics.get(f"{m}_ci_low", math.nan)
            row[f"{m} own_high"] = run.data.metrics.get(f"{m}_ci_high", math.nan)
        row.update({k: _cost(run, k) for k in costs})
        rows.append(row)
    frame = pd.DataFrame(rows)
    keys = group_by or ["group"]
    if not group_by:
        frame["group"] = "all"
    grouped = frame.groupby(keys, sort=True, dropna=False)
    table = grouped.size().rename("n").to_frame()
    for m in metrics:
        table[f"{m} mean"] = grouped[m].mean()
        table[f"{m} std"] = grouped[m].std(ddof=1)
        # Several runs (seeds): the Student-t interval of their mean, which with 3-5 seeds is
        # sounder than resampling so few values. One run: its own bootstrap over test records.
        interval = grouped[m].apply(lambda v: mean_interval(list(v)))
        single = table["n"] == 1
        table[f"{m} ci_low"] = interval.map(lambda lh: lh[0]).where(
            ~single, grouped[f"{m} own_low"].first()
        )
        table[f"{m} ci_high"] = interval.map(lambda lh: lh[1]).where(
            ~single, grouped[f"{m} own_high"].first())  # fmt: skip
        counts = grouped[m].count()
        if (counts != table["n"]).any():
            table[f"{m} n"] = counts
    for k in costs:
        table[k] = grouped[k].mean()
    table = table.reset_index()
    if sort:
        first = f"{metrics[0]} mean"
        table = table.sort_values(first, ascending=lower_is_better(metrics[0]),
                                  na_position="last", kind="stable").reset_index(drop=True)  # fmt: skip
    return table


def table_metrics(table: pd.DataFrame) -> list[str]:
    """The metrics of a :func:`compare_table`, in order."""
    return [c.removesuffix(" mean") for c in table.columns if c.endswith(" mean")]


def table_keys(table: pd.DataFrame) -> list[str]:
    """The grouping columns of a :func:`compare_table`."""
    return list(table.columns[: list(table.columns).index("n")])


def group_labels(table: pd.DataFrame) -> list[str]:
    """One name per row: its key values, joined by `` / `` when grouped by several keys."""
    keys = table_keys(table)
    return [" / ".join(str(v) for v in row) for row in table[keys].itertuples(index=False)]


def _number(value: float, digits: int) -> str:
    return "–" if math.isnan(value) else f"{value:.{digits}f}"


def _cost_cell(key: str, value: float) -> str:
    if math.isnan(value):
        return "–"
    if key == "cost/parameters":
        return f"{value:,.0f}"
    if key == "cost/flops_per_sample":
        return f"{value / 1e9:.3f}"
    return f"{value:.1f}" if key == "cost/checkpoint_mb" else f"{value:.2f}"


def display_frame(table: pd.DataFrame, digits: int = 4, layout: str = "groups") -> pd.DataFrame:
    """The table as shown to a reader: one ``mean ± std`` cell per metric (``(k/n)`` appended
    where only k of the group's n runs logged it), formatted cost columns."""
    shown = table[table_keys(table) + ["n"]].astype(str)
    for metric in table_metrics(table):
        cells = []
        for i in range(len(table)):
            m, s = table[f"{metric} mean"].iloc[i], table[f"{metric} std"].iloc[i]
            cell = _number(m, digits) + ("" if math.isnan(s) else f" ± {s:.{digits}f}")
            if f"{metric} n" in table and table[f"{metric} n"].iloc[i] != table["n"].iloc[i]:
                cell += f" ({table[f'{metric} n'].iloc[i]}/{table['n'].iloc[i]})"
            cells.append(cell)
        # The study layout is a paper's table: metric names without the split prefix.
        shown[metric.removeprefix("test/") if layout == "study" else metric] = cells
    first = (table_metrics(table) or [None])[0]
    if first and table[f"{first} ci_low"].notna().any():
        # The headline's interval of the mean over seeds: whether a gap between two rows could
        # be the seeds' spread alone.
        name = first.removeprefix("test/") if layout == "study" else first
        shown[f"{name} 95% CI"] = [
            "–" if math.isnan(lo) else f"[{lo:.{digits}f}, {hi:.{digits}f}]"
            for lo, hi in zip(table[f"{first} ci_low"], table[f"{first} ci_high"])
        ]
    for key in [k for k in COST_KEYS if k in table]:
        shown[COST_HEADERS[key]] = [_cost_cell(key, v) for v in table[key]]
    delta = [c for c in table.columns if c.startswith("Δ ") and c not in ("Δ low", "Δ high")]
    if delta:
        against = table.attrs.get("against", "the reference")
        shown[f"{delta[0]} vs {against}"] = [
            "–" if math.isnan(d) else f"{d:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"
            for d, lo, hi in zip(table[delta[0]], table["Δ low"], table["Δ high"])
        ]
        for col in ("p bootstrap", "p DeLong", "p Holm"):
            if col in table:
                shown[col] = [_p_cell(p) for p in table[col]]
    return shown


def _p_cell(p: float) -> str:
    if math.isnan(p):
        return "–"
    return f"{p:.2e}" if p < 1e-3 else f"{p:.4f}"


def format_table(
    table: pd.DataFrame, fmt: str = "table", digits: int = 4, layout: str = "groups"
) -> str:
    """``csv`` keeps separate mean/std columns; ``table`` and ``markdown`` show mean ± std."""
    if fmt == "csv":
        return table.to_csv(index=False)
    shown = display_frame(table, digits, layout)
    header = [str(c) for c in shown.columns]
    body = [[str(v) for v in row] for row in shown.itertuples(index=False)]
    if fmt == "markdown":
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in body]) + "\n"
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return (
        "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in body]) + "\n"
    )
