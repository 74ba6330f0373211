"""``ecgx compare``: the comparison report of runs logged to MLflow.

Runs are selected by experiment, sweep, status, tags and params; grouped by chosen keys (by
default the overridden keys that vary, except the seed); each chosen metric is shown as
mean ± std with the run count per group, with the model's cost (parameters, FLOPs, checkpoint
size, inference time) where runs logged it. Output as a text table, markdown, CSV or a
self-contained HTML report with plots; the report can be logged to MLflow as well.

Options, as ``key=value`` (like ``ecgx train``) or ``--key value``:

  experiment=NAME        MLflow experiment (repeatable, or comma-separated; default: all)
  sweep=ID|latest        runs of one multirun
  status=FINISHED        run status (FINISHED, FAILED, RUNNING, KILLED or any)
  tag.KEY=VALUE          runs with this tag value (repeatable; repeating a key means "or")
  param.KEY=VALUE        runs with this param value; a plain KEY=VALUE means the same
  filter="..."           an extra MLflow filter string
  group_by=a,b           grouping keys (override, group choice, param or tag names)
  metrics=m1,m2          metrics (default: the test/ headline metrics, no per-class, no CIs)
  layout=groups|study    study: one row per model (choice/model), columns = the metrics
  sort=metric|group      rows best first by the first metric (default), or in group order
  format=table|markdown|csv|html     output=PATH     digits=4
  log=true               log the report to a new run ``compare-report`` (tag ecgx.report=true)
  log_to=RUN_ID          log the report's files to an existing run instead
  tracking_uri=URI       default: $MLFLOW_TRACKING_URI or sqlite:///<project>/mlflow.db
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import os
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ecgx.tracking.mlflow_run import CHOICE_PREFIX, OVERRIDES_TAG, SWEEP_TAG

DEFAULT_IGNORE = ("seed",)
REPORT_TAG = "ecgx.report"
REPORT_RUN_NAME = "compare-report"
STATUSES = ("FINISHED", "FAILED", "RUNNING", "KILLED", "SCHEDULED")
#: what ``ecgx train`` logs as params about the model's cost (see ``ecgx.train``)
COST_KEYS = ("cost/parameters", "cost/flops_per_sample", "cost/checkpoint_mb",
             "cost/inference_ms_per_record")  # fmt: skip
COST_HEADERS = {"cost/parameters": "parameters", "cost/flops_per_sample": "GFLOPs",
                "cost/checkpoint_mb": "ckpt MB", "cost/inference_ms_per_record": "ms/record"}  # fmt: skip
#: default metrics come in this order (those present), then the other test/ metrics, loss last
HEADLINE = ("test/macro_auroc", "test/fmax_ptbxl", "test/macro_auprc", "test/macro_f1",
            "test/accuracy", "test/challenge_score", "test/r2", "test/mae")  # fmt: skip
#: per-class metrics by prefix, for runs that did not log their class names (data/classes)
PER_CLASS_PREFIXES = ("auroc_", "auprc_", "f1_tuned_", "threshold_", "f1_")
LOWER_IS_BETTER = ("loss", "mae", "mse", "rmse", "error")


def _fail(message: str) -> SystemExit:
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
    return _fail(f"unknown {kind} '{key}': no selected run has it{hint}{extra}")


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
            raise _fail(f"no MLflow experiment {missing} at {tracking_uri} (known: {known})")
        ids = [e.experiment_id for e in found]
    else:
        ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)]
    clauses = []
    if status.lower() not in ("any", "all"):
        if status.upper() not in STATUSES:
            raise _fail(f"status={status}: expected one of {', '.join(STATUSES)} or any")
        clauses.append(f"attributes.status = '{status.upper()}'")
    if filter_string:
        clauses.append(filter_string)
    if sweep == "latest":
        swept = client.search_runs(ids, " and ".join([*clauses, f"tags.`{SWEEP_TAG}` != ''"]),
                                   order_by=["attributes.start_time DESC"], max_results=1)  # fmt: skip
        if not swept:
            raise _fail("no multirun (sweep) found")
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
    if "_ci_" in name:
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
    (sample std, NaN for one run), ``<metric> n`` where some runs lack the metric, and the mean
    of each ``cost/*`` param that any run logged.

    ``layout="study"`` groups by model. Rows are ordered best first by the first metric
    (descending, ascending for losses and errors); ``sort=False`` keeps the group order.
    """
    if not runs:
        raise _fail("no runs match")
    if layout == "study":
        pooled = [k for k in default_group_by(runs) if k != "model"]
        if pooled:
            # One row per model is the study's table; say what its rows average over.
            print(f"ecgx compare: layout=study pools runs that differ in {pooled}",
                  file=sys.stderr)  # fmt: skip
        group_by = ["model"]
    elif layout != "groups":
        raise _fail(f"layout={layout}: expected groups or study")
    group_by = list(group_by) if group_by is not None else default_group_by(runs)
    for key in group_by:
        if all(run_value(r, key) == "" for r in runs):
            known = set().union(*(_param_keys(r) for r in runs)) | {
                k for r in runs for k in r.data.tags if not k.startswith("mlflow.")
            }
            raise _unknown_key("group_by key", key, known)
    metrics = list(metrics) if metrics is not None else default_metrics(runs)
    if not metrics:
        raise _fail("the selected runs logged no test/ metrics: name some with metrics=...")
    for m in metrics:
        if not any(m in r.data.metrics for r in runs):
            raise _unknown_key("metric", m, {k for r in runs for k in r.data.metrics})
    costs = [k for k in COST_KEYS if any(not math.isnan(_cost(r, k)) for r in runs)]

    rows = []
    for run in runs:
        row: dict[str, Any] = {k: run_value(run, k) for k in group_by}
        row.update({m: run.data.metrics.get(m, math.nan) for m in metrics})
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
    for key in [k for k in COST_KEYS if k in table]:
        shown[COST_HEADERS[key]] = [_cost_cell(key, v) for v in table[key]]
    return shown


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


