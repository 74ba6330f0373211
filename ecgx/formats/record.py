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
    format: str = ""  # the file format it was read from ("MUSE XML", "DICOM", "WFDB", ...)
    statements: list[str] = field(default_factory=list)  # a machine's or reader's interpretation


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


LIMB_FROM_I_II: tuple[str, ...] = ("III", "aVR", "aVL", "aVF")


def derive_limb_leads(
    signal: np.ndarray, leads: tuple[str, ...]
) -> tuple[np.ndarray, tuple[str, ...]]:
    """``signal`` with III, aVR, aVL, aVF appended where the file lacks them (8-lead carts store
    I, II, V1-V6 only): Einthoven III = II - I and Goldberger aVR = -(I + II)/2,
    aVL = I - II/2, aVF = II - I/2, exact identities of the limb electrodes, not estimates.
    Leads the file has are never replaced; without I and II nothing is derived."""
    missing = [lead for lead in LIMB_FROM_I_II if lead not in leads]
    if not missing or "I" not in leads or "II" not in leads:
        return signal, leads
    one, two = signal[leads.index("I")], signal[leads.index("II")]
    formulas = {"III": two - one, "aVR": -(one + two) / 2, "aVL": one - two / 2,
                "aVF": two - one / 2}  # fmt: skip
    rows = np.stack([formulas[lead] for lead in missing]).astype(signal.dtype, copy=False)
    return np.concatenate([signal, rows]), (*leads, *missing)


def canonical_record(record: Record) -> Record:
    """The record in :data:`LEADS` order, the 12 leads every model takes: limb leads an
    8-lead file lacks are derived from I and II (named in ``extra["derived_leads"]``), leads
    beyond the twelve (V7, V3R, a pressure) are left out (``extra["dropped_leads"]``), a lead
    that cannot be had is an error naming the file. Readers return the leads their file holds;
    this is the one place that reorders them. ``extra["file_leads"]`` keeps the file's order."""
    where = str(record.extra.get("file", record.record_id))
    record.extra.setdefault("file_leads", tuple(record.leads))
    names = [_CANONICAL.get(name.strip().upper(), name) for name in record.leads]
    if len(set(names)) != len(names):
        raise RecordError(f"{where}: a lead appears twice ({list(record.leads)})")
    leads = tuple(names)
    signal, full = derive_limb_leads(record.signal, leads)
    if len(full) > len(leads):
        derived = [*record.extra.get("derived_leads", []), *full[len(leads) :]]
        record.extra["derived_leads"] = derived
    dropped = [name for name in full if name not in LEADS]
    if dropped:
        record.extra["dropped_leads"] = dropped
    record.signal = reorder_leads(signal, full, LEADS, where)
    record.leads = LEADS
    return record


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
