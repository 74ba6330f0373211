"""One metric of a split as a function of (targets, outputs): what the robustness matrix and
the subgroup table score and bootstrap, many times over."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable, Iterator

import numpy as np

from ecgx.errors import ConfigValueError
from ecgx.evaluation.metrics import (
    evaluate_split,
    macro_auroc,
    ranking_metrics,
)
from ecgx.evaluation.statistics import resampled_macro_auroc

#: multi-label metrics computed without the threshold sweeps of :func:`evaluate_split`
_RANKING = ("macro_auroc", "micro_auroc", "macro_auprc", "micro_auprc")
#: the metric scored when the config names none (as ECGClassifier's headline)
DEFAULT_METRIC = {"multilabel": "macro_auroc", "multiclass": "macro_auroc", "regression": "r2"}


class Metric:
    """``metric(targets, outputs) -> float``; ``resampled(targets, outputs, draws)`` scores
    every bootstrap resample at once where a vectorised form exists (None otherwise), which
    :func:`ecgx.evaluation.metrics.bootstrap_ci` uses when present."""

    def __init__(
        self,
        fn: Callable[[np.ndarray, np.ndarray], float],
        resampled: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray] | None = None,
    ) -> None:
        self.fn, self.resampled = fn, resampled

    def __call__(self, y: np.ndarray, p: np.ndarray) -> float:
        return self.fn(y, p)


def metric_function(task: str, metric: str, names: list[str]) -> Metric:
    """``fn(targets, outputs) -> float`` computing ``metric`` as ``ecgx train`` logs it."""
    if task == "multilabel" and metric in _RANKING:
        if metric == "macro_auroc":
            return Metric(lambda y, p: macro_auroc(y, p, names), resampled_macro_auroc)
        return Metric(lambda y, p: float(ranking_metrics(y, p, names)[metric]))
    return Metric(lambda y, p: float(evaluate_split(task, p, y, names)[metric]))


def check_metric(
    task: str, metric: str, names: list[str], targets: np.ndarray, outputs: np.ndarray, key: str
) -> None:
    """ConfigValueError naming ``key`` when ``metric`` is not one :func:`evaluate_split` gives
    for this task (thresholds are not tuned here, so no ``*_tuned`` metric)."""
    with quiet_metrics():
        available = evaluate_split(task, outputs, targets, names)
    if metric not in available:
        summary = sorted(k for k in available if not k.startswith(("auroc_", "auprc_", "f1_",
                                                                   "mae_", "r2_")))  # fmt: skip
        raise ConfigValueError(f"{key}={metric!r}: not a metric of this {task} run; one of "
                               f"{summary}")  # fmt: skip


@contextlib.contextmanager
def quiet_metrics() -> Iterator[None]:
    """Silence the metrics' warnings about a class absent from a resample or a small group:
    expected in a bootstrap, not news."""
    logger = logging.getLogger("ecgx.evaluation.metrics")
    level = logger.level
    # Setting a level clears every logger's cache (slow with many loggers): only when it changes.
    if level < logging.ERROR:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        if logger.level != level:
            logger.setLevel(level)
