"""Label-fraction subsets of a training split: stratified, deterministic, nested.

Label-efficiency experiments (linear probe / fine-tune at 1 %, 10 %, 100 % of the labels) need
the same records for the same fraction and seed in every run that is compared, and every class
present when there is any. Multi-label records are stratified by their rarest positive class
(records with none form their own stratum), the usual approximation of multi-label
stratification for subsampling; each stratum keeps ``round(fraction · n)`` records, at least one.
Each stratum is shuffled once per seed and its first records kept, so for one seed the 1 %
subset lies inside the 10 % one.
"""

from __future__ import annotations

import numpy as np

from ecgx.errors import ConfigValueError


def check_fraction(fraction: float) -> float:
    fraction = float(fraction)
    if not 0.0 < fraction <= 1.0:
        raise ConfigValueError(f"data.label_fraction must be in (0, 1], got {fraction}")
    return fraction


def label_subset(y: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """Sorted positions of ``y`` (records × classes, multi-hot) to keep."""
    fraction = check_fraction(fraction)
    if fraction == 1.0 or len(y) == 0:
        return np.arange(len(y))
    y = np.asarray(y) > 0
    counts = y.sum(axis=0)
    # The rarest class a record carries decides its stratum; -1: no positive class.
    rarity = np.where(y, counts[None, :], np.iinfo(np.int64).max)
    stratum = (
        np.where(y.any(axis=1), rarity.argmin(axis=1), -1) if y.shape[1] else np.full(len(y), -1)
    )
    rng = np.random.default_rng(seed)
    keep = []
    for value in np.unique(stratum):
        members = np.flatnonzero(stratum == value)
        n = max(1, round(fraction * len(members)))
        keep.append(rng.permutation(members)[:n])
    return np.sort(np.concatenate(keep))
