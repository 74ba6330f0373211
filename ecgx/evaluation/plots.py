"""Figures logged with a run."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: runs on clusters and in CI without a display

import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torchmetrics.functional.classification import multilabel_roc  # noqa: E402


def roc_curves(
    probs: torch.Tensor,
    targets: torch.Tensor,
    class_names: list[str],
    path: str | Path,
    title: str = "ROC curves",
    aurocs: dict[str, float] | None = None,
) -> Path:
    """One ROC curve per class on one set of axes, AUROC in the legend."""
    fpr, tpr, _ = multilabel_roc(probs, targets.int(), num_labels=len(class_names))
    fig, ax = plt.subplots(figsize=(6, 6), dpi=120)
    for i, name in enumerate(class_names):
        if targets[:, i].min() == targets[:, i].max():
            continue  # no ROC curve with a single label value
        auc = (aurocs or {}).get(name)
        label = f"{name} (AUROC {auc:.3f})" if auc is not None else name
        ax.plot(fpr[i].numpy(), tpr[i].numpy(), lw=1.6, label=label)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax.set(xlabel="False positive rate", ylabel="True positive rate", title=title)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.legend(loc="lower right", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
