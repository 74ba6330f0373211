"""How records become train / val / test. A split is ``split(meta, y) -> {name: positions}``
over the rows of ``meta`` (records that have a label in the task)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ecgx.errors import ConfigValueError

SPLITS = ("train", "val", "test")


class FoldSplit:
    """Assign records by a fold column, e.g. PTB-XL's ``strat_fold`` 1–8 / 9 / 10."""

    def __init__(
        self,
        train: Sequence[int] = (1, 2, 3, 4, 5, 6, 7, 8),
        val: Sequence[int] = (9,),
        test: Sequence[int] = (10,),
        column: str = "strat_fold",
    ) -> None:
        self.folds = {"train": list(train), "val": list(val), "test": list(test)}
        self.column = column
        seen: dict[int, str] = {}
        for name, folds in self.folds.items():
            for fold in folds:
                if fold in seen:
                    raise ConfigValueError(f"split: fold {fold} is in both {seen[fold]} and {name}")
                seen[fold] = name

    def __call__(self, meta: pd.DataFrame, y: np.ndarray) -> dict[str, np.ndarray]:
        if self.column not in meta.columns:
            raise ConfigValueError(
                f"split.column={self.column!r} is not a metadata column of this dataset "
                f"(has {[c for c in meta.columns if c != 'labels']})"
            )
        fold = meta[self.column].to_numpy()
        out = {name: np.flatnonzero(np.isin(fold, folds)) for name, folds in self.folds.items()}
        for name, idx in out.items():
            if len(idx) == 0:
                raise ConfigValueError(
                    f"split.{name}: no records in folds {self.folds[name]} "
                    f"(present: {sorted(set(fold.tolist()))})"
                )
        return out
