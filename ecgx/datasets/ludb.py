"""LUDB, the Lobachevsky University Electrocardiography Database (Kalyakulina et al., IEEE Access
2020; physionet.org/content/ludb/1.0.1): 200 records, 12 leads, 500 Hz, 10 s, each lead's P, QRS
and T waves delineated by cardiologists.

Layout as published: ``<n>.hea`` / ``<n>.dat`` (WFDB format 16, a gain and non-zero baseline of
its own per lead, lower-case lead names) and one annotation file per lead, ``<n>.i`` … ``<n>.v6``,
whose symbols come in triplets ``(`` onset, ``p`` / ``N`` / ``t`` peak, ``)`` offset. The header
comments give ``<age>``, ``<sex>`` (M/F) and the diagnoses, one statement per line after
``<diagnoses>:``.

Besides being a dataset (``dataset=ludb``: statements as classes), its wave boundaries are ground
truth: :func:`wave_boundaries` per lead, :func:`segment_masks` as lead × wave × sample masks
(what explainer ground-truth scores and delineation checks take).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from ecgx.data.cache import listing_stamp
from ecgx.datasets.base import check_root, multi_hot, row_record
from ecgx.formats.record import LEADS, Record, RecordError, canonical_leads, reorder_leads

log = logging.getLogger(__name__)

FS = 500
WAVES: tuple[str, ...] = ("P", "QRS", "T")
_SYMBOL_WAVE = {"p": "P", "N": "QRS", "t": "T"}
#: LUDB's annotation file extension of each canonical lead
ANNOTATION_EXT = {lead: lead.lower() for lead in LEADS}


class LUDB:
    """LUDB records with their diagnoses as classes.

    Args:
        root: the folder holding ``<n>.hea`` / ``<n>.dat`` and the annotation files.
        classes: statements to keep, in this order (None: every statement found, sorted).
        rhythm_only: classes from the ``Rhythm:`` statement alone (sinus rhythm, atrial
            fibrillation, …) instead of every diagnosis line.
    """

    def __init__(
        self, root: str | Path, classes: list[str] | None = None, rhythm_only: bool = False
    ) -> None:
        self.root = Path(root).expanduser()
        self.classes = list(classes) if classes else None
        self.rhythm_only = bool(rhythm_only)

    def ensure(self) -> None:
        check_root(self.root)
        if not self._headers():
            raise RecordError(f"dataset.root={self.root} is not a LUDB folder: no .hea files")

    def _headers(self) -> list[Path]:
        return sorted(self.root.glob("*.hea"), key=lambda p: (len(p.stem), p.stem))

    def signal_spec(self) -> dict:
        return {"reader": "ludb", "root": str(self.root.resolve()), "sampling_rate": FS,
                "records": listing_stamp(p.name for p in self._headers())}  # fmt: skip

    def metadata(self) -> pd.DataFrame:
        rows = []
        for hea in self._headers():
            comments = _comments(hea)
            rows.append({
                "record_id": hea.stem, "patient_id": hea.stem,  # one record per patient
                "age": _number(comments.get("age")), "sex": _sex(comments.get("sex")),
                "labels": {s: 1.0 for s in _diagnoses(hea)}, "path": hea.stem,
                "source": "ludb",
            })  # fmt: skip
        return pd.DataFrame(rows)

    def read(self, row: dict) -> Record:
        from ecgx.formats.wfdb_format16 import read_record

        base = self.root / row["path"]
        where = str(base.with_suffix(".hea"))
        signal, fs, names = read_record(base)
        if fs != FS:
            raise RecordError(f"{where}: {fs:g} Hz, LUDB records are {FS} Hz")
        leads = canonical_leads(names, where)
        return row_record(row, reorder_leads(signal, leads, LEADS, where), FS, "ludb")

    def labels(self, meta: pd.DataFrame) -> tuple[np.ndarray, list[str], np.ndarray]:
        per_record = [
            {s for s in labels if not self.rhythm_only or s.startswith("Rhythm:")}
            for labels in meta["labels"]
        ]
        classes = self.classes or sorted(set().union(*per_record))
        y, keep = multi_hot(per_record, list(classes))
        return y, list(classes), keep


def _comments(hea: Path) -> dict[str, str]:
    out = {}
    for line in hea.read_text(errors="replace").splitlines():
        match = re.match(r"#\s*<(\w+)>:\s*(.*)", line)
        if match:
            out[match.group(1).lower()] = match.group(2).strip()
    return out


def _diagnoses(hea: Path) -> list[str]:
    """The statements after ``#<diagnoses>:``, one per comment line, without the final dot."""
    lines = hea.read_text(errors="replace").splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.lower().startswith("#<diagnoses>")), None)
    if start is None:
        return []
    return [ln.lstrip("#").strip().rstrip(".").strip() for ln in lines[start + 1 :]
            if ln.startswith("#") and ln.lstrip("#").strip()]  # fmt: skip


def _number(text: str | None) -> float:
    try:
        return float(text) if text else np.nan
    except ValueError:
        return np.nan


def _sex(text: str | None) -> float:
    return {"m": 0.0, "f": 1.0}.get((text or "").strip().lower()[:1], np.nan)


def wave_boundaries(root: str | Path, record_id: str, lead: str) -> pd.DataFrame:
    """The cardiologists' waves of one lead: columns wave (P/QRS/T), onset, peak, offset
    (sample indices). RecordError naming the file when it is missing or malformed."""
    import wfdb

    base = Path(root).expanduser() / record_id
    ext = ANNOTATION_EXT.get(lead)
    if ext is None:
        raise RecordError(f"{base}: no LUDB annotation for lead {lead!r} (leads: {list(LEADS)})")
    path = base.with_suffix(f".{ext}")
    if not path.is_file():
        raise RecordError(f"{path}: annotation file missing")
    try:
        ann = wfdb.rdann(str(base), ext)
    except Exception as err:  # wfdb raises several types for a damaged file
        raise RecordError(f"{path}: unreadable annotation file ({err})") from err
    symbols, samples = list(ann.symbol), np.asarray(ann.sample)
    rows = []
    for i, symbol in enumerate(symbols):
        if symbol not in _SYMBOL_WAVE:
            continue
        # A peak between its "(" and ")": the triplet LUDB writes for every wave.
        if not (0 < i < len(symbols) - 1 and symbols[i - 1] == "(" and symbols[i + 1] == ")"):
            raise RecordError(f"{path}: wave {symbol!r} at sample {samples[i]} lacks its "
                              "'(' onset or ')' offset")  # fmt: skip
        rows.append((_SYMBOL_WAVE[symbol], int(samples[i - 1]), int(samples[i]),
                     int(samples[i + 1])))  # fmt: skip
    return pd.DataFrame(rows, columns=["wave", "onset", "peak", "offset"])


def segment_masks(root: str | Path, record_id: str, n_samples: int) -> np.ndarray:
    """Boolean (12 leads, 3 waves P/QRS/T, n_samples): where the cardiologists put each wave
    (onset and offset inclusive), leads in canonical order."""
    masks = np.zeros((len(LEADS), len(WAVES), n_samples), dtype=bool)
    for k, lead in enumerate(LEADS):
        for wave, onset, _, offset in wave_boundaries(root, record_id, lead).itertuples(
            index=False
        ):
            masks[k, WAVES.index(wave), onset : offset + 1] = True
    return masks