def _hydra_style(argv: list[str], options: set[str]) -> list[str]:
    """Accept ``key=value`` (as in ``ecgx train``) besides ``--key value``: ``tag.k=v`` and
    ``param.k=v`` are filters, a key that is no option is a param filter."""
    out = []
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            out.append(arg)
            continue
        key, _, value = arg.partition("=")
        prefix, dot, rest = key.partition(".")
        if dot and prefix in ("tag", "param"):
            out += [f"--{prefix}", f"{rest}={value}"]
        elif f"--{key.replace('_', '-')}" in options:
            out += [f"--{key.replace('_', '-')}", value.strip("[]")]
        else:
            out += ["--param", arg]
    return out


def _pairs(items: Sequence[str], option: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise _fail(f"--{option} {item!r}: expected KEY=VALUE")
        out.setdefault(key, []).append(value)
    return out


def _split(text: str | None) -> list[str] | None:
    return [x.strip() for x in text.split(",") if x.strip()] if text is not None else None


def _truthy(text: str) -> bool:
    if text.lower() in ("true", "1", "yes", "on"):
        return True
    if text.lower() in ("false", "0", "no", "off"):
        return False
    raise _fail(f"log={text}: expected true or false")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ecgx compare", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    add = parser.add_argument
    add("--experiment", action="append", default=[],
        help="MLflow experiment name (repeatable or comma-separated; default: all)")  # fmt: skip
    add("--sweep", help="sweep id of a multirun, or 'latest'")
    add("--status", default="FINISHED", help="run status, or 'any' (default: FINISHED)")
    add("--tag", action="append", default=[], metavar="KEY=VALUE", help="tag filter")
    add("--param", action="append", default=[], metavar="KEY=VALUE", help="param filter")
    add("--filter", default="", help="extra MLflow filter, e.g. \"params.x = '1'\"")
    add("--group-by", help="comma-separated keys (default: what varies, not seed)")
    add("--metrics", help="comma-separated metric names (default: test/ headline)")
    add("--layout", choices=["groups", "study"], default="groups")
    add("--sort", choices=["metric", "group"], default="metric",
        help="rows best first by the first metric (default), or in group order")  # fmt: skip
    add("--format", choices=["table", "markdown", "csv", "html"], default="table")
    add("--output", help="write the table (or the HTML report) to this file")
    add("--digits", type=int, default=4)
    add("--log", nargs="?", const="true", default="false",
        help="log the report to a new MLflow run 'compare-report'")  # fmt: skip
    add("--log-to", metavar="RUN_ID", help="log the report's files to this MLflow run")
    add("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"))
    return parser


