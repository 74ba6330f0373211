"""Metrics computed from whole-split predictions (probabilities and multi-hot targets).

torchmetrics computes each number; what is written here is only the rule torchmetrics does not
have: a class with no positive (or no negative) in the evaluated set has no AUROC, so it is
reported as undefined (NaN) and left out of the macro average instead of counting as 0.
"""

from __future__ import annotations

import logging

import torch
from torchmetrics.functional import mean_absolute_error, r2_score
from torchmetrics.functional.classification import (
    multilabel_auroc,
    multilabel_f1_score,
)

log = logging.getLogger(__name__)


def multilabel_metrics(
    probs: torch.Tensor, targets: torch.Tensor, class_names: list[str]
) -> dict[str, float]:
    """``macro_auroc``, ``macro_f1`` (at 0.5) and ``auroc_<class>`` for every class."""
    targets = targets.int()
    num_labels = targets.shape[1]
    per_class = multilabel_auroc(probs, targets, num_labels=num_labels, average=None)
    positives = targets.sum(0)
    defined = (positives > 0) & (positives < targets.shape[0])
    per_class = torch.where(defined, per_class, torch.full_like(per_class, float("nan")))
    undefined = [class_names[i] for i in torch.nonzero(~defined).flatten().tolist()]
    if undefined:
        log.warning(
            "AUROC undefined (one label value only) for %s: left out of the macro", undefined
        )
    out = {
        "macro_auroc": float(per_class[defined].mean()) if defined.any() else float("nan"),
        "macro_f1": float(
            multilabel_f1_score(probs, targets, num_labels=num_labels, average="macro")
        ),
    }
    for name, value in zip(class_names, per_class.tolist()):
        out[f"auroc_{name}"] = value
    return out


def regression_metrics(
    preds: torch.Tensor, targets: torch.Tensor, names: list[str]
) -> dict[str, float]:
    """``mae`` and ``r2`` (means over targets) and ``mae_<name>`` / ``r2_<name>`` per target."""
    mae = torch.stack([mean_absolute_error(preds[:, i], targets[:, i])
                       for i in range(targets.shape[1])])  # fmt: skip
    r2 = r2_score(preds, targets, multioutput="raw_values").reshape(-1)
    out = {"mae": float(mae.mean()), "r2": float(r2.mean())}
    for name, m, r in zip(names, mae.tolist(), r2.tolist()):
        out[f"mae_{name}"] = m
        out[f"r2_{name}"] = r
    return out
