"""Statistics for comparing models on the same test records, and across seeds and datasets.

* :func:`delong_test` — DeLong, DeLong & Clarke-Pearson (1988) test of two correlated AUROCs,
  computed with the midrank algorithm of Sun & Xu (2014), O(n log n); :func:`auroc_components`
  gives its structural components per record so that a *macro* AUROC (mean over classes) and
  the mean over several runs (seeds) are tested the same way (:func:`delong_difference`).
* :func:`paired_bootstrap` — the difference of any metric between two sets of runs on one
  resampling of the shared records, with a percentile interval and a two-sided p-value.
* :func:`holm` — Holm's step-down adjustment of a family of p-values.
* :func:`mean_interval` — Student-t interval of a mean over seeds.
* :func:`critical_difference` — Friedman test of several models over several datasets/tasks,
  Nemenyi critical difference (Demšar 2006), and :func:`critical_difference_diagram`.

Written here because none of the installed libraries has them: scipy has the Friedman test and
the studentized range distribution (used below) but no DeLong, no Holm (only Benjamini-Hochberg
in ``false_discovery_control``) and no Nemenyi; torchmetrics and MLflow have none of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


# ---------------------------------------------------------------------------------------------
# DeLong
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AurocComponents:
    """A (macro) AUROC and its per-record influence ψ: var(AUROC) = Σ_r ψ_r² (DeLong)."""

    auroc: float
    influence: np.ndarray  # (n_records,)


def _class_components(y: np.ndarray, score: np.ndarray) -> tuple[float, np.ndarray]:
    """AUROC of one class and DeLong's structural components as one per-record vector.

    Sun & Xu's midranks: V10 of a positive is the fraction of negatives it outranks (ties count
    half), V01 of a negative the fraction of positives that outrank it. DeLong's variance
    S10/m + S01/n (sample variances, ddof 1) equals the sum of squares of
    (V10 − AUC)/sqrt(m(m−1)) over positives and (V01 − AUC)/sqrt(n(n−1)) over negatives.
    """
    pos, neg = y == 1, y == 0
    m, n = int(pos.sum()), int(neg.sum())
    ranks = stats.rankdata(score)
    ranks_pos, ranks_neg = stats.rankdata(score[pos]), stats.rankdata(score[neg])
    v10 = (ranks[pos] - ranks_pos) / n
    v01 = 1.0 - (ranks[neg] - ranks_neg) / m
    auc = float(v10.mean())
    psi = np.zeros(len(y))
    psi[pos] = (v10 - auc) / np.sqrt(m * max(m - 1, 1))
    psi[neg] = (v01 - auc) / np.sqrt(n * max(n - 1, 1))
    return auc, psi


def defined_classes(targets: np.ndarray) -> np.ndarray:
    """Columns with both a positive and a negative: the classes that have an AUROC."""
    positives = np.asarray(targets).sum(axis=0)
    return (positives > 0) & (positives < len(targets))


def auroc_components(targets: np.ndarray, probs: np.ndarray) -> AurocComponents:
    """Macro AUROC (mean over the classes that have one, as ``test/macro_auroc``) of
    ``probs`` (records × classes) and its per-record influence.

    The macro AUROC is a mean of per-class AUROCs estimated on the same records, so its
    influence is the mean of the per-class ones and its variance Σ_r ψ_r² counts the covariance
    between classes through the records they share. With one class this is DeLong's estimator
    exactly; for a mean over classes it is the same asymptotic (influence-function) estimator.
    """
    targets = np.asarray(targets).astype(int).reshape(len(targets), -1)
    probs = np.asarray(probs, dtype=float).reshape(len(probs), -1)
    defined = defined_classes(targets)
    if not defined.any():
        raise ValueError("no class has both a positive and a negative record: no AUROC")
    parts = [_class_components(targets[:, k], probs[:, k]) for k in np.flatnonzero(defined)]
    auc = float(np.mean([a for a, _ in parts]))
    return AurocComponents(auc, np.mean([psi for _, psi in parts], axis=0))


@dataclass(frozen=True)
class DelongResult:
    """AUROC of A and B, their difference A − B, its standard error, z and two-sided p."""

    auroc_a: float
    auroc_b: float
    difference: float
    se: float
    z: float
    p_value: float


def delong_difference(a: Sequence[AurocComponents], b: Sequence[AurocComponents]) -> DelongResult:
    """DeLong's test of mean AUROC over runs ``a`` against mean over runs ``b``, all scored on
    the same records in the same order. A mean over runs (seeds) is linear in their AUROCs, so
    its influence is the mean of theirs; the variance is that of record sampling, not of seeds.

    Identical predictions give difference 0, standard error 0 and p = 1.
    """
    auc_a, auc_b = np.mean([c.auroc for c in a]), np.mean([c.auroc for c in b])
    psi = np.mean([c.influence for c in a], axis=0) - np.mean([c.influence for c in b], axis=0)
    se = float(np.sqrt(np.sum(psi**2)))
    diff = float(auc_a - auc_b)
    # A difference that is exactly zero has no evidence against equality, whatever the se.
    if se <= 1e-12 * max(1.0, abs(diff)) or diff == 0.0:
        z, p = (0.0, 1.0) if abs(diff) <= 1e-12 else (float(np.sign(diff) * np.inf), 0.0)
    else:
        z = diff / se
        p = float(2 * stats.norm.sf(abs(z)))
    return DelongResult(float(auc_a), float(auc_b), diff, se, float(z), p)


def delong_test(targets: np.ndarray, probs_a: np.ndarray, probs_b: np.ndarray) -> DelongResult:
    """DeLong's test of the (macro) AUROC of two models on the same records."""
    return delong_difference([auroc_components(targets, probs_a)],
                             [auroc_components(targets, probs_b)])  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Paired bootstrap
