"""Inputs a model takes besides the signal (its ``extra_inputs``), built from record metadata.

A model declares them by name (``SEResNet18.extra_inputs = ("demographics",)``) and sizes them
with ``<name>_dim``; the DataModule puts them into every batch, ``ecgx predict`` builds them from
each file's header, and the LightningModule and explainers pass them by keyword.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from ecgx.errors import ConfigValueError

log = logging.getLogger(__name__)


def wanted(net: Any) -> tuple[str, ...]:
    """The extra inputs ``net`` takes (none for most models)."""
    return tuple(getattr(net, "extra_inputs", ()) or ())


def demographics(age: np.ndarray, sex: np.ndarray, dim: int) -> np.ndarray:
    """The SE-ResNet18 seed's demographic vector per record (spec 1.2), float32 (N, dim).

    ``dim=5`` (the original): [age/100, 0, female, male, sex known]; ``dim=3`` (its refactor):
    [age/100, female, male]. A missing age is 0 and a missing sex sets neither flag, as the seed
    encodes them. ``sex``: 0 male, 1 female, NaN unknown (ecgx's metadata coding).
    """
    age = np.asarray(age, dtype=np.float64)
    sex = np.asarray(sex, dtype=np.float64)
    female = (sex == 1).astype(np.float32)
    male = (sex == 0).astype(np.float32)
    scaled = np.where(np.isfinite(age), age / 100.0, 0.0).astype(np.float32)
    if dim == 5:
        columns = [scaled, np.zeros_like(scaled), female, male, female + male]
    elif dim == 3:
        columns = [scaled, female, male]
    else:
        raise ConfigValueError(
            f"model.demographics_dim={dim}: the seed's encodings are 5 (original) or 3 (refactor)"
        )
    return np.stack(columns, axis=1)


ENCODERS: dict[str, Callable[[np.ndarray, np.ndarray, int], np.ndarray]] = {
    "demographics": demographics
}


def _encoder(name: str, net: Any) -> tuple[Callable[..., np.ndarray], int]:
    if name not in ENCODERS:
        raise ConfigValueError(
            f"{type(net).__name__} asks for the extra input {name!r}; ecgx builds "
            f"{sorted(ENCODERS)}"
        )
    return ENCODERS[name], int(getattr(net, f"{name}_dim"))


def from_metadata(net: Any, meta: pd.DataFrame) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Every record's extra inputs (rows of ``meta``) and how many records lack each field."""
    out, missing = {}, {}
    for name in wanted(net):
        encode, dim = _encoder(name, net)
        age = meta["age"].to_numpy(dtype=np.float64)
        sex = meta["sex"].to_numpy(dtype=np.float64)
        out[name] = encode(age, sex, dim)
        missing.update({"age": int(np.isnan(age).sum()), "sex": int(np.isnan(sex).sum())})
    if missing:
        log.info("extra inputs %s: age unknown for %d records, sex for %d (encoded as the seed "
                 "does: age 0, no sex flag)", list(out), missing["age"], missing["sex"])  # fmt: skip
    return out, missing


def from_record(net: Any, record: Any) -> dict[str, np.ndarray]:
    """One record's extra inputs (1, dim) from what its file states (``Record.age/sex``)."""
    out = {}
    for name in wanted(net):
        encode, dim = _encoder(name, net)
        age = np.nan if record.age is None else float(record.age)
        sex = np.nan if record.sex is None else float(record.sex)
        out[name] = encode(np.array([age]), np.array([sex]), dim)
    return out
