"""Metrics on small cases worked by hand or checked against scikit-learn (an independent
implementation, used in tests only)."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from ecgx.evaluation import metrics as M
from ecgx.evaluation.metrics import multilabel_metrics


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
    from ecgx.evaluation.metrics import regression_metrics

    targets = torch.tensor([[1.0, 0.0], [2.0, 1.0], [3.0, 2.0], [4.0, 3.0]])
    preds = torch.tensor([[1.0, 0.5], [2.0, 0.5], [3.0, 2.5], [4.0, 2.5]])
    m = regression_metrics(preds, targets, ["a", "b"])
    assert math.isclose(m["mae_a"], 0.0, abs_tol=1e-7) and math.isclose(m["r2_a"], 1.0)
    # b: every error 0.5 -> MAE 0.5; SSE 1.0, SST 5.0 -> R² 0.8
    assert math.isclose(m["mae_b"], 0.5, abs_tol=1e-6)
    assert math.isclose(m["r2_b"], 0.8, abs_tol=1e-6)
    assert math.isclose(m["r2"], 0.9, abs_tol=1e-6) and math.isclose(m["mae"], 0.25, abs_tol=1e-6)


# ---------------------------------------------------------------------------------------------
# The seed studies' metrics, each against an independent computation (scikit-learn or by hand).
# ---------------------------------------------------------------------------------------------


# Six records, four classes; class 3 has no positive (undefined AUROC/AUPRC). Ties and a score
# exactly 0.5 are there on purpose.
Y = np.array([[1, 0, 1, 0], [0, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0], [0, 1, 1, 0]])
P = np.array([
    [0.9, 0.2, 0.6, 0.1],
    [0.3, 0.8, 0.5, 0.4],
    [0.5, 0.4, 0.2, 0.7],
    [0.2, 0.1, 0.9, 0.2],
    [0.7, 0.5, 0.3, 0.6],
    [0.5, 0.9, 0.4, 0.3],
])  # fmt: skip


def test_ranking_metrics_match_sklearn_and_leave_out_undefined(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="ecgx.evaluation.metrics"):
        m = M.ranking_metrics(Y, P, ["A", "B", "C", "D"])
    assert "['D']" in caplog.text
    assert np.isnan(m["auroc_per_class"][3]) and np.isnan(m["auprc_per_class"][3])
    for k in range(3):
        assert m["auroc_per_class"][k] == pytest.approx(roc_auc_score(Y[:, k], P[:, k]), abs=1e-6)
        assert m["auprc_per_class"][k] == pytest.approx(
            average_precision_score(Y[:, k], P[:, k]), abs=1e-6
        )
    d = slice(0, 3)
    assert m["macro_auroc"] == pytest.approx(roc_auc_score(Y[:, d], P[:, d]), abs=1e-6)
    assert m["micro_auroc"] == pytest.approx(
        roc_auc_score(Y[:, d], P[:, d], average="micro"), abs=1e-6
    )
    assert m["macro_auprc"] == pytest.approx(average_precision_score(Y[:, d], P[:, d]), abs=1e-6)
    assert m["micro_auprc"] == pytest.approx(
        average_precision_score(Y[:, d], P[:, d], average="micro"), abs=1e-6
    )


# Two records, three classes. Worked by hand below.
FY = np.array([[1, 0, 0], [0, 1, 1]])
FP = np.array([[0.9, 0.5, 0.0], [0.2, 0.6, 0.55]])


def test_fmax_samples_by_hand() -> None:
    # Grid t = 0, 1/9, ..., 1 (decision p >= t). Per record P = hits/|pred|, R = hits/|true|.
    # t=0:            r0 pred 3 hits 1 (P 1/3, R 1); r1 pred 3 hits 2 (P 2/3, R 1)
    #                 -> P 1/2, R 1 -> F 2/3
    # t=1/9:          r0 {.9,.5} (P 1/2); r1 {.2,.6,.55} (P 2/3) -> P 7/12, R 1 -> F 14/19
    # t=2/9..4/9:     r0 {.9,.5} (P 1/2, R 1); r1 {.6,.55} (P 1, R 1) -> P 3/4, R 1 -> F 6/7
    # t=5/9 (.556):   r0 {.9} (P 1, R 1); r1 {.6} (.55 < .556; P 1, R 1/2) -> P 1, R 3/4 -> F 6/7
    # t=6/9..8/9:     r0 {.9}; r1 nothing -> skipped for P: P 1, R (1 + 0)/2 -> F 2/3
    # t=1:            nothing predicted anywhere -> no precision, skipped.
    # Max: 6/7.
    assert M.fmax_samples(FY, FP) == pytest.approx(6 / 7)
    # The nanmean rule alone: at t = 0.7 record 1 predicts nothing and is left out of the
    # precision (P = 1, R = 1/2 -> F 2/3); counting it as precision 0 would give 1/2.
    assert M.fmax_samples(FY, FP, thresholds=np.array([0.7])) == pytest.approx(2 / 3)


def test_fmax_ptbxl_by_hand_differs_from_imle_grid() -> None:
    # The 0.01 grid has t = 0.51..0.55: r0 {.9} (P 1, R 1), r1 {.6,.55} (P 1, R 1) -> F 1,
    # which the 10-point grid above misses (its best is 6/7).
    assert M.fmax_ptbxl(FY, FP) == pytest.approx(1.0)
    assert M.fmax_samples(FY, FP) < M.fmax_ptbxl(FY, FP)


def test_mean_accuracy_matches_sklearn_with_ge_rule() -> None:
    expected = np.mean([accuracy_score(Y[:, k], P[:, k] >= 0.5) for k in range(4)])
    assert M.mean_accuracy(Y, P) == pytest.approx(expected, abs=1e-6)
    # p == 0.5 counts as positive: with '>' the mean would differ on this set.
    assert not np.isclose(expected, np.mean([accuracy_score(Y[:, k], P[:, k] > 0.5)
                                             for k in range(4)]))  # fmt: skip


def test_f1_at_thresholds_matches_sklearn() -> None:
    t = np.array([0.5, 0.5, 0.5, 0.5])
    m = M.f1_at_thresholds(Y, P, t)
    pred = np.greater_equal(P, t)
    f1 = f1_score(Y, pred, average=None, zero_division=0)
    np.testing.assert_allclose(m["f1"], f1, atol=1e-6)
    np.testing.assert_allclose(
        m["precision"], precision_score(Y, pred, average=None, zero_division=0), atol=1e-6
    )
    np.testing.assert_allclose(
        m["recall"], recall_score(Y, pred, average=None, zero_division=0), atol=1e-6
    )
    assert m["macro_f1"] == pytest.approx(f1_score(Y, pred, average="macro", zero_division=0))


def test_tune_thresholds_matches_sklearn_search() -> None:
    rng = np.random.default_rng(1)
    y = (rng.random((60, 3)) < 0.4).astype(int)
    p = np.clip(0.35 * y + 0.65 * rng.random((60, 3)), 0, 1)
    grid = np.linspace(0, 1, 100)
    t = M.tune_thresholds(y, p, grid)
    for k in range(3):
        # The seed's own search: sklearn F1 of 'score > t', first maximum.
        f1s = [f1_score(y[:, k], p[:, k] > g, zero_division=0) for g in grid]
        assert t[k] == grid[int(np.argmax(f1s))]
    # '>' during tuning: scores exactly on a grid point are negatives at that point.
    y1 = np.array([[1], [0], [1]])
    p1 = np.array([[0.5], [0.2], [0.5]])
    t1 = M.tune_thresholds(y1, p1, np.array([0.2, 0.5]))
    assert t1[0] == 0.2  # at 0.5 nothing is '> 0.5' (F1 0); at 0.2 both positives are (F1 1)


def test_multiclass_metrics_match_sklearn(caplog) -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 4, 50)
    logits = rng.normal(size=(50, 4)) + 1.5 * np.eye(4)[y]
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    m = M.multiclass_metrics(y, p, ["AFIB", "GSVT", "SB", "SR"])
    pred = p.argmax(1)
    assert m["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"), abs=1e-6)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred), abs=1e-6)
    assert m["macro_auroc"] == pytest.approx(
        roc_auc_score(y, p, multi_class="ovr", average="macro"), abs=1e-6
    )
    np.testing.assert_array_equal(m["confusion_matrix"], confusion_matrix(y, pred, labels=range(4)))
    for k, name in enumerate(["AFIB", "GSVT", "SB", "SR"]):
        assert m[f"f1_{name}"] == pytest.approx(f1_score(y == k, pred == k), abs=1e-6)
    # A class absent from the targets has no AUROC: NaN, left out of the macro, warned about.
    y3 = np.where(y == 3, 0, y)
    with caplog.at_level(logging.WARNING, logger="ecgx.evaluation.metrics"):
        m3 = M.multiclass_metrics(y3, p, ["AFIB", "GSVT", "SB", "SR"])
    assert math.isnan(m3["auroc_SR"]) and "SR" in caplog.text
    by_hand = np.mean([roc_auc_score(y3 == k, p[:, k]) for k in range(3)])
    assert m3["macro_auroc"] == pytest.approx(by_hand, abs=1e-6)


def _auroc_a(y: np.ndarray, p: np.ndarray) -> float:
    return float(M.ranking_metrics(y, p)["auroc_per_class"][0])


def test_bootstrap_is_deterministic_and_contains_the_point() -> None:
    rng = np.random.default_rng(3)
    y = (rng.random((200, 2)) < 0.3).astype(int)
    p = np.clip(0.3 * y + 0.7 * rng.random((200, 2)), 0, 1)
    a = M.bootstrap_ci(_auroc_a, y, p, n_resamples=200, seed=0)
    b = M.bootstrap_ci(_auroc_a, y, p, n_resamples=200, seed=0)
    c = M.bootstrap_ci(_auroc_a, y, p, n_resamples=200, seed=1)
    assert tuple(a) == tuple(b) and a.n_used == 200
    assert (c.low, c.high) != (a.low, a.high)
    point, low, high = a
    assert point == pytest.approx(roc_auc_score(y[:, 0], p[:, 0]), abs=1e-6)
    assert low < point < high
    # The same interval recomputed independently from the documented draws.
    draws = np.random.default_rng(0)
    stats = []
    for _ in range(200):
        idx = draws.integers(0, 200, size=200)
        stats.append(roc_auc_score(y[idx, 0], p[idx, 0]))
    np.testing.assert_allclose([low, high], np.quantile(stats, [0.025, 0.975]), atol=1e-6)


def test_bootstrap_skips_undefined_resamples(caplog) -> None:
    # One positive in 20 records: about (19/20)^20 = 36% of resamples miss it -> AUROC NaN.
    y = np.zeros((20, 1), dtype=int)
    y[0] = 1
    p = np.linspace(0, 1, 20)[::-1, None]
    with caplog.at_level(logging.WARNING):
        ci = M.bootstrap_ci(_auroc_a, y, p, n_resamples=300, seed=0)
    assert 100 < ci.n_used < 300 and ci.n_resamples == 300
    assert "undefined" in caplog.text
    # Every defined resample ranks the positive first (torchmetrics works in float32).
    assert (ci.point, ci.low, ci.high) == pytest.approx((1.0, 1.0, 1.0), abs=1e-6)
    # A metric that raises ValueError when undefined (as older scikit-learn's roc_auc_score did
    # for "only one class present") is skipped on the same resamples.

    def strict_auroc(t: np.ndarray, s: np.ndarray) -> float:
        if t[:, 0].min() == t[:, 0].max():
            raise ValueError("only one class present")
        return float(roc_auc_score(t[:, 0], s[:, 0]))

    ci2 = M.bootstrap_ci(strict_auroc, y, p, 300, seed=0)
    assert ci2.n_used == ci.n_used


def test_vectorised_bootstrap_equals_the_one_resample_at_a_time_loop(caplog) -> None:
    from ecgx.evaluation.scoring import metric_function

    rng = np.random.default_rng(5)
    n = 150
    y = (rng.random((n, 4)) < [0.4, 0.1, 0.02, 0.5]).astype(int)
    y[:, 3] = 1  # no negative: undefined in every resample, left out of each macro
    # Rounded scores: ties inside and across the classes' positives and negatives.
    p = np.round(np.clip(0.25 * y + 0.75 * rng.random((n, 4)), 0, 1), 1)
    q = np.round(np.clip(p + 0.2 * rng.standard_normal((n, 4)), 0, 1), 2)
    fast = metric_function("multilabel", "macro_auroc", ["a", "b", "c", "d"])
    assert fast.resampled is not None
    draws = np.stack([rng.integers(0, n, size=n) for _ in range(40)])
    by_loop = [float(M.ranking_metrics(y[d], p[d])["macro_auroc"]) for d in draws]
    by_hand = [np.mean([roc_auc_score(y[d, k], p[d, k]) for k in range(3)
                        if 0 < y[d, k].sum() < n]) for d in draws]  # fmt: skip
    np.testing.assert_allclose(fast.resampled(y, p, draws), by_loop, atol=1e-6)
    np.testing.assert_allclose(fast.resampled(y, p, draws), by_hand, atol=1e-12)
    # Through bootstrap_ci, in blocks smaller than the resamples: the same interval as the loop.
    slow = lambda t, s: fast(t, s)  # noqa: E731 - the same metric without its vectorised form
    old_block = M.RESAMPLE_BLOCK_ELEMENTS
    try:
        M.RESAMPLE_BLOCK_ELEMENTS = 7 * n  # 7 resamples a block
        a = M.bootstrap_ci(fast, y, p, n_resamples=60, seed=2)
        b = M.bootstrap_ci(slow, y, p, n_resamples=60, seed=2)
        # Resampled values of two outputs with one seed are paired: their difference is the
        # paired bootstrap of the difference, computed one resample at a time.
        both = np.stack([p, q], axis=1)
        diff = -(M.bootstrap_values(fast, y, p, 60, seed=2) - M.bootstrap_values(fast, y, q, 60, 2))
        d_fast = M.percentile_interval(-(fast(y, p) - fast(y, q)), diff)
        d_slow = M.bootstrap_ci(lambda t, s: -(fast(t, s[:, 0]) - fast(t, s[:, 1])), y, both,
                                60, seed=2)  # fmt: skip
    finally:
        M.RESAMPLE_BLOCK_ELEMENTS = old_block
    np.testing.assert_allclose(tuple(a), tuple(b), atol=1e-6)
    assert a.n_used == b.n_used == 60
    np.testing.assert_allclose(tuple(d_fast), tuple(d_slow), atol=1e-6)
    assert d_fast.point != 0
    # A resample where no class is defined is NaN in both forms, and skipped alike.
    one = np.zeros((20, 1), dtype=int)
    one[0] = 1
    scores = np.linspace(0, 1, 20)[::-1, None]
    single = metric_function("multilabel", "macro_auroc", ["a"])
    got = M.bootstrap_ci(single, one, scores, n_resamples=100, seed=0)
    want = M.bootstrap_ci(lambda t, s: single(t, s), one, scores, n_resamples=100, seed=0)
    assert 20 < got.n_used == want.n_used < 100


def test_evaluate_split_names_every_seed_metric_and_the_challenge_score() -> None:
    from ecgx.evaluation.challenge import challenge_score
    from ecgx.evaluation.metrics import (
        bootstrap_intervals,
        evaluate_split,
        fmax_ptbxl,
        tune_thresholds,
    )

    rng = np.random.default_rng(0)
    names = ["426783006", "164889003", "270492004"]  # SR, AF, IAVB (2021 scored codes)
    y = (rng.random((120, 3)) < 0.4).astype(int)
    p = np.clip(0.5 * y + 0.6 * rng.random((120, 3)), 0, 1)
    t = tune_thresholds(y, p)
    m = evaluate_split("multilabel", p, y, names, thresholds=t, challenge_edition=2021)
    assert m["fmax_ptbxl"] == pytest.approx(fmax_ptbxl(y, p))
    assert m["threshold_164889003"] == pytest.approx(t[1])
    decisions = p >= 0.5
    decisions[np.arange(120), p.argmax(1)] = True
    assert m["challenge_score"] == pytest.approx(challenge_score(y, decisions, names, 2021))
    assert {"f_beta", "g_beta", "macro_f1_tuned", "mean_accuracy", "auprc_426783006"} <= set(m)
    from ecgx.evaluation.challenge import official_f_measure_and_accuracy

    official = official_f_measure_and_accuracy(y, decisions, names, 2021)
    assert m["challenge_f_measure"] == pytest.approx(official["f_measure"])
    assert m["challenge_accuracy"] == pytest.approx(official["accuracy"])
    assert "challenge_f_measure" not in evaluate_split("multilabel", p, y, names)
    ci = bootstrap_intervals("multilabel", p, y, names, n_resamples=50, seed=1, thresholds=t)
    assert ci == bootstrap_intervals("multilabel", p, y, names, n_resamples=50, seed=1,
                                     thresholds=t)  # fmt: skip
    assert ci["macro_auroc_ci_low"] < m["macro_auroc"] < ci["macro_auroc_ci_high"]
    single = evaluate_split("multiclass", p, np.eye(3)[p.argmax(1)], names)
    assert single["accuracy"] == 1.0 and "f1_426783006" in single


def test_print_metrics_puts_intervals_beside_and_classes_in_columns(capsys) -> None:
    metrics = {"test/macro_auroc": 0.81, "test/macro_auroc_ci_low": 0.78,
               "test/macro_auroc_ci_high": 0.84, "test/auroc_MI": 0.7, "test/auroc_NORM": 0.9,
               "test/f1_tuned_MI": 0.5, "test/f1_MI": 0.4, "val/macro_auroc": 0.99}  # fmt: skip
    M.print_metrics(metrics, "Test metrics:", ["MI", "NORM"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "Test metrics:"
    assert lines[1].split() == ["macro_auroc", "0.8100", "(95", "%", "CI", "0.7800-0.8400)"]
    assert lines[2].split() == ["per", "class", "MI", "NORM"]
    rows = {ln.split()[0]: ln.split()[1:] for ln in lines[3:]}
    assert rows == {"auroc": ["0.7000", "0.9000"], "f1": ["0.4000"], "f1_tuned": ["0.5000"]}
    assert "0.99" not in "".join(lines)  # val/ metrics are not test metrics


def test_whole_split_metrics_are_float64_and_equal_sklearn() -> None:
    # float32 probabilities, as the model gives them: torchmetrics alone was 1e-8 off sklearn.
    rng = np.random.default_rng(0)
    y = (rng.random((4000, 4)) < 0.3).astype(int)
    p = np.clip(0.1 * y + rng.random((4000, 4)), 0, 1).astype(np.float32)
    m = M.ranking_metrics(y, p)
    assert abs(m["macro_auroc"] - roc_auc_score(y, p.astype(np.float64))) < 1e-14
    assert abs(m["macro_auprc"] - average_precision_score(y, p.astype(np.float64))) < 1e-14
    assert abs(m["micro_auroc"] - roc_auc_score(y.ravel(), p.ravel().astype(np.float64))) < 1e-14
    assert torch.get_default_dtype() == torch.float32  # restored after the call
