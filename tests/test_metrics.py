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


def test_regression_metrics_by_hand() -> None:
    from ecgx.metrics import regression_metrics

    targets = torch.tensor([[1.0, 0.0], [2.0, 1.0], [3.0, 2.0], [4.0, 3.0]])
    preds = torch.tensor([[1.0, 0.5], [2.0, 0.5], [3.0, 2.5], [4.0, 2.5]])
    m = regression_metrics(preds, targets, ["a", "b"])
    assert math.isclose(m["mae_a"], 0.0, abs_tol=1e-7) and math.isclose(m["r2_a"], 1.0)
    # b: every error 0.5 -> MAE 0.5; SSE 1.0, SST 5.0 -> R² 0.8
    assert math.isclose(m["mae_b"], 0.5, abs_tol=1e-6)
    assert math.isclose(m["r2_b"], 0.8, abs_tol=1e-6)
    assert math.isclose(m["r2"], 0.9, abs_tol=1e-6) and math.isclose(m["mae"], 0.25, abs_tol=1e-6)