def log_report(
    tracking_uri: str,
    files: Sequence[Path],
    runs: Sequence[Any],
    run_id: str | None = None,
    description: dict[str, Any] | None = None,
) -> str:
    """Log the report's files under ``report/`` of ``run_id``, or of a new run
    ``compare-report`` (tagged ``ecgx.report=true``) in the first compared run's experiment;
    returns the run id."""
    from mlflow.entities import Param, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    created = run_id is None
    if run_id is None:
        run = client.create_run(runs[0].info.experiment_id, run_name=REPORT_RUN_NAME,
                                tags={REPORT_TAG: "true"})  # fmt: skip
        run_id = run.info.run_id
        params = [Param(f"report/{k}", str(v)[:6000]) for k, v in (description or {}).items()]
        client.log_batch(run_id, params=params, tags=[
            RunTag("ecgx.report.runs", json.dumps([r.info.run_id for r in runs])[:5000])])  # fmt: skip
    for path in files:
        client.log_artifact(run_id, str(path), "report")
    if created:
        client.set_terminated(run_id, "FINISHED")
    return run_id


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    options = {s for a in parser._actions for s in a.option_strings}
    args = parser.parse_args(_hydra_style(list(sys.argv[1:] if argv is None else argv), options))

    from ecgx.paths import project_root

    uri = args.tracking_uri or f"sqlite:///{project_root() / 'mlflow.db'}"
    experiments = [e for item in args.experiment for e in _split(item) or []]
    runs = search_runs(uri, experiments, args.sweep, args.filter, args.status)
    names = {o.removeprefix("--").replace("-", "_") for o in options if o.startswith("--")}
    runs = select_runs(runs, _pairs(args.param, "param"), _pairs(args.tag, "tag"), names)
    table = compare_table(runs, _split(args.group_by), _split(args.metrics), args.layout,
                          sort=args.sort == "metric")  # fmt: skip
    text = format_table(table, "table" if args.format == "html" else args.format, args.digits,
                        args.layout)  # fmt: skip
    print(text, end="")

    from ecgx.tracking.report import html_report

    description = {"experiments": experiments or "all", "sweep": args.sweep or "",
                   "status": args.status, "params": dict(_pairs(args.param, "param")),
                   "tags": dict(_pairs(args.tag, "tag")), "group_by": table_keys(table),
                   "metrics": table_metrics(table), "n_runs": len(runs), "layout": args.layout}  # fmt: skip
    render = lambda: html_report(table, runs, description, args.digits, args.layout)  # noqa: E731
    if args.format == "html" and not args.output:
        args.output = "compare-report.html"
    if args.output:
        Path(args.output).write_text(render() if args.format == "html" else text)
        print(f"written: {args.output}")
    if args.log_to or _truthy(args.log):
        with tempfile.TemporaryDirectory() as tmp:
            files = [Path(tmp) / n for n in ("compare.html", "compare.csv", "compare.md")]
            files[0].write_text(render())
            files[1].write_text(format_table(table, "csv"))
            files[2].write_text(format_table(table, "markdown", args.digits, args.layout))
            run_id = log_report(uri, files, runs, args.log_to, description)
        print(f"report logged to MLflow run {run_id} (artifacts under report/)")
