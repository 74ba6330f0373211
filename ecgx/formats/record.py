"""The one record type every reader yields, and the canonical lead order."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ecgx.errors import EcgxError

LEADS: tuple[str, ...] = (
    "I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6",
)  # fmt: skip
_CANONICAL = {name.upper(): name for name in LEADS}


class RecordError(EcgxError, ValueError):
    """A record that cannot be turned into a correct signal; the message names the file."""


@dataclass
class Record:
    """One ECG: ``signal`` is (leads, samples) float32 in mV, leads in ``leads`` order."""

    record_id: str
    signal: np.ndarray
    fs: float
    leads: tuple[str, ...]
    patient_id: str | None = None
    age: float | None = None
    sex: int | None = None  # 0 male, 1 female (PTB-XL's coding)
    source: str = ""
    labels: dict[str, float] = field(default_factory=dict)  # dataset vocabulary -> likelihood
    extra: dict[str, Any] = field(default_factory=dict)


def canonical_leads(names: list[str] | tuple[str, ...], where: str) -> tuple[str, ...]:
    """Map a file's lead names (any case: ``AVR``, ``avr``) onto the canonical spelling."""
    out = []
    for name in names:
        key = name.strip().upper()
        if key not in _CANONICAL:
            raise RecordError(f"{where}: non-standard lead name {name!r} (expected {list(LEADS)})")
        out.append(_CANONICAL[key])
    return tuple(out)


def reorder_leads(
    signal: np.ndarray, leads: tuple[str, ...], wanted: tuple[str, ...], where: str
) -> np.ndarray:
    """Rows of ``signal`` in ``wanted`` order; a missing lead is an error naming the file."""
    missing = [lead for lead in wanted if lead not in leads]
    if missing:
        raise RecordError(f"{where}: missing leads {missing} (has {list(leads)})")
    if leads == wanted:
        return signal
    index = [leads.index(lead) for lead in wanted]
    return signal[index]


def canonical_order(
    signal: np.ndarray, names: list[str] | tuple[str, ...], where: str
) -> np.ndarray:
    """Rows of ``signal`` in :data:`LEADS` order, from the file's own lead names (any case);
    a non-standard or missing lead is an error naming the file."""
    return reorder_leads(signal, canonical_leads(names, where), LEADS, where)


def flat_leads(signal: np.ndarray, leads: tuple[str, ...]) -> list[str]:
    """Leads that never change: a disconnected electrode rather than a signal."""
    if signal.shape[-1] < 2:
        return []
    return [leads[i] for i in np.flatnonzero(signal.max(axis=-1) == signal.min(axis=-1))]


def check_signal(signal: np.ndarray, where: str) -> None:
    """Reject what would otherwise become a silently wrong tensor."""
    if signal.ndim != 2 or signal.shape[1] == 0:
        raise RecordError(f"{where}: expected (leads, samples), got shape {signal.shape}")
    if not np.isfinite(signal).all():
        bad = int((~np.isfinite(signal)).sum())
        raise RecordError(f"{where}: {bad} NaN/Inf samples")
