"""EDF and EDF+ files through pyedflib (the EDFlib C library's binding).

pyedflib checks the header against the file size (a truncated data record is refused, not
zero-filled), skips EDF+ annotation signals and scales each signal from its header:
physical = (digital − dmin) / (dmax − dmin) × (pmax − pmin) + pmin. fs of a signal is its
samples per data record ÷ the data-record duration; the ECG leads must share one rate. Leads
keep the file's labels (``ECG I``, ``II``…); units from the physical dimension (µV, mV, V).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ecgx.formats.record import LEADS, Record, RecordError, check_signal

FORMAT = "EDF"
_TO_MV = {"uv": 1e-3, "µv": 1e-3, "mv": 1.0, "v": 1e3}
_BY_UPPER = {name.upper(): name for name in LEADS}
_PREFIX = re.compile(r"^(?:ECG|EKG)[\s_-]*", re.IGNORECASE)


def is_edf(head: bytes) -> bool:
    """Whether the first bytes are an EDF header: version ``0`` padded to 8 bytes, then ASCII."""
    return len(head) >= 256 and head[:8] == b"0       " and head[184:192].strip().isdigit()


def lead_name(label: str) -> str:
    """``ECG II`` / ``EKG-aVR`` / ``V1`` -> the canonical spelling; other labels unchanged."""
    bare = _PREFIX.sub("", label.strip())
    return _BY_UPPER.get(bare.upper(), label.strip())


def read(path: Path) -> Record:
    """Every signal of an EDF/EDF+ file in mV (annotations left out), at their one rate."""
    try:
        import pyedflib
    except ImportError as err:  # a core dependency; only a broken install lacks it
        raise RecordError("reading EDF needs pyedflib: pip install pyedflib") from err
    if not path.is_file():
        raise RecordError(f"{path}: file missing")
    try:
        reader = pyedflib.EdfReader(str(path))
    except OSError as err:  # EDFlib's checks: size, header fields, format errors
        raise RecordError(f"{path}: not a readable EDF/EDF+ file ({err})") from err
    try:
        labels = reader.getSignalLabels()
        rates = {float(r) for r in reader.getSampleFrequencies()}
        if not labels:
            raise RecordError(f"{path}: no signals")
        if len(rates) != 1:
            raise RecordError(f"{path}: signals at different rates {sorted(rates)} Hz "
                              "(ecgx reads one rate per record)")  # fmt: skip
        rows = []
        for i, label in enumerate(labels):
            unit = reader.getPhysicalDimension(i).strip().lower()
            if unit not in _TO_MV:
                raise RecordError(f"{path}: signal {label!r} in {unit or 'no unit'!r}; ecgx "
                                  f"reads {sorted(_TO_MV)}")  # fmt: skip
            rows.append(reader.readSignal(i, digital=False) * _TO_MV[unit])
        record = Record(record_id=path.stem, signal=np.stack(rows).astype(np.float32),
                        fs=rates.pop(), leads=tuple(lead_name(lb) for lb in labels),
                        format=FORMAT)  # fmt: skip
        sex = (reader.getSex() if hasattr(reader, "getSex") else "") or ""
        record.sex = {"male": 0, "female": 1, "m": 0, "f": 1}.get(str(sex).strip().lower())
        record.patient_id = (reader.getPatientCode() or "").strip() or None
        record.extra["edf_plus"] = bool(reader.filetype)
    finally:
        reader.close()
    check_signal(record.signal, str(path))
    return record
