"""The China Physiological Signal Challenge 2018 training set in its original release.

Each record is a MATLAB v5 file holding a struct ``ECG`` with ``sex``, ``age`` and ``data``
(12 × N, mV, leads I, II, III, aVR, aVL, aVF, V1-V6, 500 Hz); ``REFERENCE.csv`` gives up to three
of the nine class codes per record (``First_label``, ``Second_label``, ``Third_label``).
The same recordings with SNOMED codes are the CPSC part of CinC 2020/2021
(:class:`ecgx.datasets.cinc.CinC`); :data:`SNOMED_TO_CLASS` maps those codes onto these classes.
"""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd

from ecgx.data.cache import file_stamp, listing_stamp
from ecgx.datasets.base import check_root, multi_hot, row_record
from ecgx.errors import ConfigValueError, MissingPathError
from ecgx.formats.matlab import load_mat
from ecgx.formats.record import LEADS, Record, RecordError, check_signal

log = logging.getLogger(__name__)

REFERENCE_CSV = "REFERENCE.csv"
# REFERENCE.csv codes 1-9 in order (1 Normal, 2 AF, 3 I-AVB, 4 LBBB, 5 RBBB, 6 PAC, 7 PVC,
# 8 STD, 9 STE), named as the ecg-diagnosis port names them (porting spec B2).
CLASSES: tuple[str, ...] = ("SNR", "AF", "IAVB", "LBBB", "RBBB", "PAC", "PVC", "STD", "STE")
# The SNOMED codes the CinC releases give these records (porting spec B2).
SNOMED_TO_CLASS: dict[str, str] = {
    "426783006": "SNR", "164889003": "AF", "270492004": "IAVB", "164909002": "LBBB",
    "713427006": "RBBB", "59118001": "RBBB", "284470004": "PAC", "63593006": "PAC",
    "164884008": "PVC", "429622005": "STD", "164931005": "STE",
}  # fmt: skip
_LABEL_COLUMNS = ("First_label", "Second_label", "Third_label")


class CPSC2018:
    """CPSC 2018 training records with the nine-class multi-hot.

    Args:
        root: folder with ``REFERENCE.csv``; the ``.mat`` files are found recursively, so the
            TrainingSet1-3 archives can be unpacked as they come.
        classes: the task's classes, any of :data:`CLASSES` in the order wanted.
        fs: the files' sampling rate, which they do not record (500 Hz for the original release).
    """

    def __init__(
        self,
        root: str | Path,
        classes: list[str] | tuple[str, ...] = CLASSES,
        fs: float = 500,
    ) -> None:
        classes = [classes] if isinstance(classes, str) else [str(c) for c in classes]
        unknown = [c for c in classes if c not in CLASSES]
        if unknown or not classes or len(set(classes)) != len(classes):
            raise ConfigValueError(
                f"dataset.classes must be distinct names from {list(CLASSES)}, got {classes}"
            )
        if not fs or fs <= 0:
            raise ConfigValueError(f"dataset.fs must be a positive rate in Hz, got {fs!r}")
        self.root = Path(root).expanduser()
        self.classes = classes
        self.fs = float(fs)
        self._meta: pd.DataFrame | None = None

    # -- files -------------------------------------------------------------------------------
    def ensure(self) -> None:
        """Fail early on a missing root or REFERENCE.csv."""
        check_root(self.root, [REFERENCE_CSV], "a CPSC 2018 folder")

    def signal_spec(self) -> dict:
        """What determines the signals: the folder and the declared rate, not the classes."""
        return {
            "reader": "cpsc2018",
            "root": str(self.root.resolve()),
            "fs": self.fs,
            "reference": file_stamp(self.root / REFERENCE_CSV),
            "files": listing_stamp(p.name for p in self.root.rglob("*.mat")),
        }

    def metadata(self) -> pd.DataFrame:
        """One row per ``.mat``: record_id, patient_id, age, sex, labels (class -> 1.0), path,
        source, fs, n_samples.

        Age and sex live inside each file, so this loads every file once (a few ms each) and
        keeps the table. A file that cannot be loaded gets NaN age and sex (logged); reading it
        raises the RecordError.
        """
        if self._meta is not None:
            return self._meta.copy()
        reference = read_reference(self.root / REFERENCE_CSV)
        files = sorted(
            (p.relative_to(self.root) for p in self.root.rglob("*.mat") if p.name[0] != "."),
            key=lambda p: p.as_posix(),
        )
        rows, broken, unlisted = [], [], []
        for rel in files:
            name = rel.stem
            try:
                sex, age, data = _load_struct(self.root / rel)
                n_samples = int(data.shape[-1]) if data.ndim == 2 else 0
            except RecordError as err:
                broken.append(str(err))
                sex, age, n_samples = math.nan, math.nan, 0
            if name not in reference:
                unlisted.append(name)
            rows.append(
                {
                    "record_id": name,
                    # CPSC 2018 publishes no patient ids: each record stands alone.
                    "patient_id": name,
                    "age": age,
                    "sex": sex,
                    "labels": {c: 1.0 for c in reference.get(name, [])},
                    "path": rel.as_posix(),
                    "source": "CPSC",
                    "fs": self.fs,
                    "n_samples": n_samples,
                }
            )
        if broken:
            log.warning("%d unreadable CPSC 2018 files, e.g. %s", len(broken), broken[0])
        if unlisted:
            log.warning(
                "%d files have no row in %s (no labels), e.g. %s",
                len(unlisted),
                REFERENCE_CSV,
                unlisted[0],
            )
        columns = ["record_id", "patient_id", "age", "sex", "labels", "path", "source", "fs",
                   "n_samples"]  # fmt: skip
        table = pd.DataFrame(rows, columns=columns)
        table["age"] = table["age"].astype(float)
        table["sex"] = table["sex"].astype(float)
        table["n_samples"] = table["n_samples"].astype(int)
        self._meta = table
        return table.copy()

    def read(self, row: pd.Series) -> Record:
        """The record of one metadata row, leads in canonical order (as stored), in mV."""
        path = self.root / row["path"]
        _, _, data = _load_struct(path)
        if data.ndim != 2 or data.shape[0] != len(LEADS):
            raise RecordError(f"{path}: ECG.data is {data.shape}, expected ({len(LEADS)}, N)")
        if data.dtype.kind not in "iuf":
            raise RecordError(f"{path}: ECG.data is not numeric ({data.dtype})")
        signal = data.astype(np.float32)
        check_signal(signal, str(path))
        return row_record(row, signal, self.fs, "CPSC")

    # -- labels ------------------------------------------------------------------------------
    def labels(self, meta: pd.DataFrame) -> tuple[np.ndarray, list[str], np.ndarray]:
        """Multi-hot targets (N, C) over ``classes``, the class names, records with any class."""
        y, keep = multi_hot(meta["labels"], list(self.classes))
        return y, list(self.classes), keep


