"""The CPSC seed's classical baselines (spec B5): per-lead expert features + scikit-learn.

Features, per lead of the whole (offline-transformed) record, 53 in all:
- 8 statistics: 5th, 25th, 75th, 95th percentiles, median, mean, std, variance;
- a db10 wavelet decomposition at level 4 (PyWavelets) gives 5 coefficient arrays; for each,
  the Shannon entropy of its value-count histogram (natural log, divided by 10 as the seed
  does) followed by the same 8 statistics.
12 leads give the seed's 636 features. Like the seed, features are not scaled (the config may
put a scaler in front of the estimator with a scikit-learn Pipeline).

The estimator is any scikit-learn classifier built by Hydra from ``conf/model/classical_*.yaml``
(the seed wraps LogisticRegression / RandomForest in OneVsRest; its MLP is natively
multi-label). ``ecgx train`` runs these without Lightning (see ``ecgx.commands.train``): fit on the
train split, per-class thresholds and metrics on validation, metrics on test, the same MLflow
names as the neural models.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from ecgx.errors import ConfigValueError

STATISTICS = ("p5", "p25", "p75", "p95", "median", "mean", "std", "var")


def _statistics(x: np.ndarray) -> np.ndarray:
    """The 8 statistics along the last axis: (..., n) -> (..., 8)."""
    p5, p25, median, p75, p95 = np.percentile(x, [5, 25, 50, 75, 95], axis=-1)
    return np.stack([p5, p25, p75, p95, median, x.mean(-1), x.std(-1), x.var(-1)], axis=-1)


def _value_entropy(x: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) of each row's distribution of distinct values, divided by 10."""
    out = np.empty(x.shape[0])
    for i, row in enumerate(x):
        _, counts = np.unique(row, return_counts=True)
        p = counts / counts.sum()
        out[i] = -(p * np.log(p)).sum() / 10.0
    return out


def expert_features(signal: np.ndarray, wavelet: str = "db10", level: int = 4) -> np.ndarray:
    """(leads, samples) -> (leads · (8 + (level + 1) · 9),) features, lead-major."""
    import pywt

    x = np.asarray(signal, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"expert_features expects (leads, samples), got shape {x.shape}")
    parts = [_statistics(x)]
    for coeffs in pywt.wavedec(x, wavelet, level=level, axis=-1):
        parts.append(_value_entropy(coeffs)[:, None])
        parts.append(_statistics(coeffs))
    return np.concatenate(parts, axis=1).reshape(-1)


def feature_names(leads: Iterable[str], level: int = 4) -> list[str]:
    """Names matching :func:`expert_features`' order, e.g. ``V1/cA4_entropy``."""
    bands = [f"cA{level}"] + [f"cD{k}" for k in range(level, 0, -1)]
    per_lead = list(STATISTICS)
    for band in bands:
        per_lead += [f"{band}_entropy"] + [f"{band}_{s}" for s in STATISTICS]
    return [f"{lead}/{name}" for lead in leads for name in per_lead]


class FeatureClassifier:
    """Expert features -> a scikit-learn estimator, for multi-label or single-label tasks.

    Args:
        in_channels, num_classes: filled from the data by ``ecgx train`` (uniform with the
            neural models); ``num_classes`` checks the estimator's output width.
        estimator: a scikit-learn classifier (instantiated by Hydra); for multi-label tasks one
            that accepts a multi-hot target (OneVsRestClassifier, MLPClassifier, ...).
        wavelet, level: the wavelet decomposition of the features.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        estimator: Any,
        wavelet: str = "db10",
        level: int = 4,
    ) -> None:
        if not (hasattr(estimator, "fit") and hasattr(estimator, "predict_proba")):
            raise ConfigValueError(
                f"model.estimator must be a scikit-learn classifier with predict_proba, "
                f"got {type(estimator).__name__}"
            )
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.estimator = estimator
        self.wavelet = wavelet
        self.level = level

    def features(self, signals: Iterable[np.ndarray]) -> np.ndarray:
        return np.stack([expert_features(s, self.wavelet, self.level) for s in signals])

    def fit(self, features: np.ndarray, targets: np.ndarray, task: str) -> FeatureClassifier:
        if task == "regression":
            raise ConfigValueError("the classical baselines are classifiers: task=regression")
        y = targets.argmax(1) if task == "multiclass" else targets.astype(int)
        self.estimator.fit(features, y)
        return self

    def predict_proba(self, features: np.ndarray, task: str) -> np.ndarray:
        """(records, classes) probabilities (per class for multi-label, rows sum to 1 else)."""
        proba = self.estimator.predict_proba(features)
        if isinstance(proba, list):  # native multi-output estimators: one (n, 2) per class
            proba = np.stack([p[:, 1] for p in proba], axis=1)
        proba = np.asarray(proba, dtype=np.float64)
        if task == "multiclass" and proba.shape[1] != self.num_classes:
            # A class absent from the train split has no column: put it back at 0.
            full = np.zeros((len(proba), self.num_classes))
            full[:, self.estimator.classes_] = proba
            proba = full
        if proba.shape[1] != self.num_classes:
            raise ConfigValueError(
                f"model.estimator predicts {proba.shape[1]} columns for {self.num_classes} "
                f"classes; use a multi-label estimator (e.g. OneVsRestClassifier)"
            )
        return proba
