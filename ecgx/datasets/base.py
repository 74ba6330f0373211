"""What every dataset reader does the same way: checking its root and making a row's Record."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ecgx.errors import MissingPathError
from ecgx.formats.record import LEADS, Record


def check_root(root: Path, required: Iterable[str] = (), kind: str = "") -> None:
    """MissingPathError naming ``dataset.root`` when it is no folder, or lacks a file of
    ``required``; ``kind`` says what the folder should be (``"a PTB-XL folder"``)."""
    if not root.is_dir():
        raise MissingPathError(f"dataset.root does not exist: {root}")
    for name in required:
        if not (root / name).is_file():
            raise MissingPathError(f"dataset.root={root} is not {kind}: {name} is missing")


def row_record(row: Mapping[str, Any], signal: np.ndarray, fs: float, source: str) -> Record:
    """The Record of one metadata row: ``signal`` (already in canonical lead order, mV) with
    the row's ids, age, sex and labels."""
    return Record(
        record_id=str(row["record_id"]),
        signal=signal,
        fs=float(fs),
        leads=LEADS,
        patient_id=str(row["patient_id"]),
        age=row["age"],
        sex=row["sex"],
        source=source,
        labels=row["labels"],
    )


def multi_hot(
    labels: Iterable[Iterable[str]], names: list[str], mapping: Mapping[str, str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(targets (N, C) float32 over ``names``, bool mask of records with at least one class).
    Each record's codes map to class names through ``mapping`` (None: a code is its class
    name); codes outside it are ignored."""
    col = {name: i for i, name in enumerate(names)}
    rows = list(labels)
    y = np.zeros((len(rows), len(names)), dtype=np.float32)
    for i, codes in enumerate(rows):
        for code in codes:
            name = code if mapping is None else mapping.get(code)
            if name in col:
                y[i, col[name]] = 1.0
    return y, y.any(axis=1)