# ---------------------------------------------------------------------------------------------
def fast_macro_auroc(targets: np.ndarray, probs: np.ndarray) -> float:
    """Macro AUROC by midranks (Mann-Whitney), the same number as ``ranking_metrics``'s
    (torchmetrics) but without tensor overhead, for thousands of bootstrap resamples."""
    targets = np.asarray(targets).astype(int).reshape(len(targets), -1)
    probs = np.asarray(probs, dtype=float).reshape(len(probs), -1)
    defined = defined_classes(targets)
    if not defined.any():
        return float("nan")
    values = []
    for k in np.flatnonzero(defined):
        y = targets[:, k]
        m, n = y.sum(), len(y) - y.sum()
        ranks = stats.rankdata(probs[:, k])
        values.append((ranks[y == 1].sum() - m * (m + 1) / 2) / (m * n))
    return float(np.mean(values))


@dataclass(frozen=True)
class BootstrapDifference:
    """metric(A) − metric(B) on the records, its percentile interval and two-sided p-value."""

    difference: float
    low: float
    high: float
    p_value: float
    n_used: int
    n_resamples: int


def bootstrap_draws(n_records: int, n_resamples: int, seed: int = 0) -> np.ndarray:
    """(n_resamples, n_records) record indices drawn with replacement; one set serves every
    run compared, which is what makes the bootstrap paired."""
    return np.random.default_rng(seed).integers(0, n_records, (n_resamples, n_records))


def resampled_metric(
    metric: Callable[[np.ndarray, np.ndarray], float],
    targets: np.ndarray,
    probs: np.ndarray,
    draws: np.ndarray,
) -> tuple[float, np.ndarray]:
    """``metric(targets, probs)`` on all records and on each resample of ``draws``."""
    targets, probs = np.asarray(targets), np.asarray(probs)
    if metric is fast_macro_auroc:
        values = resampled_macro_auroc(targets, probs, draws)
    else:
        values = np.array([metric(targets[idx], probs[idx]) for idx in draws], dtype=float)
    return float(metric(targets, probs)), values


def resampled_macro_auroc(targets: np.ndarray, probs: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """:func:`fast_macro_auroc` of every resample at once, without sorting any resample
    (hand-written: torchmetrics, and its ``BootStrapper``, score one resample per call).

    A resample is the original records with multiplicities w (how often each was drawn), so its
    Mann-Whitney AUROC is Σ over positives i, negatives j of w_i·w_j·([s_i > s_j] + ½[s_i = s_j])
    over W_pos·W_neg. With the records sorted once by score and grouped by equal score, that is,
    per group, its positive weight times (the negative weight of lower groups + half its own):
    O(resamples × records) array arithmetic instead of a sort per resample and class.
    """
    targets = targets.astype(int).reshape(len(targets), -1)
    probs = probs.astype(float).reshape(len(probs), -1)
    n_resamples, n = draws.shape
    flat = (draws + n * np.arange(n_resamples)[:, None]).ravel()
    weights = np.bincount(flat, minlength=n_resamples * n).reshape(n_resamples, n).astype(float)
    per_class = np.full((n_resamples, targets.shape[1]), np.nan)
    for k in range(targets.shape[1]):
        order = np.argsort(probs[:, k], kind="stable")
        score, y = probs[order, k], targets[order, k]
        starts = np.flatnonzero(np.r_[True, score[1:] != score[:-1]])
        w = weights[:, order]
        pos = np.add.reduceat(w * y, starts, axis=1)
        neg = np.add.reduceat(w * (1 - y), starts, axis=1)
        below = np.cumsum(neg, axis=1) - neg
        n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            auc = (pos * (below + 0.5 * neg)).sum(axis=1) / (n_pos * n_neg)
        # A resample without a positive (or a negative) of the class leaves it out of the macro.
        per_class[:, k] = np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)
    out = np.full(n_resamples, np.nan)
    defined = np.isfinite(per_class).any(axis=1)
    out[defined] = np.nanmean(per_class[defined], axis=1)
    return out


