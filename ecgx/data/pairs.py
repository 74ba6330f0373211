"""Positive pairs across records of one patient (``data.pairs=patient``).

CLOCS (Kiyasseh et al., ICML 2021) makes views that share a patient id positives: adjacent
segments of one record (CMSC) and, where a patient has several recordings, views of different
recordings. Each
record of a split gets a partner: another record of the same patient in the same split, drawn
at random per batch in training (the next one of the patient's records in evaluation, so the
validation loss is repeatable), itself when the patient has no other record there. The
contrastive objective then contrasts the record with its partner
(:class:`ecgx.pretrain.views.Views` with ``pairs=patient``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["PatientPartners"]


class PatientPartners:
    """Partners of the records of one split.

    Args:
        rows: the split's cache rows, in the split's order (positions index into it).
        patient_ids: each of those records' patient id. Missing ids (NaN, empty) make a record
            its own patient: pairing every record without an id together would pair strangers.
    """

    def __init__(self, rows: np.ndarray, patient_ids: pd.Series | np.ndarray) -> None:
        self.rows = np.asarray(rows, dtype=np.int64)
        ids = pd.Series(patient_ids, dtype=object).reset_index(drop=True)
        missing = ids.isna() | (ids.astype(str).str.strip() == "")
        # Ids compared as text: a CSV may give 12 in one table and "12" or 12.0 in another.
        text = ids.map(_id_text).where(~missing, "\0row" + pd.Series(range(len(ids))).astype(str))
        codes, _ = pd.factorize(text)
        # Positions sorted by patient: each patient's records are one run of `order`.
        self.order = np.argsort(codes, kind="stable")
        sorted_codes = codes[self.order]
        starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
        sizes = np.diff(np.r_[starts, len(codes)])
        group = np.repeat(np.arange(len(starts)), sizes)
        self.start = np.empty(len(codes), dtype=np.int64)
        self.size = np.empty(len(codes), dtype=np.int64)
        self.rank = np.empty(len(codes), dtype=np.int64)
        self.start[self.order] = starts[group]
        self.size[self.order] = sizes[group]
        self.rank[self.order] = np.arange(len(codes)) - starts[group]

    @property
    def n_with_partner(self) -> int:
        """Records whose patient has another record in the split."""
        return int((self.size > 1).sum())

    def draw(self, positions: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
        """Cache rows of the partners of the split's ``positions`` (rng None: deterministic)."""
        positions = np.asarray(positions, dtype=np.int64)
        size = self.size[positions]
        others = np.maximum(size - 1, 1)
        # An offset in 1..size-1 from the record's own rank never lands on the record itself.
        step = 1 if rng is None else rng.integers(0, others) + 1
        rank = np.where(size > 1, (self.rank[positions] + step) % size, self.rank[positions])
        return self.rows[self.order[self.start[positions] + rank]]


def _id_text(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()
