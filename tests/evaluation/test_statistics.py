"""The statistics of ``ecgx compare``: DeLong against an O(m·n) implementation written here from
the paper, identical predictions, Holm, the interval over seeds, Friedman/Nemenyi."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from ecgx.evaluation import statistics as st
from ecgx.evaluation.metrics import ranking_metrics


def _delong_from_the_paper(y: np.ndarray, scores: list[np.ndarray]) -> tuple[np.ndarray, float]:
    """DeLong, DeLong & Clarke-Pearson (1988), eqs. as printed: the kernel ψ(X, Y) = 1, ½, 0 for
    X > Y, X = Y, X < Y over every (positive X, negative Y) pair; V10(X_i) = mean_j ψ(X_i, Y_j),
    V01(Y_j) = mean_i ψ(X_i, Y_j); S10, S01 their sample covariance matrices (over positives,
    over negatives); var(θ̂_a − θ̂_b) = L (S10/m + S01/n) Lᵀ with L = (1, −1). Returns the
    AUROCs and the two-sided p of z = (θ̂_a − θ̂_b) / sqrt(var)."""
    pos, neg = y == 1, y == 0
    v10, v01 = [], []
    for s in scores:
        x, yy = s[pos][:, None], s[neg][None, :]
        psi = (x > yy) + 0.5 * (x == yy)
        v10.append(psi.mean(axis=1))
        v01.append(psi.mean(axis=0))
    theta = np.array([v.mean() for v in v10])
    s10, s01 = np.cov(np.array(v10)), np.cov(np.array(v01))
    contrast = np.array([1.0, -1.0])
    var = contrast @ (s10 / pos.sum() + s01 / neg.sum()) @ contrast
    z = (theta[0] - theta[1]) / np.sqrt(var)
    return theta, float(2 * stats.norm.sf(abs(z)))


@pytest.fixture(scope="module")
def case() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """300 records, 3 nested classes (a record of the rarest has the other two) and model a's
    errors shared across classes, so per-class AUROCs covary; scores rounded: ties occur."""
    rng = np.random.default_rng(7)
    y = (rng.random(300)[:, None] < [0.3, 0.4, 0.2]).astype(int)
    shared = rng.normal(size=(300, 1))
    a = np.round(1 / (1 + np.exp(-(1.4 * y + shared + 0.5 * rng.normal(size=y.shape)))), 2)
    b = np.round(1 / (1 + np.exp(-(0.9 * y + 0.5 * rng.normal(size=y.shape)))), 2)
    return y, a, b


def test_delong_equals_the_papers_estimator_on_a_fixed_case(case: tuple) -> None:
    y, a, b = case
    for k in range(3):
        theta, p = _delong_from_the_paper(y[:, k], [a[:, k], b[:, k]])
        result = st.delong_test(y[:, k], a[:, k], b[:, k])
        assert (result.auroc_a, result.auroc_b) == pytest.approx(tuple(theta), abs=1e-12)
        assert result.p_value == pytest.approx(p, rel=1e-9)
        assert 0 < result.p_value < 1


def test_macro_delong_variance_agrees_with_the_paired_bootstrap(case: tuple) -> None:
    """The macro test pools classes through shared records; its standard error must match the
    bootstrap's spread of the same difference (a wrong cross-class term would not)."""
    y, a, b = case
    result = st.delong_test(y, a, b)
    # torchmetrics computes in float32 internally: agreement to 1e-6, not to float64.
    assert result.auroc_a == pytest.approx(float(ranking_metrics(y, a)["macro_auroc"]), abs=1e-6)
    rng = np.random.default_rng(0)
    deltas = []
    for _ in range(1500):
        i = rng.integers(0, len(y), len(y))
        deltas.append(st.fast_macro_auroc(y[i], a[i]) - st.fast_macro_auroc(y[i], b[i]))
    assert result.se == pytest.approx(np.std(deltas, ddof=1), rel=0.1)
    # Per-class variances alone (no covariance between classes) would fall well short.
    alone = np.sqrt(sum(st.delong_test(y[:, k], a[:, k], b[:, k]).se ** 2 for k in range(3)) / 9)
    assert alone < 0.85 * np.std(deltas, ddof=1)
    boot = st.paired_bootstrap(st.fast_macro_auroc, y, [a], [b], n_resamples=300)
    # The vectorised resampling gives what scoring each resample on its own gives, with ties,
    # and (12 records) with classes that some resamples leave without a positive.
    for n, count in ((len(y), 20), (12, 200)):
        draws = st.bootstrap_draws(n, count, seed=3)
        looped = [st.fast_macro_auroc(y[:n][i], a[:n][i]) for i in draws]
        vectorised = st.resampled_metric(st.fast_macro_auroc, y[:n], a[:n], draws)[1]
        assert np.allclose(vectorised, looped, equal_nan=True)
    assert boot.difference == pytest.approx(result.difference, abs=1e-12)
    assert boot.low < boot.difference < boot.high


def test_identical_predictions_give_p_one_and_reordering_changes_nothing(case: tuple) -> None:
    y, a, b = case
    same = st.delong_test(y, a, a.copy())
    assert (same.difference, same.p_value) == (0.0, 1.0)
    boot = st.paired_bootstrap(st.fast_macro_auroc, y, [a], [a.copy()], n_resamples=50)
    assert (boot.difference, boot.p_value, boot.low, boot.high) == (0.0, 1.0, 0.0, 0.0)
    order = np.random.default_rng(1).permutation(len(y))
    shuffled = st.delong_test(y[order], a[order], b[order])
    assert shuffled.p_value == pytest.approx(st.delong_test(y, a, b).p_value, rel=1e-12)


def test_holm_on_a_known_case() -> None:
    # Sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1: 0.02, 0.03, 0.06, 0.04 -> running max
    # 0.02, 0.03, 0.06, 0.06; NaN is no member of the family.
    adjusted = st.holm([0.01, 0.04, np.nan, 0.03, 0.005])
    assert adjusted[[0, 1, 3, 4]] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert np.isnan(adjusted[2])
    assert st.holm([0.6, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1


def test_interval_of_the_mean_over_seeds() -> None:
    low, high = st.mean_interval([1.0, 2.0, 3.0])
    half = 4.302653 / np.sqrt(3)  # t(0.975, 2 df) from a printed table, sd = 1
    assert (low, high) == pytest.approx((2 - half, 2 + half), abs=1e-5)
    assert all(np.isnan(st.mean_interval([0.8])))


def test_critical_difference_ranks_friedman_and_nemenyi() -> None:
    # 4 datasets × 3 models; model "c" best everywhere, "a" and "b" swap places once.
    scores = np.array([[0.7, 0.8, 0.9], [0.6, 0.5, 0.9], [0.7, 0.75, 0.8], [0.6, 0.65, 0.7]])
    result = st.critical_difference(scores, ["a", "b", "c"])
    assert result.average_ranks == pytest.approx([(3 + 2 + 3 + 3) / 4, (2 + 3 + 2 + 2) / 4, 1])
    assert result.friedman_p == pytest.approx(stats.friedmanchisquare(*scores.T).pvalue)
    # Demšar (2006), table 5: q_0.05 = 2.343 for 3 classifiers.
    assert result.cd == pytest.approx(2.343 * np.sqrt(3 * 4 / (6 * 4)), abs=2e-3)
    fig = st.critical_difference_diagram(result, "macro AUROC")
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert any(t.startswith("c (1.00)") for t in texts) and any("CD =" in t for t in texts)
    with pytest.raises(ValueError, match="2 datasets"):
        st.critical_difference(scores[:1], ["a", "b", "c"])