def difference_interval(
    a: Sequence[tuple[float, np.ndarray]],
    b: Sequence[tuple[float, np.ndarray]],
    alpha: float = 0.05,
) -> BootstrapDifference:
    """Mean over runs ``a`` minus mean over runs ``b`` of :func:`resampled_metric` results
    (all on the same draws): the difference, its percentile interval and p-value.

    p-value: the bootstrap distribution shifted to the null (centred on 0), two-sided,
    (1 + #{|Δ* − Δ| ≥ |Δ|}) / (1 + B) — never 0 and exactly 1 for identical predictions.
    Resamples where the metric is undefined (a class without positives) are skipped.
    """
    point = float(np.mean([p for p, _ in a]) - np.mean([p for p, _ in b]))
    deltas = np.mean([v for _, v in a], axis=0) - np.mean([v for _, v in b], axis=0)
    n_resamples = len(deltas)
    deltas = deltas[np.isfinite(deltas)]
    if not len(deltas):
        nan = float("nan")
        return BootstrapDifference(point, nan, nan, nan, 0, n_resamples)
    low, high = np.quantile(deltas, [alpha / 2, 1 - alpha / 2])
    # A tolerance, so that float noise of an identical pair never counts as "less extreme".
    tol = 1e-12 * max(1.0, abs(point))
    extreme = np.sum(np.abs(deltas - point) >= abs(point) - tol)
    p = (1 + extreme) / (1 + len(deltas))
    return BootstrapDifference(point, float(low), float(high), float(min(p, 1.0)),
                               len(deltas), n_resamples)  # fmt: skip


