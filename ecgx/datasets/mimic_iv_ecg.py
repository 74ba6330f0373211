"""MIMIC-IV-ECG (Gow et al. 2023, physionet.org/content/mimic-iv-ecg): about 800,000 10-s
12-lead ECGs of about 160,000 patients, WFDB format 16 at 500 Hz, 200 adu/mV.

Read as published: ``record_list.csv`` (subject_id, study_id, file_name, ecg_time, path), the
``path`` column naming each record's header without suffix. That covers the full release's
nested layout (``files/p1000/p10000032/s40689238/40689238``) and the demo subset's flatter one
(``files/p10000032/s107143276/107143276``). Without ``record_list.csv`` the headers under
``files/`` are listed and the subject and study ids read from the folder names
(``p<subject>/s<study>/``), which both layouts share.

``machine_measurements.csv`` (joined on study_id) gives the cart's report statements
(``report_0`` … ``report_17``), its intervals (``p_onset``, ``p_end``, ``qrs_onset``,
``qrs_end``, ``t_end``, in ms from the record's start), ``rr_interval`` and the P/QRS/T axes:
all kept as metadata; the statements are each record's labels in the dataset's own vocabulary
(the text as the cart wrote it).

The headers list aVF before aVL; leads are mapped to the canonical order by their names.

Age and sex are not in this release but in MIMIC-IV's ``hosp/patients.csv(.gz)`` (subject_id,
gender, anchor_age, anchor_year, …), which a user with MIMIC-IV access names as
``dataset.patients``: the age at the ECG is anchor_age + (year of ecg_time − anchor_year), as
MIMIC-IV shifts each patient's dates by one offset, so the years between two of their events are
real. MIMIC-IV writes anchor_age 91 for every patient over 89 at anchor_year (de-identification):
those ages are a floor, not a value.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from ecgx.data.cache import file_stamp, listing_stamp
from ecgx.datasets.base import check_root, row_record
from ecgx.errors import ConfigValueError, MissingPathError
from ecgx.formats.record import Record, RecordError, canonical_order, check_signal
from ecgx.formats.wfdb_format16 import read_record

log = logging.getLogger(__name__)

RECORD_LIST = "record_list.csv"
MEASUREMENTS = "machine_measurements.csv"
FILES = "files"
FS = 500
TASKS = ("statements", "intervals", "none")
PATIENT_COLUMNS = ("subject_id", "gender", "anchor_age", "anchor_year")
REPORTS = tuple(f"report_{i}" for i in range(18))
WAVE_COLUMNS = ("rr_interval", "p_onset", "p_end", "qrs_onset", "qrs_end", "t_end",
                "p_axis", "qrs_axis", "t_axis")  # fmt: skip
# The table writes 29999 where a wave was not measured (no P wave in atrial fibrillation, for
# one); taken as a real time it would make a PR interval of ~30 s.
NOT_MEASURED = 29999
#: task=intervals: name -> (end column, start column), in ms
INTERVALS: dict[str, tuple[str, str]] = {
    "qrs_duration": ("qrs_end", "qrs_onset"),
    "pr_interval": ("qrs_onset", "p_onset"),
    "qt_interval": ("t_end", "qrs_onset"),
    "p_duration": ("p_end", "p_onset"),
}
_SPACES = re.compile(r"\s+")


class MIMICIVECG:
    """MIMIC-IV-ECG records with a task over the machine measurements.

    Args:
        root: the release folder (``record_list.csv``, ``machine_measurements.csv``,
            ``files/``).
        task: ``statements`` — classes from the report statements through ``statements``;
            ``intervals`` — regression of ``intervals`` (ms) derived from the onset/offset
            columns (``module.task=regression``); ``none`` — every record, no class
            (pretraining).
        statements: class -> ``{match: [...], unless: [...]}``, or a YAML file holding that
            mapping. A report statement names a class when, lower-cased with its whitespace
            collapsed, it contains one of ``match`` and none of ``unless``; a record has the
            classes of all its statements. Records with none are left out of the task.
        intervals: task=intervals: which of :data:`INTERVALS` to predict; a record is left out
            when one of them is not measured (29999), missing or not positive.
        patients: MIMIC-IV's ``hosp/patients.csv`` (or ``.csv.gz``), relative to ``root`` or
            absolute: age at the ECG and sex (0 male, 1 female) of each subject. None: both NaN.
            A subject missing from it (or a record without ecg_time, for the age) gets NaN,
            counted in the log.
    """

    def __init__(
        self,
        root: str | Path,
        task: str = "statements",
        statements: Mapping[str, Any] | str | Path | None = None,
        intervals: list[str] | tuple[str, ...] = ("qrs_duration", "pr_interval", "qt_interval"),
        patients: str | Path | None = None,
    ) -> None:
        if task not in TASKS:
            raise ConfigValueError(f"dataset.task must be one of {TASKS}, got {task!r}")
        self.root = Path(root).expanduser()
        self.task = task
        self.statements = _statement_map(statements) if task == "statements" else {}
        self.intervals = [str(i) for i in intervals]
        unknown = [i for i in self.intervals if i not in INTERVALS]
        if unknown or not self.intervals:
            raise ConfigValueError(
                f"dataset.intervals: {unknown or 'empty'}; choose from {list(INTERVALS)}"
            )
        self.patients = None if patients in (None, "") else self.root / Path(patients).expanduser()

    # -- files -------------------------------------------------------------------------------
    def ensure(self) -> None:
        check_root(self.root, kind="a MIMIC-IV-ECG folder")
        if not (self.root / RECORD_LIST).is_file() and not (self.root / FILES).is_dir():
            raise MissingPathError(
                f"dataset.root={self.root} is not a MIMIC-IV-ECG folder: neither {RECORD_LIST} "
                f"nor {FILES}/ is in it"
            )
        if self.task != "none" and not (self.root / MEASUREMENTS).is_file():
            raise MissingPathError(
                f"dataset.root={self.root}: {MEASUREMENTS} is missing (dataset.task={self.task} "
                "reads it; task=none reads the signals alone)"
            )
        if self.patients is not None and not self.patients.is_file():
            raise MissingPathError(
                f"dataset.patients={self.patients}: no such file (MIMIC-IV's hosp/patients.csv "
                "or .csv.gz; null leaves age and sex NaN)"
            )

    def signal_spec(self) -> dict:
        """The root and its tables (the cache's metadata keeps their statements and intervals)."""
        spec: dict[str, Any] = {"reader": "mimic_iv_ecg", "root": str(self.root.resolve())}
        listing = self.root / RECORD_LIST
        spec["records"] = (
            file_stamp(listing)
            if listing.is_file()
            else listing_stamp(p.relative_to(self.root) for p in self._headers())
        )
        if (self.root / MEASUREMENTS).is_file():
            spec["measurements"] = file_stamp(self.root / MEASUREMENTS)
        if self.patients is not None:
            spec["patients"] = file_stamp(self.patients)
        return spec

    def _headers(self) -> list[Path]:
        return sorted((self.root / FILES).rglob("*.hea"))

    def records(self) -> pd.DataFrame:
        """subject_id, study_id, path (header without suffix, relative to root), ecg_time."""
        listing = self.root / RECORD_LIST
        if listing.is_file():
            table = pd.read_csv(listing, dtype=str)
            missing = [c for c in ("subject_id", "study_id", "path") if c not in table.columns]
            if missing:
                raise RecordError(f"{listing}: missing columns {missing}")
            return table
        rows = []
        for hea in self._headers():
            rel = hea.relative_to(self.root).with_suffix("")
            subject, study = rel.parts[-3], rel.parts[-2]
            if not (subject[:1] == "p" and study[:1] == "s"):
                raise RecordError(f"{hea}: not under p<subject>/s<study>/ as MIMIC-IV-ECG is")
            rows.append({"subject_id": subject[1:], "study_id": study[1:],
                         "path": rel.as_posix()})  # fmt: skip
        if not rows:
            raise MissingPathError(f"dataset.root={self.root}: no .hea files under {FILES}/")
        return pd.DataFrame(rows)

    def metadata(self) -> pd.DataFrame:
        """One row per record of record_list.csv (its order), with the machine measurements."""
        table = self.records()
        meta = pd.DataFrame(
            {
                "record_id": table["study_id"].str.strip(),
                "patient_id": table["subject_id"].str.strip(),
                "age": np.nan,  # in MIMIC-IV's hosp module (dataset.patients), not this release
                "sex": np.nan,
                "path": table["path"].str.strip(),
                "source": "mimic_iv_ecg",
            }
        )
        if "ecg_time" in table.columns:
            meta["ecg_time"] = table["ecg_time"]
        if self.patients is not None:
            meta["age"], meta["sex"] = self._demographics(meta)
        statements = [[] for _ in range(len(meta))]
        csv = self.root / MEASUREMENTS
        if csv.is_file():
            measured = pd.read_csv(csv, dtype={"subject_id": str, "study_id": str},
                                   low_memory=False)  # fmt: skip
            if "study_id" not in measured.columns:
                raise RecordError(f"{csv}: no study_id column")
            dup = measured["study_id"].duplicated()
            if dup.any():
                raise RecordError(f"{csv}: study_id {measured['study_id'][dup].iloc[0]} twice")
            joined = measured.set_index("study_id").reindex(meta["record_id"])
            absent = int(joined[WAVE_COLUMNS[0]].isna().sum()) if WAVE_COLUMNS[0] in joined else 0
            if absent:
                log.info("%s: %d of %d records have no row", csv, absent, len(meta))
            for column in WAVE_COLUMNS:
                if column in joined.columns:
                    values = pd.to_numeric(joined[column], errors="coerce").to_numpy(
                        float, copy=True
                    )
                    values[values >= NOT_MEASURED] = np.nan
                    meta[column] = values
            for name, (end, start) in INTERVALS.items():
                if end in meta.columns and start in meta.columns:
                    meta[name] = meta[end] - meta[start]
            reports = [c for c in REPORTS if c in joined.columns]
            statements = _statements(joined[reports].to_numpy(dtype=object))
            meta["report"] = [" | ".join(s) for s in statements]
        meta.insert(4, "labels", [{s: 1.0 for s in row} for row in statements])
        return meta

    def _demographics(self, meta: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Age at each ECG and sex (0 male, 1 female) from ``patients``; NaN where unknown."""
        path = self.patients
        try:
            table = pd.read_csv(path, dtype={"subject_id": str})  # .gz by its suffix
        except (OSError, ValueError, EOFError) as err:  # a truncated .gz raises EOFError
            raise RecordError(f"{path}: unreadable patients table ({err})") from err
        missing = [c for c in PATIENT_COLUMNS if c not in table.columns]
        if missing:
            raise RecordError(f"{path}: missing columns {missing} (MIMIC-IV hosp/patients)")
        table["subject_id"] = table["subject_id"].str.strip()
        dup = table["subject_id"].duplicated()
        if dup.any():
            raise RecordError(f"{path}: subject_id {table['subject_id'][dup].iloc[0]} twice")
        gender = table["gender"].astype(str).str.strip().str.upper()
        odd = sorted(set(gender[table["gender"].notna()]) - {"M", "F"})
        if odd:
            raise RecordError(f"{path}: gender {odd[0]!r}: expected M or F")
        table["sex"] = gender.map({"M": 0.0, "F": 1.0})
        joined = table.set_index("subject_id").reindex(meta["patient_id"])
        absent = int(joined["gender"].isna().sum())
        if absent:
            unknown = meta["patient_id"][joined["gender"].isna().to_numpy()].unique()
            log.warning("%s: %d of %d records (%d subjects, first %s) have no row: age and sex "
                        "NaN", path, absent, len(meta), len(unknown), unknown[0])  # fmt: skip
        anchor_age = pd.to_numeric(joined["anchor_age"], errors="coerce").to_numpy(float)
        anchor_year = pd.to_numeric(joined["anchor_year"], errors="coerce").to_numpy(float)
        if "ecg_time" in meta.columns:
            year = pd.to_datetime(meta["ecg_time"], errors="coerce").dt.year.to_numpy(float)
        else:
            year = np.full(len(meta), np.nan)
        age = anchor_age + (year - anchor_year)
        undated = int((np.isnan(year) & ~np.isnan(anchor_age)).sum())
        if undated:
            log.warning("%s: %d records have no ecg_time (%s is what gives it): age NaN",
                        self.root, undated, RECORD_LIST)  # fmt: skip
        return age, joined["sex"].to_numpy(float)

    def read(self, row: Mapping[str, Any]) -> Record:
        """(12, 5000) mV in canonical lead order, mapped by the header's lead names."""
        path = self.root / str(row["path"])
        where = str(path.with_suffix(".hea"))
        signal, fs, names = read_record(path)
        signal = canonical_order(signal, names, where)
        check_signal(signal, where)  # NaN samples (-32768 in format 16) are refused here
        return row_record(row, signal, fs, "mimic_iv_ecg")

    # -- labels ------------------------------------------------------------------------------
    def classify(self, statement: str) -> set[str]:
        """The classes one report statement names (see ``statements``)."""
        text = _clean(statement).lower()
        return {
            name
            for name, rule in self.statements.items()
            if any(m in text for m in rule["match"]) and not any(u in text for u in rule["unless"])
        }

    def labels(self, meta: pd.DataFrame) -> tuple[np.ndarray, list[str], np.ndarray]:
        if self.task == "none":
            return np.zeros((len(meta), 0), np.float32), [], np.ones(len(meta), dtype=bool)
        if self.task == "intervals":
            missing = [i for i in self.intervals if i not in meta.columns]
            if missing:
                raise ConfigValueError(
                    f"dataset.intervals {missing}: {self.root / MEASUREMENTS} lacks the onset / "
                    "offset columns they are derived from"
                )
            y = meta[self.intervals].to_numpy(dtype=np.float32)
            keep = np.isfinite(y).all(axis=1) & (np.nan_to_num(y) > 0).all(axis=1)
            return np.where(keep[:, None], y, 0).astype(np.float32), list(self.intervals), keep
        classes = list(self.statements)
        col = {name: i for i, name in enumerate(classes)}
        # Statements repeat across 800,000 records: each distinct text is matched once.
        seen: dict[str, set[str]] = {}
        y = np.zeros((len(meta), len(classes)), dtype=np.float32)
        for i, found in enumerate(meta["labels"]):
            for text in found:
                names = seen.get(text)
                if names is None:
                    names = seen[text] = self.classify(text)
                for name in names:
                    y[i, col[name]] = 1.0
        return y, classes, y.any(axis=1)


def _statements(block: np.ndarray) -> list[list[str]]:
    """Each row's non-empty statements, cleaned, in column order. Column-wise over the
    non-empty cells, each distinct text cleaned once: row by row this took 18 s of the 27 s of
    listing 800,000 records (most cells are empty, the texts repeat)."""
    rows, cols = np.nonzero(pd.notna(block))
    texts = block[rows, cols]
    cleaned = {t: _clean(str(t)) for t in pd.unique(texts)}
    out: list[list[str]] = [[] for _ in range(len(block))]
    for r, t in zip(rows.tolist(), texts.tolist()):
        text = cleaned[t]
        if text:
            out[r].append(text)
    return out


def _clean(text: str) -> str:
    return _SPACES.sub(" ", text).strip()


def _statement_map(statements: Mapping[str, Any] | str | Path | None) -> dict[str, dict]:
    """class -> {"match": [lower-case substrings], "unless": [...]}, checked."""
    where = "dataset.statements"
    if statements is None:
        raise ConfigValueError(f"{where}: dataset.task=statements needs a statement mapping")
    if isinstance(statements, str | Path):
        path = Path(statements).expanduser()
        if not path.is_file():
            raise MissingPathError(f"{where}={path}: no such file")
        where = str(path)
        try:
            statements = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise ConfigValueError(f"{where}: not YAML ({err})") from err
    if not isinstance(statements, Mapping) or not statements:
        raise ConfigValueError(f"{where}: expected class -> {{match: [...], unless: [...]}}")
    out = {}
    for name, rule in statements.items():
        rule = dict(rule or {})
        extra = set(rule) - {"match", "unless"}
        if extra or not rule.get("match"):
            raise ConfigValueError(
                f"{where}.{name}: needs a non-empty 'match' list (and optionally 'unless'); "
                f"got keys {sorted(rule)}"
            )
        out[str(name)] = {key: [_clean(str(s)).lower() for s in rule.get(key) or []]
                          for key in ("match", "unless")}  # fmt: skip
    return out
