"""What a record file holds, as ``ecgx data inspect <file or folder>`` prints it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ecgx.errors import EcgxError
from ecgx.formats.files import find_records, read_record


def describe(paths: list[str | Path], fs: float | None = None) -> pd.DataFrame:
    """One row per record file under ``paths``: format, rate, leads, duration, amplitude
    range in mV and the metadata the file carries; an unreadable file gets its error."""
    rows = []
    for given in paths:
        for path in find_records(Path(given).expanduser()):
            try:
                rec = read_record(path, fs)
            except EcgxError as err:
                rows.append({"file": str(path), "error": str(err)})
                continue
            rows.append({
                "file": str(path), "format": rec.format, "fs": round(rec.fs, 3),
                "leads": " ".join(rec.leads), "samples": rec.signal.shape[1],
                "seconds": round(rec.signal.shape[1] / rec.fs, 3),
                "min_mV": round(float(rec.signal.min()), 4),
                "max_mV": round(float(rec.signal.max()), 4),
                "derived_leads": " ".join(rec.extra.get("derived_leads", [])),
                "age": rec.age, "sex": {0: "male", 1: "female"}.get(rec.sex, ""),
                "patient_id": rec.patient_id or "", "statements": " | ".join(rec.statements),
            })  # fmt: skip
    return pd.DataFrame(rows)