def paired_bootstrap(
    metric: Callable[[np.ndarray, np.ndarray], float],
    targets: np.ndarray,
    probs_a: Sequence[np.ndarray],
    probs_b: Sequence[np.ndarray],
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> BootstrapDifference:
    """Paired bootstrap of mean-over-runs ``metric(targets, probs)`` of ``probs_a`` minus that
    of ``probs_b``: every run is scored on the same resample of the records, so what the two
    sides share (hard records, label noise) cancels in the difference (see
    :func:`difference_interval` for the interval and p-value)."""
    draws = bootstrap_draws(len(targets), n_resamples, seed)
    a = [resampled_metric(metric, targets, p, draws) for p in probs_a]
    b = [resampled_metric(metric, targets, p, draws) for p in probs_b]
    return difference_interval(a, b, alpha)


# ---------------------------------------------------------------------------------------------
# Multiple comparisons, seeds, several datasets
# ---------------------------------------------------------------------------------------------
def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm (1979) step-down adjusted p-values, in the input order; NaN stays NaN and is not
    counted in the family. Sorted ascending, p_(i) · (m − i) (i from 0), made monotone by a
    running maximum, capped at 1."""
    p = np.asarray(p_values, dtype=float)
    out = np.full_like(p, np.nan)
    present = np.flatnonzero(~np.isnan(p))
    m = len(present)
    if not m:
        return out
    order = present[np.argsort(p[present], kind="stable")]
    adjusted = np.maximum.accumulate(p[order] * (m - np.arange(m)))
    out[order] = np.minimum(adjusted, 1.0)
    return out


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the mean of ``values`` (e.g. a metric over seeds); NaN for fewer
    than two finite values."""
    x = np.asarray([v for v in values if np.isfinite(v)], dtype=float)
    if len(x) < 2:
        return float("nan"), float("nan")
    half = stats.t.ppf(0.5 + confidence / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    return float(x.mean() - half), float(x.mean() + half)


@dataclass(frozen=True)
class CriticalDifference:
    """Average ranks (1 = best) of the models over the datasets, Friedman's test and the
    Nemenyi critical difference: two models whose average ranks differ by less than ``cd``
    are not significantly different at ``alpha``."""

    models: list[str]
    average_ranks: np.ndarray
    n_datasets: int
    friedman_statistic: float
    friedman_p: float
    cd: float
    alpha: float


def critical_difference(
    scores: np.ndarray,
    models: Sequence[str],
    higher_is_better: bool = True,
    alpha: float = 0.05,
) -> CriticalDifference:
    """Friedman + Nemenyi over ``scores`` (datasets × models), Demšar (2006).

    Ranks within each dataset (ties share the mean rank). CD = q_α · sqrt(k(k+1) / (6N)), with
    q_α the studentized range quantile for k groups and infinite degrees of freedom over √2.
    """
    scores = np.asarray(scores, dtype=float)
    n, k = scores.shape
    if k != len(models):
        raise ValueError(f"{k} score columns but {len(models)} models")
    if n < 2 or k < 2:
        raise ValueError(f"a critical difference needs ≥ 2 models and ≥ 2 datasets, got {k}×{n}")
    if not np.isfinite(scores).all():
        raise ValueError("every model needs a score on every dataset")
    ranks = stats.rankdata(-scores if higher_is_better else scores, axis=1)
    if k >= 3:
        statistic, p = stats.friedmanchisquare(*scores.T)
    else:  # scipy's Friedman needs 3 groups; with 2 it is the sign test, done the same way
        wins = int(np.sum(ranks[:, 0] < ranks[:, 1]))
        ties = int(np.sum(ranks[:, 0] == ranks[:, 1]))
        statistic, p = float(wins), stats.binomtest(wins, n - ties).pvalue if n > ties else 1.0
    q = stats.studentized_range.ppf(1 - alpha, k, np.inf) / np.sqrt(2)
    cd = float(q * np.sqrt(k * (k + 1) / (6 * n)))
    return CriticalDifference(list(models), ranks.mean(axis=0), n, float(statistic), float(p),
                              cd, alpha)  # fmt: skip


def critical_difference_diagram(result: CriticalDifference, title: str = "") -> object:
    """Demšar's diagram: an axis of average rank (1 at the left, best), each model's rank with
    its name, a bar of length CD, and thick lines joining groups of models whose ranks are
    within CD of each other (not significantly different). Returns a matplotlib figure."""
    import matplotlib

    matplotlib.use("Agg")  # headless: runs on clusters and in CI without a display
    import matplotlib.pyplot as plt

    k = len(result.models)
    order = np.argsort(result.average_ranks, kind="stable")
    ranks = result.average_ranks[order]
    names = [result.models[i] for i in order]
    fig, ax = plt.subplots(figsize=(8, 1.6 + 0.32 * k))
    ax.set_xlim(0.5, k + 0.5)
    ax.set_ylim(-(k // 2 + 2), 2.2)
    ax.hlines(0, 1, k, color="black", lw=1)
    for r in range(1, k + 1):
        ax.vlines(r, 0, 0.15, color="black", lw=1)
        ax.text(r, 0.3, str(r), ha="center", va="bottom", fontsize=9)
    # The CD bar above the axis.
    ax.hlines(1.3, 1, 1 + result.cd, color="black", lw=1.5)
    ax.text(1 + result.cd / 2, 1.45, f"CD = {result.cd:.2f}", ha="center", fontsize=9)
    half = (k + 1) // 2
    for i, (rank, name) in enumerate(zip(ranks, names)):
        left = i < half
        y = -(i + 1) * 0.6 if left else -(k - i) * 0.6
        x_text = 0.6 if left else k + 0.4
        ax.plot([rank, rank, x_text], [0, y, y], color="#333", lw=0.8)
        ax.text(x_text + (-0.05 if left else 0.05), y, f"{name} ({rank:.2f})",
                ha="right" if left else "left", va="center", fontsize=9)  # fmt: skip
    # Cliques: maximal runs of consecutive models within CD, drawn once each.
    cliques, last_end = [], -1
    for i in range(k):
        j = i
        while j + 1 < k and ranks[j + 1] - ranks[i] <= result.cd:
            j += 1
        if j > i and j > last_end:
            cliques.append((i, j))
            last_end = j
    for level, (i, j) in enumerate(cliques):
        y = -0.2 - 0.18 * level
        ax.hlines(y, ranks[i] - 0.03, ranks[j] + 0.03, color="#d62728", lw=3)
    ax.axis("off")
    subtitle = (f"Friedman p = {result.friedman_p:.3g} over {result.n_datasets} datasets; "
                f"Nemenyi α = {result.alpha}")  # fmt: skip
    ax.set_title(f"{title}\n{subtitle}" if title else subtitle, fontsize=10)
    fig.tight_layout()
    return fig
