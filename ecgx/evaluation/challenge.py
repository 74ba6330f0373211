"""The PhysioNet/CinC Challenge 2020/2021 scores, as the official ``evaluate_model`` defines them.

torchmetrics has none of these (the challenge metric weighs every (true, predicted) class pair by
the challenge's own table, and Fβ/Gβ count each record by 1/|its labels|), so they are written by
hand here, after the official scorer (``compute_modified_confusion_matrix``,
``compute_challenge_metric``, ``compute_beta_measures``):

* per record, n = max(1, |true ∪ predicted|); every (true class j, predicted class k) pair adds
  1/n to A[j, k]; the observed score is Σ W⊙A with W the official ``weights.csv``;
* normalised score = (observed − inactive) / (ideal − inactive), where "ideal" predicts exactly the
  true labels and "inactive" predicts sinus rhythm (426783006) alone for every record; 0 when
  ideal == inactive, as the official code returns.

Equivalent codes (2021: ``713427006|59118001``, ``284470004|63593006``, ``427172004|17338001``,
``733534002|164909002``; 2020 the first three) are one class to the challenge. A task may name a
class by either code of a pair (the SE-ResNet17 columns are 59118001 and 164909002), so every
column is mapped to its weights.csv group and columns of the same group are merged by OR, as the
official scorer does with its label files. Scoring the second code as "unknown" is the bug of the
SE-ResNet refactor (RBBB, LBBB, PAC and PVC always scored 0); it cannot happen here.

Columns of codes the edition does not score are left out, as the official scorer never loads them
(they count neither in A nor in n). Records are all kept, also those without a scored label.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from ecgx.datasets.cinc_labels import challenge_weights, equivalent_groups, scored_codes

log = logging.getLogger(__name__)

SINUS_RHYTHM = "426783006"


class ChallengeParts(NamedTuple):
    """The three unnormalised sums and the normalised score the challenge ranks by."""

    observed: float
    ideal: float
    inactive: float
    score: float


def challenge_decisions(y_prob: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """The SE-ResNet original's binary rule: every class with p >= threshold, plus the argmax.

    Forcing the argmax positive means no record goes without a diagnosis (an empty prediction
    scores badly in the challenge metric). Returns a bool array shaped like ``y_prob``.
    """
    y_prob = np.asarray(y_prob, dtype=float)
    decisions = y_prob >= threshold
    decisions[np.arange(len(y_prob)), np.argmax(y_prob, axis=1)] = True
    return decisions


def _scored_columns(classes: Sequence[str], edition: int) -> tuple[list[str], list[list[int]]]:
    """(one code per scored group, in first-seen order; the column indices of each group)."""
    # A code's group is named by its first code; a code outside every pair is its own group.
    group_of = {code: code for code in scored_codes(edition)}
    group_of.update({code: group[0] for group in equivalent_groups(edition) for code in group})
    names: list[str] = []
    columns: list[list[int]] = []
    seen: dict[str, int] = {}
    unscored = []
    for col, name in enumerate(classes):
        g = group_of.get(str(name))
        if g is None:
            unscored.append(name)
            continue
        if g not in seen:
            seen[g] = len(names)
            names.append(str(name))
            columns.append([])
        columns[seen[g]].append(col)
    if unscored:
        log.info("CinC %s does not score %s: left out of the challenge metrics", edition, unscored)
    return names, columns


def _merge(y: np.ndarray, columns: list[list[int]]) -> np.ndarray:
    """OR the columns of each group into one (equivalent codes are one diagnosis)."""
    y = np.asarray(y).astype(bool)
    if y.ndim != 2:
        raise ValueError(f"expected a (records, classes) array, got shape {y.shape}")
    out = np.zeros((y.shape[0], len(columns)), dtype=bool)
    for j, cols in enumerate(columns):
        out[:, j] = y[:, cols].any(axis=1)
    return out


def modified_confusion_matrix(labels: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """A[j, k] = Σ over records with true j and predicted k of 1 / max(1, |true ∪ predicted|).

    Vectorised form of the official double loop: a record adds the outer product of its label
    and output rows, divided by its n.
    """
    labels = np.asarray(labels, dtype=float)
    outputs = np.asarray(outputs, dtype=float)
    n = np.maximum(np.logical_or(labels, outputs).sum(axis=1), 1.0)
    return (labels / n[:, None]).T @ outputs


def challenge_parts(
    y_true: np.ndarray, y_pred_binary: np.ndarray, classes: Sequence[str], edition: int
) -> ChallengeParts:
    """The observed, ideal and inactive sums and the normalised challenge score.

    ``classes`` are the SNOMED codes of the columns (either code of an equivalent pair); the sinus
    rhythm class 426783006 must be among them, as the official scorer requires.
    """
    names, columns = _scored_columns(classes, edition)
    if SINUS_RHYTHM not in names:
        raise ValueError(f"the sinus rhythm class {SINUS_RHYTHM} is not among the classes")
    labels = _merge(y_true, columns)
    outputs = _merge(y_pred_binary, columns)
    if labels.shape != outputs.shape:
        raise ValueError(f"y_true {labels.shape} and y_pred_binary {outputs.shape} differ")
    weights = challenge_weights(edition, names)
    inactive_outputs = np.zeros_like(labels)
    inactive_outputs[:, names.index(SINUS_RHYTHM)] = True

    def total(out: np.ndarray) -> float:
        return float(np.nansum(weights * modified_confusion_matrix(labels, out)))

    observed, ideal, inactive = total(outputs), total(labels), total(inactive_outputs)
    score = (observed - inactive) / (ideal - inactive) if ideal != inactive else 0.0
    return ChallengeParts(observed, ideal, inactive, float(score))


def challenge_score(
    y_true: np.ndarray, y_pred_binary: np.ndarray, classes: Sequence[str], edition: int
) -> float:
    """The normalised PhysioNet/CinC challenge metric (1 = perfect, 0 = sinus rhythm only)."""
    return challenge_parts(y_true, y_pred_binary, classes, edition).score


def beta_measures(
    y_true: np.ndarray,
    y_pred_binary: np.ndarray,
    classes: Sequence[str],
    edition: int,
    beta: float = 2.0,
) -> dict[str, float | np.ndarray]:
    """Fβ and Gβ of the 2020 challenge's unofficial phase (official ``compute_beta_measures``).

    Per class, TP/FP/FN/TN are counted with each record weighted by 1 / max(1, |its true
    labels|) (true labels only, unlike the challenge metric's union);
    Fβ = (1+β²)TP / ((1+β²)TP + FP + β²FN), Gβ = TP / (TP + FP + βFN); a class whose
    denominator is 0 is NaN and the macro means skip it (``nanmean``), as the official code.
    Columns are merged and filtered to scored classes as for :func:`challenge_score`.
    Returns ``f_beta``, ``g_beta`` (macro) and ``f_beta_per_class``, ``g_beta_per_class``.
    """
    _, columns = _scored_columns(classes, edition)
    labels = _merge(y_true, columns)
    outputs = _merge(y_pred_binary, columns)
    w = 1.0 / np.maximum(labels.sum(axis=1), 1.0)[:, None]
    tp = (w * (labels & outputs)).sum(axis=0)
    fp = (w * (~labels & outputs)).sum(axis=0)
    fn = (w * (labels & ~outputs)).sum(axis=0)
    b2 = beta**2
    with np.errstate(divide="ignore", invalid="ignore"):
        f_den = (1 + b2) * tp + fp + b2 * fn
        g_den = tp + fp + beta * fn
        f = np.where(f_den > 0, (1 + b2) * tp / f_den, np.nan)
        g = np.where(g_den > 0, tp / g_den, np.nan)
    return {
        "f_beta": float(np.nanmean(f)) if np.isfinite(f).any() else float("nan"),
        "g_beta": float(np.nanmean(g)) if np.isfinite(g).any() else float("nan"),
        "f_beta_per_class": f,
        "g_beta_per_class": g,
    }


def official_f_measure_and_accuracy(
    y_true: np.ndarray, y_pred_binary: np.ndarray, classes: Sequence[str], edition: int
) -> dict[str, float | np.ndarray]:
    """The challenges' own macro F-measure and accuracy (official ``compute_f_measure`` and
    ``compute_accuracy`` of evaluation-2020/2021).

    Per class, TP/FP/FN count records (unweighted, unlike Fβ/Gβ); F = 2TP / (2TP + FP + FN), and a
    class with no positive and no positive prediction (denominator 0) is NaN and left out of the
    macro mean (``nanmean``). ecgx's ``macro_f1`` counts such a class as 0 instead, which is why
    the two differ on small or skewed sets. Accuracy is the fraction of records whose whole label
    row is predicted exactly (every scored class right). Columns are merged and limited to scored
    classes as for :func:`challenge_score`; with a task narrower than the edition's scored set
    (``classes=seresnet17``) the accuracy covers the task's classes only.
    Returns ``f_measure``, ``accuracy`` and ``f_measure_per_class`` (one per scored group).
    """
    _, columns = _scored_columns(classes, edition)
    labels = _merge(y_true, columns)
    outputs = _merge(y_pred_binary, columns)
    if labels.shape != outputs.shape:
        raise ValueError(f"y_true {labels.shape} and y_pred_binary {outputs.shape} differ")
    tp = (labels & outputs).sum(axis=0).astype(np.float64)
    fp = (~labels & outputs).sum(axis=0).astype(np.float64)
    fn = (labels & ~outputs).sum(axis=0).astype(np.float64)
    den = 2 * tp + fp + fn
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.where(den > 0, 2 * tp / den, np.nan)
    n = len(labels)
    return {
        "f_measure": float(np.nanmean(f)) if np.isfinite(f).any() else float("nan"),
        "accuracy": float((labels == outputs).all(axis=1).sum() / n) if n else float("nan"),
        "f_measure_per_class": f,
    }
