"""``ecgx compare``: read finished runs from MLflow, group them, tabulate test metrics as
mean ± std with the run count per group."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ecgx.tracking.mlflow_run import CHOICE_PREFIX, OVERRIDES_TAG, SWEEP_TAG

DEFAULT_IGNORE = ("seed",)


def _overrides(run: Any) -> dict[str, str]:
    out = {}
    for item in json.loads(run.data.tags.get(OVERRIDES_TAG, "[]")):
        key, _, value = item.partition("=")
        out[key.lstrip("+~")] = value
    return out


def run_value(run: Any, key: str) -> str:
    """A run's value for a grouping key: command-line override, group choice, param, tag."""
    overrides = _overrides(run)
    if key in overrides:
        return overrides[key]
    params, tags = run.data.params, run.data.tags
    for source in (params.get(f"{CHOICE_PREFIX}{key}"), params.get(key), tags.get(key)):
        if source is not None:
            return source
    return ""


def search_runs(
    tracking_uri: str,
    experiments: Sequence[str] = (),
    sweep: str | None = None,
    filter_string: str = "",
) -> list[Any]:
    """Finished runs of the named experiments (all if none), of one sweep if given.

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
            raise SystemExit(f"ecgx compare: no MLflow experiment {missing} at {tracking_uri} "
                             f"(known: {known})")  # fmt: skip
        ids = [e.experiment_id for e in found]
    else:
        ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)]
    clauses = ["attributes.status = 'FINISHED'"]
    if filter_string:
        clauses.append(filter_string)
    if sweep == "latest":
        swept = client.search_runs(ids, " and ".join([*clauses, f"tags.`{SWEEP_TAG}` != ''"]),
                                   order_by=["attributes.start_time DESC"], max_results=1)  # fmt: skip
        if not swept:
            raise SystemExit("ecgx compare: no finished multirun (sweep) found")
        sweep = swept[0].data.tags[SWEEP_TAG]
    if sweep:
        clauses.append(f"tags.`{SWEEP_TAG}` = '{sweep}'")
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs(ids, " and ".join(clauses), max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def default_group_by(runs: Sequence[Any], ignore: Sequence[str] = DEFAULT_IGNORE) -> list[str]:
    """The overridden keys whose values differ across the runs, except the seed."""
    keys: list[str] = []
    for run in runs:
        keys += [k for k in _overrides(run) if k not in keys and k not in ignore]
    return [k for k in keys if len({run_value(r, k) for r in runs}) > 1]


def compare_table(
    runs: Sequence[Any],
    group_by: Sequence[str] | None = None,
    metrics: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One row per group: the group's values, ``n`` runs, ``<metric> mean`` and ``<metric> std``."""
    if not runs:
        raise SystemExit("ecgx compare: no finished runs match")
    group_by = list(group_by) if group_by is not None else default_group_by(runs)
    if metrics is None:
        found = sorted({m for r in runs for m in r.data.metrics if m.startswith("test/")})
        headline = ["test/macro_auroc", "test/macro_f1", "test/loss"]
        metrics = [m for m in headline if m in found] + [
            m for m in found if m not in headline and "/auroc_" not in m
        ]
    rows = []
    for run in runs:
        row: dict[str, Any] = {k: run_value(run, k) for k in group_by}
        row.update({m: run.data.metrics.get(m, math.nan) for m in metrics})
        rows.append(row)
    frame = pd.DataFrame(rows)
    if not group_by:
        frame["group"] = "all"
        group_by = ["group"]
    grouped = frame.groupby(group_by, sort=True, dropna=False)
    table = grouped.size().rename("n").to_frame()
    for m in metrics:
        table[f"{m} mean"] = grouped[m].mean()
        table[f"{m} std"] = grouped[m].std(ddof=1)
    return table.reset_index()


def format_table(table: pd.DataFrame, fmt: str = "table", digits: int = 4) -> str:
    """``csv`` keeps separate mean/std columns; ``table`` and ``markdown`` show mean ± std."""
    if fmt == "csv":
        return table.to_csv(index=False)
    shown = table.copy()
    for col in [c for c in table.columns if c.endswith(" mean")]:
        metric = col.removesuffix(" mean")
        std = table[f"{metric} std"]
        shown[metric] = [
            f"{m:.{digits}f} ± {s:.{digits}f}" if not math.isnan(s) else f"{m:.{digits}f}"
            for m, s in zip(table[col], std)
        ]
        shown = shown.drop(columns=[col, f"{metric} std"])
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


def _hydra_style(argv: list[str]) -> list[str]:
    """Accept ``key=value`` (as in ``ecgx train``) besides ``--key value``."""
    out = []
    for arg in argv:
        if not arg.startswith("-") and "=" in arg:
            key, _, value = arg.partition("=")
            out += [f"--{key.replace('_', '-')}", value.strip("[]")]
        else:
            out.append(arg)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="ecgx compare", description=__doc__)
    parser.add_argument("--experiment", action="append", default=[],
                        help="MLflow experiment name (repeatable; default: all)")  # fmt: skip
    parser.add_argument("--sweep", help="sweep id of a multirun, or 'latest'")
    parser.add_argument("--filter", default="", help="extra MLflow filter, e.g. \"params.x = '1'\"")
    parser.add_argument("--group-by", help="comma-separated keys (default: what varies, not seed)")
    parser.add_argument("--metrics", help="comma-separated metric names (default: test/ headline)")
    parser.add_argument("--format", choices=["table", "markdown", "csv"], default="table")
    parser.add_argument("--output", help="also write the table to this file")
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"))
    args = parser.parse_args(_hydra_style(list(sys.argv[1:] if argv is None else argv)))

    from ecgx.paths import project_root

    uri = args.tracking_uri or f"sqlite:///{project_root() / 'mlflow.db'}"
    runs = search_runs(uri, args.experiment, args.sweep, args.filter)
    split = lambda s: [x.strip() for x in s.split(",") if x.strip()] if s is not None else None  # noqa: E731
    table = compare_table(runs, split(args.group_by), split(args.metrics))
    text = format_table(table, args.format)
    print(text, end="")
    if args.output:
        Path(args.output).write_text(text)
        print(f"written: {args.output}")
