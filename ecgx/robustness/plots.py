"""The robustness matrix's figure: the metric against the SNR of each additive noise."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: runs on clusters and in CI without a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def metric_vs_snr(table: pd.DataFrame, path: str | Path, title: str) -> Path | None:
    """One line per noise kind (its settings but the SNR), the metric with its bootstrap
    interval as error bars, the clean score as a dashed line; None when no row has an SNR."""
    noisy = table[np.isfinite(table["snr_db"].astype(float))]
    if noisy.empty:
        return None
    clean = table.loc[table["kind"] == "clean", "perturbed"]
    metric = str(table["metric"].iloc[0])
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for kind, rows in noisy.groupby("kind", sort=True):
        rows = rows.sort_values("snr_db")
        low = rows["perturbed"] - rows["perturbed_ci_low"]
        high = rows["perturbed_ci_high"] - rows["perturbed"]
        ax.errorbar(rows["snr_db"], rows["perturbed"], yerr=[low, high], marker="o", ms=4,
                    capsize=3, lw=1.4, label=str(kind))  # fmt: skip
    if len(clean):
        ax.axhline(float(clean.iloc[0]), color="black", ls="--", lw=1, label="clean")
    ax.set(xlabel="SNR (dB, against each record's clean power)", ylabel=metric, title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
