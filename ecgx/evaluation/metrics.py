"""Metrics computed from whole-split predictions (probabilities and multi-hot targets).

torchmetrics computes each number it has (AUROC, AUPRC, F1, precision, recall, accuracy,
confusion matrix); what is written here is only what torchmetrics does not have:

* a class with no positive (or no negative) in the evaluated set has no AUROC, so it is reported
  as undefined (NaN) and left out of the macro average instead of counting as 0;
* the seeds' decision rule ``p >= t`` (torchmetrics thresholds with ``p > t``), applied here and
  handed to torchmetrics as binary predictions;
* the sample-centric F_max of IMLE-Net and of the PTB-XL benchmark, per-class threshold tuning and
  the bootstrap interval, which torchmetrics lacks.

The challenge score of PhysioNet/CinC 2020/2021 is in :mod:`ecgx.evaluation.challenge`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torchmetrics.functional import mean_absolute_error, r2_score
from torchmetrics.functional.classification import (
    binary_accuracy,
    binary_auroc,
    binary_average_precision,
    binary_f1_score,
    binary_precision,
    binary_recall,
    binary_specificity,
    multiclass_accuracy,
    multiclass_auroc,
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multilabel_auroc,
    multilabel_f1_score,
    multilabel_precision,
    multilabel_recall,
    multilabel_specificity,
)

log = logging.getLogger(__name__)


class float64_metrics(contextlib.ContextDecorator):
    """Whole-split metrics in float64. torchmetrics divides integer counts (its ROC and PR
    curves' TP/FP cumsums) in torch's default dtype, float32, so even float64 inputs gave an
    AUROC 1e-8 away from scikit-learn's; with float64 as the default for the call they agree to
    1e-16. The previous default is restored on the way out."""

    def __enter__(self) -> float64_metrics:
        self._previous = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)
        return self

    def __exit__(self, *exc: object) -> None:
        torch.set_default_dtype(self._previous)


@float64_metrics()
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


@float64_metrics()
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


# ---------------------------------------------------------------------------------------------
# The seed studies' metrics on whole-split numpy arrays (numpy in, floats / numpy arrays out).
# ---------------------------------------------------------------------------------------------


def _t(a: np.ndarray, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a), dtype=dtype)


def _per_class(
    fn: Callable[..., torch.Tensor], preds: torch.Tensor, target: torch.Tensor
) -> np.ndarray:
    """``fn`` (a torchmetrics binary metric) on every column. Column by column because
    torchmetrics' multilabel functions refuse a single label (num_labels must be > 1)."""
    return np.array([float(fn(preds[:, k], target[:, k])) for k in range(target.shape[1])])


def _binarize(y_prob: np.ndarray, thresholds: float | np.ndarray) -> torch.Tensor:
    """``p >= t`` as an int tensor. torchmetrics binarises with ``p > t``; the seeds use ``>=``,
    so decisions are made here and torchmetrics gets them as already-binary int predictions."""
    return torch.as_tensor(np.asarray(y_prob) >= np.asarray(thresholds)).int()


def _defined_classes(y_true: np.ndarray, what: str, class_names: list[str] | None) -> np.ndarray:
    """Bool mask of classes with both a positive and a negative; warns about the others."""
    positives = y_true.sum(axis=0)
    defined = (positives > 0) & (positives < y_true.shape[0])
    if not defined.all():
        names = class_names or [str(i) for i in range(y_true.shape[1])]
        undefined = [names[i] for i in np.flatnonzero(~defined)]
        log.warning("%s undefined (one label value only) for %s: left out of the macro",
                    what, undefined)  # fmt: skip
    return defined


@float64_metrics()
def ranking_metrics(
    y_true: np.ndarray, y_prob: np.ndarray, class_names: list[str] | None = None
) -> dict[str, float | np.ndarray]:
    """Macro and micro AUROC and AUPRC (average precision) of multi-label probabilities.

    A class with no positive (or no negative) has no AUROC, and its AUPRC says nothing (0/0
    without a positive, trivially 1 without a negative): both are NaN in the per-class arrays and
    the class is left out of the macros and of the micro averages, with a warning (the SE-ResNet
    refactor drops all-negative classes the same way). Keys: ``macro_auroc``, ``micro_auroc``,
    ``macro_auprc``, ``micro_auprc``, ``auroc_per_class``, ``auprc_per_class``.
    """
    y_true = np.asarray(y_true).astype(int)
    y_prob = np.asarray(y_prob, dtype=float)
    defined = _defined_classes(y_true, "AUROC/AUPRC", class_names)
    nan = float("nan")
    auroc = np.full(y_true.shape[1], nan)
    auprc = np.full(y_true.shape[1], nan)
    out: dict[str, float | np.ndarray] = dict.fromkeys(
        ("macro_auroc", "micro_auroc", "macro_auprc", "micro_auprc"), nan
    )
    if defined.any():
        p, y = _t(y_prob[:, defined]), _t(y_true[:, defined], torch.int)
        auroc[defined] = _per_class(binary_auroc, p, y)
        auprc[defined] = _per_class(binary_average_precision, p, y)
        out["macro_auroc"] = float(auroc[defined].mean())
        out["macro_auprc"] = float(auprc[defined].mean())
        # Micro: every (record, class) pair of the defined classes as one binary problem.
        out["micro_auroc"] = float(binary_auroc(p.flatten(), y.flatten()))
        out["micro_auprc"] = float(binary_average_precision(p.flatten(), y.flatten()))
    out["auroc_per_class"] = auroc
    out["auprc_per_class"] = auprc
    return out


@float64_metrics()
def macro_auroc(
    y_true: np.ndarray, y_prob: np.ndarray, class_names: list[str] | None = None
) -> float:
    """``ranking_metrics(...)["macro_auroc"]`` alone: what a bootstrap's point estimate needs,
    without the AUPRC and micro averages it would compute and discard."""
    y_true = np.asarray(y_true).astype(int)
    defined = _defined_classes(y_true, "AUROC", class_names)
    if not defined.any():
        return float("nan")
    p = _t(np.asarray(y_prob, dtype=float)[:, defined])
    return float(_per_class(binary_auroc, p, _t(y_true[:, defined], torch.int)).mean())


def _sample_fmax(y_true: np.ndarray, y_prob: np.ndarray, thresholds: np.ndarray) -> float:
    """max over t of F1(P(t), R(t)) with sample-averaged P and R (see the two callers).

    Hand-written: torchmetrics has no sample-centric F_max. At each t the decision is p >= t;
    per record, precision |ŷ∧y|/|ŷ| is undefined when nothing is predicted and recall |ŷ∧y|/|y|
    when the record has no label, and both means skip the undefined records (nanmean). A t at
    which no record has a prediction has no precision and is skipped; P + R = 0 gives F1 = 0.
    """
    y_true = np.asarray(y_true).astype(bool)
    y_prob = np.asarray(y_prob, dtype=float)
    n_true = y_true.sum(axis=1)
    best = float("nan")
    for t in np.asarray(thresholds, dtype=float):
        pred = y_prob >= t
        hits = (pred & y_true).sum(axis=1)
        n_pred = pred.sum(axis=1)
        if not n_pred.any() or not n_true.any():
            continue
        precision = float(np.mean(hits[n_pred > 0] / n_pred[n_pred > 0]))
        recall = float(np.mean(hits[n_true > 0] / n_true[n_true > 0]))
        f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
        best = f1 if np.isnan(best) else max(best, f1)
    return best


def fmax_samples(
    y_true: np.ndarray, y_prob: np.ndarray, thresholds: np.ndarray | None = None
) -> float:
    """IMLE-Net's "Max F1" (spec A7): sample-based F_max over **10 thresholds** linspace(0, 1, 10).

    At each t: ŷ = p >= t; per record precision |ŷ∧y|/|ŷ| averaged over the records with at
    least one prediction (IMLE-Net's nanmean skips the others) and recall |ŷ∧y|/|y| averaged over
    the records (a record without any label, which IMLE-Net's data never has, is skipped rather
    than turning the mean into NaN); F1(t) = 2PR/(P+R); the maximum over t. IMLE-Net's docstring calls it "macro",
    but it averages over samples, not classes. Not the PTB-XL benchmark's Fmax (101 thresholds):
    use :func:`fmax_ptbxl` for that.
    """
    grid = np.linspace(0, 1, 10) if thresholds is None else np.asarray(thresholds, dtype=float)
    return _sample_fmax(y_true, y_prob, grid)


def fmax_ptbxl(y_true: np.ndarray, y_prob: np.ndarray) -> float:
    """The PTB-XL benchmark's sample-centric Fmax (Strodthoff et al. 2020, after CAFA).

    Thresholds 0, 0.01, ..., 1 (**101 of them**); ŷ = p >= t; precision averaged over the
    records with at least one prediction, recall over all records (records without any label,
    which PTB-XL's benchmark tasks drop, are skipped); F1 of the two, maximised over t. Same rule
    as :func:`fmax_samples` on another grid (1/9 is not a multiple of 0.01), so neither bounds
    the other; never compare numbers across the two.
    """
    return _sample_fmax(y_true, y_prob, np.round(np.arange(101) * 0.01, 2))


def mean_accuracy(y_true: np.ndarray, y_prob: np.ndarray, threshold: float = 0.5) -> float:
    """IMLE-Net's "Mean accuracy": per-class binary accuracy at p >= threshold, mean over classes."""
    preds = _binarize(y_prob, threshold)
    return float(_per_class(binary_accuracy, preds, _t(y_true, torch.int)).mean())


@float64_metrics()
def f1_at_thresholds(
    y_true: np.ndarray, y_prob: np.ndarray, thresholds: float | np.ndarray
) -> dict[str, float | np.ndarray]:
    """Per-class F1, precision and recall at per-class thresholds (decision p >= t), with macros.

    This is ecg-diagnosis' ``predict.py`` rule (score >= its tuned threshold). A class with no
    prediction and no positive has 0/0 precision, recall and F1; they count as 0, as
    torchmetrics' and scikit-learn's default. Keys: ``macro_f1``, ``macro_precision``,
    ``macro_recall``, ``f1``, ``precision``, ``recall`` (the last three per class).
    """
    preds, target = _binarize(y_prob, thresholds), _t(y_true, torch.int)
    f1 = _per_class(binary_f1_score, preds, target)
    precision = _per_class(binary_precision, preds, target)
    recall = _per_class(binary_recall, preds, target)
    return {
        "macro_f1": float(f1.mean()),
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "f1": f1,
        "precision": precision,
        "recall": recall,
    }


#: what :func:`decision_metrics` reports per class, in the CODE paper's Table 2 order
DECISION_STATS = ("precision", "recall", "specificity", "f1")
BINARY_STATS = {"precision": binary_precision, "recall": binary_recall,
                "specificity": binary_specificity, "f1": binary_f1_score}  # fmt: skip
MULTILABEL_STATS = {"precision": multilabel_precision, "recall": multilabel_recall,
                    "specificity": multilabel_specificity, "f1": multilabel_f1_score}  # fmt: skip


@float64_metrics()
def decision_metrics(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    names: Sequence[str],
    stats: Sequence[str] = DECISION_STATS,
) -> dict[str, float]:
    """Per-class precision (PPV), recall (sensitivity), specificity and F1 of 0/1 decisions
    (``<stat>_<class>``), and their means over the classes (``macro_<stat>``): the metrics of
    Table 2 of the CODE paper (Ribeiro et al., Nat Commun 2020), which scores annotators who
    give decisions, not scores. ``stats``: a subset of :data:`DECISION_STATS` (compare's
    bootstrap asks for one). A 0/0 counts as 0 (torchmetrics' and scikit-learn's default)."""
    preds, target = _t(y_pred, torch.int), _t(y_true, torch.int)
    if preds.shape != target.shape or not bool(((preds == 0) | (preds == 1)).all()):
        raise ValueError(f"decisions must be 0/1 and shaped like the targets {tuple(target.shape)}")
    out: dict[str, float] = {}
    for stat in stats:
        if target.shape[1] > 1:  # one call for all classes: the bootstrap calls this 1000s of times
            values = MULTILABEL_STATS[stat](preds, target, num_labels=target.shape[1],
                                            average=None).numpy()  # fmt: skip
        else:  # torchmetrics' multilabel functions refuse a single label
            values = _per_class(BINARY_STATS[stat], preds, target)
        out[f"macro_{stat}"] = float(values.mean())
        out.update({f"{stat}_{name}": float(v) for name, v in zip(names, values)})
    return out


def tune_thresholds(
    y_true_val: np.ndarray, y_prob_val: np.ndarray, grid: np.ndarray | None = None
) -> np.ndarray:
    """Per class, the grid threshold that maximises F1 on validation (ecg-diagnosis, seed B4).

    During tuning the decision is **score > t** (the seed's ``outputs > threshold``), while
    :func:`f1_at_thresholds` applies the tuned t with **score >= t** (its ``predict.py``); the
    two differ only for a score exactly equal to a grid point. Ties go to the smallest threshold
    (``np.argmax``, as the seed). Default grid: linspace(0, 1, 100).
    """
    grid = np.linspace(0, 1, 100) if grid is None else np.asarray(grid, dtype=float)
    y_prob = np.asarray(y_prob_val, dtype=float)
    target = _t(y_true_val, torch.int)
    f1 = np.stack([
        _per_class(binary_f1_score, torch.as_tensor(y_prob > t).int(), target) for t in grid
    ])  # fmt: skip
    return grid[np.argmax(f1, axis=0)]


@float64_metrics()
def multiclass_metrics(
    y_true_int: np.ndarray, y_prob: np.ndarray, class_names: list[str]
) -> dict[str, float | np.ndarray]:
    """Single-label metrics of the vision seed: the decision is the argmax.

    ``macro_f1``, ``accuracy`` (fraction of records right), ``macro_auroc`` (one-vs-rest, a class
    absent from ``y_true_int`` being undefined and left out, with a warning), ``f1_<class>``,
    ``auroc_<class>`` and ``confusion_matrix`` (rows true, columns predicted, counts).
    """
    y_int = np.asarray(y_true_int).astype(int)
    y_prob = np.asarray(y_prob, dtype=float)
    k = len(class_names)
    p, y = _t(y_prob), _t(y_int, torch.long)
    f1 = multiclass_f1_score(p, y, num_classes=k, average=None).numpy().astype(float)
    with warnings.catch_warnings():
        # An absent class is made NaN just below; torchmetrics' warning about it would only
        # repeat ours.
        warnings.filterwarnings("ignore", message="No positive samples in targets")
        auroc = multiclass_auroc(p, y, num_classes=k, average=None).numpy().astype(float)
    one_hot = np.eye(k, dtype=int)[y_int]
    defined = _defined_classes(one_hot, "AUROC", class_names)
    auroc[~defined] = np.nan
    out: dict[str, float | np.ndarray] = {
        "macro_f1": float(f1.mean()),
        "accuracy": float(multiclass_accuracy(p, y, num_classes=k, average="micro")),
        "macro_auroc": float(auroc[defined].mean()) if defined.any() else float("nan"),
        "confusion_matrix": multiclass_confusion_matrix(p, y, num_classes=k).numpy(),
    }
    for name, f, a in zip(class_names, f1.tolist(), auroc.tolist()):
        out[f"f1_{name}"] = f
        out[f"auroc_{name}"] = a
    return out


@dataclass(frozen=True)
class BootstrapCI:
    """A percentile bootstrap interval; unpacks as ``point, low, high``."""

    point: float
    low: float
    high: float
    n_used: int  # resamples on which the metric was defined
    n_resamples: int

    def __iter__(self) -> Iterator[float]:
        return iter((self.point, self.low, self.high))


def bootstrap_ci(
    metric_fn: Callable[[np.ndarray, np.ndarray], float],
    y_true: np.ndarray,
    y_prob: np.ndarray,
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    point: float | None = None,
) -> BootstrapCI:
    """Percentile bootstrap CI of ``metric_fn(y_true, y_prob)`` over records.

    Each resample draws len(y_true) records with replacement from ``np.random.default_rng(seed)``,
    so a seed gives one interval. A resample on which the metric is undefined (NaN/inf, or a
    ValueError such as scikit-learn's "only one class present") is skipped and does not count in
    ``n_used``; a warning says how many were skipped. low/high are the alpha/2 and 1 − alpha/2
    quantiles of the defined resamples (NaN when none is defined). ``point``: the metric on all
    records when the caller already has it (not recomputed).
    """
    y_true, y_prob = np.asarray(y_true), np.asarray(y_prob)
    if point is None:
        point = _metric_or_nan(metric_fn, y_true, y_prob)
    stats = bootstrap_values(metric_fn, y_true, y_prob, n_resamples, seed)
    return percentile_interval(float(point), stats, alpha)


def _metric_or_nan(metric_fn: Callable, y_true: np.ndarray, y_prob: np.ndarray) -> float:
    try:
        return float(metric_fn(y_true, y_prob))
    except ValueError:
        return float("nan")


def bootstrap_values(
    metric_fn: Callable[[np.ndarray, np.ndarray], float],
    y_true: np.ndarray,
    y_prob: np.ndarray,
    n_resamples: int = 1000,
    seed: int = 0,
) -> np.ndarray:
    """The metric on each of :func:`bootstrap_ci`'s resamples, (n_resamples,), NaN where
    undefined. The draws depend on the record count and seed only, so two outputs scored on the
    same records with the same seed are paired resample by resample (their difference is a
    paired bootstrap)."""
    y_true, y_prob = np.asarray(y_true), np.asarray(y_prob)
    if len(y_true) != len(y_prob):
        raise ValueError(f"{len(y_true)} targets but {len(y_prob)} predictions")
    n = len(y_true)
    # A metric that scores many resamples at once (``resampled``) gets them in blocks: the same
    # draws from the same stream, in the same order, as the one-at-a-time loop.
    resampled = getattr(metric_fn, "resampled", None)
    if resampled and n_resamples * n <= RESAMPLE_BLOCK_ELEMENTS:
        # One block: the draws of (n, n_resamples, seed), kept for the next call with them
        # (a robustness table resamples every row with the same draws).
        return np.asarray(resampled(y_true, y_prob, _draws(n, n_resamples, seed)), dtype=float)
    rng = np.random.default_rng(seed)
    block = max(1, RESAMPLE_BLOCK_ELEMENTS // max(n, 1)) if resampled else 1
    parts = []
    for start in range(0, n_resamples, block):
        draws = _draw(rng, n, min(block, n_resamples - start))
        parts.append(resampled(y_true, y_prob, draws) if resampled else
                     [_metric_or_nan(metric_fn, y_true[draws[0]], y_prob[draws[0]])])  # fmt: skip
    return np.concatenate([np.asarray(v, dtype=float) for v in parts]) if parts else np.zeros(0)


@functools.lru_cache(maxsize=8)
def _draws(n: int, n_resamples: int, seed: int) -> np.ndarray:
    """(n_resamples, n) record indices, drawn one resample at a time from ``seed``'s stream as
    the blocked loop of :func:`bootstrap_values` draws them; read-only, as it is shared."""
    draws = _draw(np.random.default_rng(seed), n, n_resamples)
    draws.flags.writeable = False
    return draws


def _draw(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """(k, n) record indices, one resample at a time from ``rng``'s stream."""
    return np.stack([rng.integers(0, n, size=n) for _ in range(k)])


def percentile_interval(point: float, stats: np.ndarray, alpha: float = 0.05) -> BootstrapCI:
    """The percentile interval of resampled values ``stats`` (undefined ones skipped, with a
    warning naming how many)."""
    n_resamples = len(stats)
    stats = stats[np.isfinite(stats)]
    if len(stats) < n_resamples:
        log.warning("bootstrap: metric undefined on %d of %d resamples, skipped",
                    n_resamples - len(stats), n_resamples)  # fmt: skip
    if len(stats) == 0:
        return BootstrapCI(point, float("nan"), float("nan"), 0, n_resamples)
    low, high = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return BootstrapCI(point, float(low), float(high), len(stats), n_resamples)


#: resample draws (resamples × records) a block of a vectorised bootstrap holds at once
RESAMPLE_BLOCK_ELEMENTS = 1 << 21


#: metrics given a bootstrap interval at test time (when present for the task)
BOOTSTRAPPED = ("macro_auroc", "macro_auprc", "fmax_ptbxl", "macro_f1_tuned", "macro_f1",
                "accuracy", "challenge_score", "r2", "mae")  # fmt: skip


@float64_metrics()
def evaluate_split(
    task: str,
    probs: np.ndarray,
    targets: np.ndarray,
    names: list[str],
    thresholds: np.ndarray | None = None,
    challenge_edition: int | None = None,
) -> dict[str, float]:
    """Every scalar metric of one evaluated split, unprefixed (``macro_auroc``, ``fmax_ptbxl``,
    ``f1_tuned_<class>``, ...): what ``ecgx train`` / ``ecgx eval`` log for val and test.

    Multi-label: macro/micro AUROC and AUPRC and per-class AUROC/AUPRC, macro F1 at 0.5 (and at
    ``thresholds`` tuned on validation, CPSC seed), IMLE-Net's mean accuracy and sample F_max,
    the PTB-XL benchmark's F_max, and with ``challenge_edition`` the PhysioNet/CinC challenge
    score with Fβ/Gβ (β = 2) and the official F-measure and accuracy (``challenge_f_measure``,
    ``challenge_accuracy``) on the SE-ResNet seed's decisions. Single-label: macro F1,
    accuracy, macro AUROC (one-vs-rest) and per-class F1/AUROC. Regression: MAE and R².
    """
    probs, targets = np.asarray(probs, dtype=float), np.asarray(targets)
    if task == "regression":
        return regression_metrics(torch.as_tensor(probs), torch.as_tensor(targets), names)
    if task == "multiclass":
        out = multiclass_metrics(targets.argmax(1), probs, names)
        out.pop("confusion_matrix")
        return {k: float(v) for k, v in out.items()}
    ranking = ranking_metrics(targets, probs, names)
    out = {k: float(ranking[k]) for k in ("macro_auroc", "micro_auroc", "macro_auprc",
                                          "micro_auprc")}  # fmt: skip
    for name, auroc, auprc in zip(names, ranking["auroc_per_class"], ranking["auprc_per_class"]):
        out[f"auroc_{name}"] = float(auroc)
        out[f"auprc_{name}"] = float(auprc)
    out["macro_f1"] = float(f1_at_thresholds(targets, probs, 0.5)["macro_f1"])
    out["mean_accuracy"] = mean_accuracy(targets, probs)
    out["fmax_sample"] = fmax_samples(targets, probs)
    out["fmax_ptbxl"] = fmax_ptbxl(targets, probs)
    if thresholds is not None:
        tuned = f1_at_thresholds(targets, probs, thresholds)
        out["macro_f1_tuned"] = tuned["macro_f1"]
        for name, f1, t in zip(names, tuned["f1"], thresholds):
            out[f"f1_tuned_{name}"] = float(f1)
            out[f"threshold_{name}"] = float(t)
    if challenge_edition is not None:
        from ecgx.evaluation.challenge import (
            beta_measures,
            challenge_decisions,
            challenge_score,
            official_f_measure_and_accuracy,
        )

        decisions = challenge_decisions(probs)
        out["challenge_score"] = challenge_score(targets, decisions, names, challenge_edition)
        beta = beta_measures(targets, decisions, names, challenge_edition)
        out["f_beta"], out["g_beta"] = float(beta["f_beta"]), float(beta["g_beta"])
        # Beside ecgx's macro_f1, under names that say whose rules they follow.
        official = official_f_measure_and_accuracy(targets, decisions, names, challenge_edition)
        out["challenge_f_measure"] = float(official["f_measure"])
        out["challenge_accuracy"] = float(official["accuracy"])
    return out


def bootstrap_intervals(
    task: str,
    probs: np.ndarray,
    targets: np.ndarray,
    names: list[str],
    n_resamples: int,
    seed: int = 0,
    thresholds: np.ndarray | None = None,
    challenge_edition: int | None = None,
) -> dict[str, float]:
    """``<metric>_ci_low`` / ``<metric>_ci_high`` (95 %) for the :data:`BOOTSTRAPPED` metrics.

    One resampling of the records serves every metric (as the PTB-XL benchmark's protocol);
    resamples where a metric is undefined are skipped for that metric only.

    Not ``scipy.stats.bootstrap``: a resample without a positive of some class leaves that
    class's AUROC undefined, and scipy's percentile interval of a statistic that is NaN in any
    resample is NaN (it has no per-metric skip); its default BCa interval would also need a
    jackknife of n full metric evaluations per split.
    """
    probs, targets = np.asarray(probs, dtype=float), np.asarray(targets)
    rng = np.random.default_rng(seed)
    draws = [rng.integers(0, len(probs), len(probs)) for _ in range(n_resamples)]
    values: dict[str, list[float]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quiet = logging.getLogger(__name__)
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # undefined classes in resamples are expected, not news
        try:
            for idx in draws:
                m = evaluate_split(task, probs[idx], targets[idx], names, thresholds,
                                   challenge_edition)  # fmt: skip
                for key in BOOTSTRAPPED:
                    if key in m and np.isfinite(m[key]):
                        values.setdefault(key, []).append(m[key])
        finally:
            quiet.setLevel(level)
    out = {}
    for key, vals in values.items():
        out[f"{key}_ci_low"], out[f"{key}_ci_high"] = (float(q) for q in
                                                        np.quantile(vals, [0.025, 0.975]))  # fmt: skip
    return out


def print_metrics(metrics: dict[str, float], heading: str, class_names: Sequence[str] = ()) -> None:
    """The ``test/`` metrics as a person reads them: each summary metric on one line with its
    bootstrap interval beside it, then the per-class metrics as one row per metric and one
    column per class."""
    test = {k.removeprefix("test/"): v for k, v in metrics.items() if k.startswith("test/")}
    if not test:
        return
    per_class: dict[str, dict[str, float]] = {}
    for name in sorted(class_names, key=len, reverse=True):  # "f1_tuned_X" before "f1_X"
        for key in [k for k in test if k.endswith(f"_{name}")]:
            per_class.setdefault(key.removesuffix(f"_{name}"), {})[name] = test.pop(key)
    summary = {k: v for k, v in test.items() if not k.endswith(("_ci_low", "_ci_high"))}
    width = max(len(k) for k in [*summary, *per_class, "per class"])
    print(f"\n{heading}")
    for key, value in sorted(summary.items()):
        low, high = test.get(f"{key}_ci_low"), test.get(f"{key}_ci_high")
        interval = (
            f"  (95 % CI {low:.4f}-{high:.4f})" if low is not None and high is not None else ""
        )
        print(f"  {key:<{width}}  {value:.4f}{interval}")
    if per_class:
        names = [n for n in class_names if any(n in row for row in per_class.values())]
        cell = max(6, *(len(n) for n in names))
        print(f"  {'per class':<{width}}  " + "  ".join(f"{n:>{cell}}" for n in names))
        for key, row in sorted(per_class.items()):
            cells = (f"{row[n]:>{cell}.4f}" if n in row else " " * cell for n in names)
            print(f"  {key:<{width}}  " + "  ".join(cells))
