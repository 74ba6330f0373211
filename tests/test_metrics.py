"""Metrics on small cases worked by hand."""

from __future__ import annotations

import math

import torch

from ecgx.metrics import multilabel_metrics


def test_macro_auroc_leaves_out_undefined_classes() -> None:
    # Class A: the textbook case, AUROC 0.75 (3 of 4 positive/negative pairs ordered right).
    # Class B: perfectly separated, AUROC 1. Class C: no positive at all, AUROC undefined.
    probs = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.1, 0.6], [0.35, 0.7, 0.2], [0.8, 0.9, 0.1]])
    targets = torch.tensor([[0, 0, 0], [0, 0, 0], [1, 1, 0], [1, 1, 0]])
    m = multilabel_metrics(probs, targets, ["A", "B", "C"])
    assert math.isclose(m["auroc_A"], 0.75, abs_tol=1e-6)
    assert math.isclose(m["auroc_B"], 1.0, abs_tol=1e-6)
    assert math.isnan(m["auroc_C"])
    assert math.isclose(m["macro_auroc"], 0.875, abs_tol=1e-6)  # not (0.75 + 1 + 0) / 3


def test_macro_f1_at_one_half() -> None:
    probs = torch.tensor([[0.9, 0.2], [0.6, 0.7], [0.1, 0.8], [0.4, 0.3]])
    targets = torch.tensor([[1, 0], [0, 1], [0, 1], [1, 1]])
    # A: TP 1 (row 0), FP 1 (row 1), FN 1 (row 3) -> F1 0.5; B: TP 2, FN 1 -> F1 0.8.
    m = multilabel_metrics(probs, targets, ["A", "B"])
    assert math.isclose(m["macro_f1"], (0.5 + 0.8) / 2, abs_tol=1e-6)