def read_reference(path: str | Path) -> dict[str, list[str]]:
    """``REFERENCE.csv`` -> {record: class names, first label first}."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            table = list(reader)
            header = reader.fieldnames or []
    except FileNotFoundError as err:
        raise MissingPathError(f"{path} is missing") from err
    except (OSError, UnicodeError, csv.Error) as err:
        raise RecordError(f"{path}: unreadable label file ({err})") from err
    missing = [c for c in ("Recording", *_LABEL_COLUMNS) if c not in header]
    if missing:
        raise RecordError(f"{path}: missing columns {missing} (has {header})")
    out: dict[str, list[str]] = {}
    for row in table:
        name = (row["Recording"] or "").strip()
        names: list[str] = []
        for column in _LABEL_COLUMNS:
            value = (row[column] or "").strip()
            if not value:
                continue
            try:
                number = float(value)
            except ValueError:
                number = math.nan
            if not (number.is_integer() and 1 <= number <= len(CLASSES)):
                raise RecordError(f"{path}: {name} {column}={value!r} is not a code 1-9")
            label = CLASSES[int(number) - 1]
            if label not in names:
                names.append(label)
        if name in out:
            raise RecordError(f"{path}: {name} is listed twice")
        out[name] = names
    return out


def _load_struct(path: Path) -> tuple[float, float, np.ndarray]:
    """(sex 0/1/NaN, age or NaN, data) of one file; RecordError naming it otherwise."""
    ecg = load_mat(path, "ECG").get("ECG")
    names = ecg.dtype.names if isinstance(ecg, np.ndarray) else None
    if not names or ecg.size != 1 or "data" not in names:
        raise RecordError(f"{path}: no struct ECG with a field 'data'")
    struct = ecg.flat[0]
    data = np.asarray(struct["data"])
    sex = _scalar(struct["sex"]) if "sex" in names else None
    age = _scalar(struct["age"]) if "age" in names else None
    return _sex(sex), _age(age), data


def _scalar(value: object) -> object:
    array = np.asarray(value)
    return array.flat[0] if array.size else None


def _sex(value: object) -> float:
    text = str(value).strip().lower() if value is not None else ""
    return {"male": 0.0, "m": 0.0, "female": 1.0, "f": 1.0}.get(text, math.nan)


def _age(value: object) -> float:
    try:
        age = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan
    return age if math.isfinite(age) and age >= 0 else math.nan
