"""Any folder of records (``dataset=folder``): every record file under a root, recursively, in
every format :func:`ecgx.formats.files.read_record` reads, with optional labels from a CSV.

For a user's own hospital data, for pretraining (no labels: every record kept, no class) and
for ``ecgx predict`` / ``ecgx embed`` over a folder.

The labels CSV (``labels_csv``) has one row per record and a key column, the first of
``record_id``, ``path``, ``record``, ``file``: the record's path relative to the root, with or
without its suffix (``site_a/0001`` or ``site_a/0001.hea``), or its file name alone where that
name is unique under the root. The classes are either a ``labels`` column (``AF;RBBB``,
separated by ``;`` or ``,``) or, without one, every other column read as 0/1 (the CODE
``gold_standard.csv`` layout). Optional ``patient_id``, ``age`` and ``sex`` columns (``M``/``F``,
``male``/``female`` or 0 male / 1 female) fill the record's demographics; ``patient_id`` keeps a
patient's records in one split.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from ecgx.data.cache import file_stamp, listing_stamp
from ecgx.datasets.base import check_root
from ecgx.errors import ConfigValueError, MissingPathError
from ecgx.formats.files import find_records, read_record
from ecgx.formats.record import Record, RecordError, canonical_record, check_signal

log = logging.getLogger(__name__)

KEY_COLUMNS = ("record_id", "path", "record", "file")
DEMOGRAPHIC_COLUMNS = ("patient_id", "age", "sex")
_SEPARATOR = re.compile(r"[;,]")
_SEX = {"m": 0.0, "male": 0.0, "0": 0.0, "0.0": 0.0, "f": 1.0, "female": 1.0, "1": 1.0,
        "1.0": 1.0}  # fmt: skip


class Folder:
    """Every record under ``root``, optionally labelled.

    Args:
        root: the folder; records are found recursively (:func:`ecgx.formats.files.find_records`:
            by suffix, and by content for DICOM/SCP-ECG/EDF files without one).
        labels_csv: the labels table (see the module's note), relative to ``root`` or absolute;
            ``None``: unlabelled, every record kept with no class (pretraining).
        fs: the sampling rate of formats that carry none (``.npy``; CPSC ``.mat``, Chapman
            ``.csv`` and SPH ``.h5`` default to 500 Hz); files with their own rate keep it.
        classes: the task's classes in the order wanted; ``None``: every class of the labels
            CSV, sorted.
    """

    def __init__(
        self,
        root: str | Path,
        labels_csv: str | Path | None = None,
        fs: float | None = None,
        classes: list[str] | None = None,
    ) -> None:
        self.root = Path(root).expanduser()
        self.labels_csv = None
        if labels_csv:
            path = Path(labels_csv).expanduser()
            self.labels_csv = path if path.is_absolute() else self.root / path
        if fs is not None and not float(fs) > 0:
            raise ConfigValueError(f"dataset.fs={fs} must be a positive rate in Hz")
        self.fs = float(fs) if fs is not None else None
        self.classes = [str(c) for c in classes] if classes is not None else None
        self._files: list[Path] | None = None

    # -- files -------------------------------------------------------------------------------
    def ensure(self) -> None:
        check_root(self.root, kind="a folder of records")
        if self.labels_csv is not None and not self.labels_csv.is_file():
            raise MissingPathError(f"dataset.labels_csv does not exist: {self.labels_csv}")

    def files(self) -> list[Path]:
        """The record files under the root, sorted (one scan per reader)."""
        if self._files is None:
            try:
                files = find_records(self.root)
            except MissingPathError as err:
                raise MissingPathError(f"dataset.root={self.root}: {err}") from err
            # A labels table next to the records is no record.
            self._files = [p for p in files if p != self.labels_csv]
        return self._files

    def signal_spec(self) -> dict:
        """The root, its file listing and the rate; the labels CSV too, since the cache keeps
        each record's labels in its metadata."""
        rel = [p.relative_to(self.root).as_posix() for p in self.files()]
        spec = {"reader": "folder", "root": str(self.root.resolve()), "fs": self.fs,
                "files": listing_stamp(rel)}  # fmt: skip
        if self.labels_csv is not None:
            spec["labels_csv"] = [str(self.labels_csv.resolve()), *file_stamp(self.labels_csv)]
        return spec

    def metadata(self) -> pd.DataFrame:
        """One row per record file, sorted by path; labels and demographics from the CSV."""
        rel = [p.relative_to(self.root).as_posix() for p in self.files()]
        ids = [_strip_suffix(r) for r in rel]
        meta = pd.DataFrame(
            {
                "record_id": ids,
                "patient_id": ids,  # a record of its own unless the CSV says otherwise
                "age": np.nan,
                "sex": np.nan,
                "labels": [{} for _ in ids],
                "path": rel,
                # The top folder names the source (a site, a device): leave_source_out uses it.
                "source": [r.split("/", 1)[0] if "/" in r else "." for r in rel],
            }
        )
        if self.labels_csv is not None:
            self._join_labels(meta)
        return meta

    def _join_labels(self, meta: pd.DataFrame) -> None:
        csv = self.labels_csv
        try:
            table = pd.read_csv(csv, dtype=str, keep_default_na=False)
        except (OSError, ValueError) as err:
            raise RecordError(f"{csv}: unreadable labels table ({err})") from err
        key = next((c for c in KEY_COLUMNS if c in table.columns), None)
        if key is None:
            raise ConfigValueError(
                f"dataset.labels_csv={csv}: no key column; it needs one of {list(KEY_COLUMNS)} "
                f"(has {list(table.columns)})"
            )
        keys = table[key].str.strip().map(lambda s: _strip_suffix(s.replace("\\", "/")))
        dup = keys[keys.duplicated()]
        if len(dup):
            raise ConfigValueError(f"{csv}: record {dup.iloc[0]!r} is listed twice ({key})")
        # A key is the relative path without suffix, or the file name alone where unique.
        where = {rid: i for i, rid in enumerate(meta["record_id"])}
        stems = pd.Series(meta["record_id"]).map(lambda r: r.rsplit("/", 1)[-1])
        unique = stems[~stems.duplicated(keep=False)]
        where.update({s: i for i, s in unique.items() if s not in where})
        pos = keys.map(where)
        unmatched = keys[pos.isna()]
        if len(unmatched):
            log.warning(
                "%s: %d of %d rows name no record under %s (first: %s); they are left out",
                csv, len(unmatched), len(keys), self.root, list(unmatched[:3]),
            )  # fmt: skip
        rows = table[pos.notna()]
        at = pos.dropna().astype(int).to_numpy()
        if "labels" in table.columns:
            per_row = [_label_set(text) for text in rows["labels"]]
        else:
            class_columns = [c for c in table.columns if c not in (key, *DEMOGRAPHIC_COLUMNS)]
            per_row = [_hot_columns(r, class_columns, csv) for _, r in rows.iterrows()]
        labels = list(meta["labels"])
        for i, codes in zip(at, per_row):
            labels[i] = {c: 1.0 for c in codes}
        meta["labels"] = labels
        if "patient_id" in table.columns:
            given = rows["patient_id"].str.strip().to_numpy()
            pid = meta["patient_id"].to_numpy(dtype=object, copy=True)
            pid[at] = np.where(given != "", given, pid[at])
            meta["patient_id"] = pid
        if "age" in table.columns:
            age = meta["age"].to_numpy(dtype=float, copy=True)
            age[at] = pd.to_numeric(rows["age"], errors="coerce").to_numpy(dtype=float)
            meta["age"] = age
        if "sex" in table.columns:
            sex = meta["sex"].to_numpy(dtype=float, copy=True)
            sex[at] = [_SEX.get(s.strip().lower(), np.nan) for s in rows["sex"]]
            meta["sex"] = sex
        meta["labelled"] = False
        meta.loc[at, "labelled"] = True

    def read(self, row: dict) -> Record:
        """The record in canonical lead order (limb leads derived where an 8-lead file lacks
        them), in mV at the file's rate."""
        record = canonical_record(read_record(self.root / row["path"], self.fs))
        check_signal(record.signal, str(self.root / row["path"]))
        record.record_id = str(row["record_id"])
        record.patient_id = str(row["patient_id"])
        age, sex = row.get("age"), row.get("sex")
        if age is not None and not pd.isna(age):
            record.age = float(age)
        if sex is not None and not pd.isna(sex):
            record.sex = int(sex)
        record.labels = dict(row.get("labels") or {})
        record.source = str(row.get("source", "folder"))
        return record

    # -- labels ------------------------------------------------------------------------------
    def labels(self, meta: pd.DataFrame) -> tuple[np.ndarray, list[str], np.ndarray]:
        """Multi-hot over the CSV's classes; without a labels CSV no class and every record
        kept (pretraining reads the signals alone)."""
        if self.labels_csv is None:
            return np.zeros((len(meta), 0), np.float32), [], np.ones(len(meta), dtype=bool)
        found = sorted(set().union(*(set(d) for d in meta["labels"])))
        classes = self.classes if self.classes is not None else found
        unknown = [c for c in classes if c not in found]
        if unknown:
            raise ConfigValueError(
                f"dataset.classes: {unknown} label no record of {self.labels_csv} "
                f"(its classes: {found})"
            )
        col = {name: i for i, name in enumerate(classes)}
        y = np.zeros((len(meta), len(classes)), dtype=np.float32)
        for i, codes in enumerate(meta["labels"]):
            for code in codes:
                if code in col:
                    y[i, col[code]] = 1.0
        return y, list(classes), y.any(axis=1)


def _strip_suffix(rel: str) -> str:
    head, _, name = rel.rpartition("/")
    stem = name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name
    # DICOM files named by UID (1.2.840.…) have no suffix of their own: keep the name whole.
    if stem != name and name.rsplit(".", 1)[1].isdigit():
        stem = name
    return f"{head}/{stem}" if head else stem


def _label_set(text: str) -> set[str]:
    return {part.strip() for part in _SEPARATOR.split(text or "") if part.strip()}


def _hot_columns(row: pd.Series, columns: list[str], csv: Path) -> set[str]:
    out = set()
    for column in columns:
        value = str(row[column]).strip()
        if value in ("1", "1.0", "True", "true"):
            out.add(column)
        elif value not in ("0", "0.0", "", "False", "false"):
            raise RecordError(
                f"{csv}: column {column!r} holds {value!r}; without a 'labels' column every "
                "column other than the key, patient_id, age and sex is a class (0 or 1)"
            )
    return out
