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
  against=GROUP|RUN_ID   compare every row with this group (its key values, joined by " / ")
                         or run, on the same test records: Δ metric with its 95 % paired
                         bootstrap interval, p bootstrap, p DeLong (AUROC), p Holm (over rows)
  against_metric=M       the metric compared (default: the first of metrics)
  resamples=1000         bootstrap resamples for against=
  references=DIR|code_test
                         the CODE test set's annotators (dnn.csv: the paper's network,
                         cardiologist1.csv, …, from DIR; code_test: data/code-test) as rows
                         beside the runs, scored on the runs' exams (of dataset=code_test)
                         in the paper's metrics: code_test/f1_<class>, precision_, recall_,
                         specificity_ and macro_<stat>; runs decided at their thresholds;
                         against=dnn compares with one of them
  cd_by=KEY              critical difference of the groups over the values of KEY (e.g.
                         dataset): Friedman test, Nemenyi CD, diagram in the HTML report
  log=true               log the report to a new run ``compare-report`` (tag ecgx.report=true)
  log_to=RUN_ID          log the report's files to an existing run instead
  tracking_uri=URI       default: $MLFLOW_TRACKING_URI or sqlite:///<project>/mlflow.db
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ecgx.paths import project_root
from ecgx.tracking.compare import (
    REPORT_RUN_NAME,
    REPORT_TAG,
    compare_error,
    compare_table,
    format_table,
    search_runs,
    select_runs,
    table_keys,
    table_metrics,
)
from ecgx.tracking.report import html_report
from ecgx.tracking.significance import (
    against_columns,
    critical_difference_table,
    format_critical_difference,
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
            raise compare_error(f"--{option} {item!r}: expected KEY=VALUE")
        out.setdefault(key, []).append(value)
    return out


def _split(text: str | None) -> list[str] | None:
    return [x.strip() for x in text.split(",") if x.strip()] if text is not None else None


def _truthy(text: str) -> bool:
    if text.lower() in ("true", "1", "yes", "on"):
        return True
    if text.lower() in ("false", "0", "no", "off"):
        return False
    raise compare_error(f"log={text}: expected true or false")


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
    add("--against", metavar="GROUP|RUN_ID",
        help="compare every group with this group or run (Δ, bootstrap CI, p-values)")  # fmt: skip
    add("--against-metric", help="metric for against= (default: the first metric)")
    add("--resamples", type=int, default=1000, help="bootstrap resamples for against=")
    add("--references", metavar="DIR|code_test",
        help="the CODE test set's annotators as rows beside the runs (paper's metrics)")  # fmt: skip
    add("--cd-by", metavar="KEY", help="critical difference of the groups over KEY's values")
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

    uri = args.tracking_uri or f"sqlite:///{project_root() / 'mlflow.db'}"
    experiments = [e for item in args.experiment for e in _split(item) or []]
    runs = search_runs(uri, experiments, args.sweep, args.filter, args.status)
    names = {o.removeprefix("--").replace("-", "_") for o in options if o.startswith("--")}
    runs = select_runs(runs, _pairs(args.param, "param"), _pairs(args.tag, "tag"), names)
    logged, group_by, metrics, decisions = runs, _split(args.group_by), _split(args.metrics), None
    if args.references:
        from ecgx.tracking.references import with_references

        runs, group_by, metrics, decisions = with_references(
            runs, uri, args.references, group_by, metrics, args.layout
        )
    # With references the rows' key is chosen already (the study's too).
    layout = "groups" if args.references else args.layout
    table = compare_table(runs, group_by, metrics, layout, sort=args.sort == "metric")
    if args.against:
        table = against_columns(table, runs, uri, args.against, args.against_metric,
                                args.resamples, predictions=decisions)  # fmt: skip
    text = format_table(table, "table" if args.format == "html" else args.format, args.digits,
                        args.layout)  # fmt: skip
    print(text, end="")
    cd = None
    if args.cd_by:
        cd_metric = args.against_metric or table_metrics(table)[0]
        cd = critical_difference_table(runs, table_keys(table), args.cd_by, cd_metric)
        print(format_critical_difference(cd, cd_metric), end="")

    description = {"experiments": experiments or "all", "sweep": args.sweep or "",
                   "status": args.status, "params": dict(_pairs(args.param, "param")),
                   "tags": dict(_pairs(args.tag, "tag")), "group_by": table_keys(table),
                   "metrics": table_metrics(table), "n_runs": len(runs), "layout": args.layout,
                   "against": args.against or "", "cd_by": args.cd_by or "",
                   "references": args.references or ""}  # fmt: skip
    render = lambda: html_report(table, runs, description, args.digits, args.layout, cd=cd)  # noqa: E731
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
            if not logged and not args.log_to:
                raise compare_error("log=true: no compared MLflow run to log the report beside")
            run_id = log_report(uri, files, logged, args.log_to, description)
        print(f"report logged to MLflow run {run_id} (artifacts under report/)")
