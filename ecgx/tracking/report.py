"""The HTML comparison report of ``ecgx compare``: one self-contained file (plots embedded as
base64 PNG) with the table, each metric by group with std error bars, and the first metric
against the model's cost."""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: runs on clusters and in CI without a display

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from ecgx.evaluation.statistics import (  # noqa: E402
    CriticalDifference,
    critical_difference_diagram,
)
from ecgx.tracking.compare import (  # noqa: E402
    COST_HEADERS,
    display_frame,
    group_labels,
    lower_is_better,
    run_value,
    table_keys,
    table_metrics,
)

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1200px; }
table { border-collapse: collapse; font-size: 0.9em; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th { background: #f2f2f2; } td.key { text-align: left; font-weight: 600; }
img { max-width: 100%; margin: 0.5em 0; } .meta { color: #555; font-size: 0.9em; }
"""


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _plain(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={_plain(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return str(value)


def _std(values: pd.Series) -> list[float]:
    # One run has no spread: draw no error bar rather than a NaN one.
    return [0.0 if math.isnan(v) else float(v) for v in values]


def metric_bars(table: pd.DataFrame, metric: str) -> Any:
    """A horizontal bar per group (table order, best at the top): mean, std error bar, n."""
    labels = group_labels(table)
    means, stds = table[f"{metric} mean"], _std(table[f"{metric} std"])
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(labels) + 1.3))
    y = list(range(len(labels)))[::-1]
    ax.barh(y, means, xerr=stds, color="#4c78a8", capsize=3, height=0.6)
    ax.set_yticks(y, labels)
    for yi, m, s, n in zip(y, means, stds, table["n"]):
        if not math.isnan(m):
            # Right of the error bar, so neither hides the other.
            ax.annotate(f"{m:.3f} (n={n})", (m + s, yi), xytext=(4, 0), textcoords="offset points",
                        fontsize=8, va="center")  # fmt: skip
    finite = [m for m in means if not math.isnan(m)]
    if finite and min(finite) >= 0 and max(finite) <= 1 and not lower_is_better(metric):
        ax.set_xlim(0, 1.12)  # a score in [0, 1]: its full range, room for the labels
    better = "lower" if lower_is_better(metric) else "higher"
    ax.set(
        xlabel=f"{metric} (mean ± std, {better} is better)", ylabel=" / ".join(table_keys(table))
    )
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def cost_scatter(table: pd.DataFrame, metric: str, cost: str) -> Any:
    """The metric (mean ± std) against one cost column, a labelled point per group."""
    labels = group_labels(table)
    x, means, stds = table[cost], table[f"{metric} mean"], _std(table[f"{metric} std"])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.errorbar(x, means, yerr=stds, fmt="o", color="#e45756", capsize=3)
    for xi, m, label in zip(x, means, labels):
        if not (math.isnan(xi) or math.isnan(m)):
            ax.annotate(label, (xi, m), xytext=(5, 5), textcoords="offset points", fontsize=8)
    positive = [v for v in x if not math.isnan(v) and v > 0]
    if positive and max(positive) / min(positive) > 20:
        ax.set_xscale("log")  # model sizes span orders of magnitude
    ax.set(xlabel=COST_HEADERS[cost] if cost != "cost/parameters" else "parameters",
           ylabel=f"{metric} (mean ± std)", title=f"{metric} against model cost")  # fmt: skip
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _html_table(shown: pd.DataFrame, keys: Sequence[str]) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in shown.columns)
    rows = []
    for row in shown.itertuples(index=False):
        cells = "".join(
            f'<td class="key">{html.escape(str(v))}</td>' if c in keys
            else f"<td>{html.escape(str(v))}</td>"
            for c, v in zip(shown.columns, row)
        )  # fmt: skip
        rows.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _runs_table(runs: Sequence[Any], keys: Sequence[str], metric: str) -> str:
    rows = []
    for run in sorted(runs, key=lambda r: [run_value(r, k) for k in keys]):
        value = run.data.metrics.get(metric, math.nan)
        cells = [run.info.run_id, run.info.run_name or "", *(run_value(run, k) for k in keys),
                 "–" if math.isnan(value) else f"{value:.4f}"]  # fmt: skip
        rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["run id", "name", *keys, metric])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def html_report(
    table: pd.DataFrame,
    runs: Sequence[Any],
    description: dict[str, Any] | None = None,
    digits: int = 4,
    layout: str = "groups",
    title: str = "ecgx comparison report",
    cd: CriticalDifference | None = None,
) -> str:
    """The whole report as one HTML document, no external files; with the ``against=``
    columns when the table has them and the critical-difference diagram when ``cd`` is given."""
    metrics, keys = table_metrics(table), table_keys(table)
    shown = display_frame(table, digits, layout)
    parts = [f"<h1>{html.escape(title)}</h1>"]
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")  # noqa: UP017
    meta = [f"{len(runs)} runs in {len(table)} groups, generated {stamp}"]
    meta += [f"{k}: {_plain(v)}" for k, v in (description or {}).items() if v not in ("", [], {})]
    parts.append("<p class='meta'>" + "<br>".join(html.escape(str(m)) for m in meta) + "</p>")
    parts += ["<h2>Table</h2>", "<p class='meta'>mean ± std over the runs of each group "
              "(sample std; none for a single run), best first by the first metric.</p>",
              _html_table(shown, keys)]  # fmt: skip
    if "against" in table.attrs:
        parts.append(
            f"<p class='meta'>Δ and p against {html.escape(str(table.attrs['against']))} on "
            f"{html.escape(str(table.attrs['against_metric']))}, from the runs' per-record test "
            "predictions on the same records: Δ = mean over the row's runs − mean over the "
            "reference's, [95 % paired bootstrap interval]; p bootstrap (two-sided, null-"
            "centred); p DeLong (AUROC, record sampling); p Holm adjusts over the rows.</p>"
        )
    if cd is not None:
        parts.append("<h2>Critical difference</h2>")
        parts.append(f'<img alt="critical difference diagram" src="data:image/png;base64,'
                     f'{_png(critical_difference_diagram(cd, metrics[0]))}">')  # fmt: skip
    parts.append("<h2>Metrics by group</h2>")
    for metric in metrics:
        parts.append(f"<h3>{html.escape(metric)}</h3>")
        parts.append(f'<img alt="{html.escape(metric)} by group" '
                     f'src="data:image/png;base64,{_png(metric_bars(table, metric))}">')  # fmt: skip
    costs = [c for c in ("cost/parameters", "cost/flops_per_sample") if c in table]
    if costs:
        cost = costs[0]
        parts.append(f"<h2>{html.escape(metrics[0])} against model cost</h2>")
        parts.append(f'<img alt="{html.escape(metrics[0])} against {cost}" '
                     f'src="data:image/png;base64,{_png(cost_scatter(table, metrics[0], cost))}">')  # fmt: skip
        unknown = [g for g, v in zip(group_labels(table), table[cost]) if math.isnan(v)]
        if unknown:
            parts.append(f"<p class='meta'>not shown (no cost logged): "
                         f"{html.escape(', '.join(unknown))}</p>")  # fmt: skip
    parts += ["<h2>Runs</h2>", "<details><summary>every compared run</summary>",
              _runs_table(runs, keys, metrics[0]), "</details>"]  # fmt: skip
    body = "\n".join(parts)
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{STYLE}</style></head>\n<body>\n{body}\n</body></html>\n")  # fmt: skip
