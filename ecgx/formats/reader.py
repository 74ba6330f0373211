"""What the DataModule needs from a dataset reader (the ``dataset/`` config group builds one).

A reader is a plain class instantiated by ``_target_``; it does not subclass anything, it only
provides these methods. :class:`ecgx.datasets.ptbxl.PTBXL` is the reference implementation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
import pandas as pd

from ecgx.formats.record import Record


class Reader(Protocol):
    def ensure(self) -> None:
        """Fail early (MissingPathError naming ``dataset.root``) when the data is not there;
        generate it first where the reader can (the synthetic set)."""

    def signal_spec(self) -> dict:
        """Everything that determines the signals (root, rate, file set, quirk fixes), and
        nothing that does not (task, label rules): it keys the signal cache."""

    def metadata(self) -> pd.DataFrame:
        """One row per record, in a stable order. Required columns: ``record_id`` (str),
        ``patient_id`` (str), ``age`` (float, NaN if unknown), ``sex`` (float: 0 male,
        1 female, NaN), ``labels`` (dict: code in the dataset's own vocabulary -> likelihood or
        1.0), ``path`` (relative to root), ``source`` (str). Extra columns (``strat_fold``, …)
        are kept and usable by splits."""

    def read(self, row: Mapping[str, Any]) -> Record:
        """The record of one metadata row (a mapping of column -> value: the cache build
        passes plain dicts, cheaper than a ``pd.Series`` per row; index it, ``row["path"]``, or
        ``row.get``): (leads, samples) float32 in mV, canonical lead order; RecordError naming
        the file for anything wrong with it. A build of a large set calls it in forked worker
        processes, so it must not rely on state it changes in the calling process."""

    def labels(self, meta: pd.DataFrame) -> tuple[np.ndarray, list[str], np.ndarray]:
        """(targets (N, C) float32 multi-hot, class names, bool mask of records with a label
        in the task) — the label mapping, kept apart from reading so a task change never
        rebuilds the cache."""
