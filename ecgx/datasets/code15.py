"""CODE-15% (Ribeiro et al., zenodo 4916206: 345,779 exams of 233,770 patients) and the CODE
test set (Ribeiro et al., Nat Commun 2020, zenodo 3765780: 827 exams annotated by
cardiologists).

Both store tracings in HDF5: dataset ``tracings`` (N, 4096, 12) float32 at 400 Hz, 7 s
(2,800 samples) or 10 s (4,000) records zero-padded equally on both sides to 4,096. CODE-15%
splits them over ``exams_part0.hdf5`` … ``exams_part17.hdf5``, each with an ``exam_id``
dataset row-aligned with ``tracings`` (a last row of exam_id 0 pads the file), and lists exams
in ``exams.csv`` (exam_id, age, is_male, nn_predicted_age, 1dAVb, RBBB, LBBB, SB, ST, AF,
patient_id, death, timey, normal_ecg, trace_file). The test set has one
``ecg_tracings.hdf5`` (no exam ids) whose row i is row i of ``gold_standard.csv`` and
``attributes.csv`` (age, sex).

The padding is removed on reading (the span between the first and the last sample any lead
leaves zero), so crops and windows never score padding as signal. HDF5 files are read one
record at a time through an open handle per process, never whole.

Units and lead order: the data README says the values are "at the scale 1e-4 V" and lists the
leads DI, DII, DIII, AVL, AVF, AVR, V1–V6; these are the defaults (``scale_to_mv: 0.1``,
``leads``). The authors' preprocessing repository (antonior92/ecg-preprocessing) instead
writes AVR, AVL, AVF and says CODE-15% was "scaled by 2"; both are config values, so a user
who establishes otherwise changes them without code.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd

from ecgx.data.cache import file_stamp
from ecgx.datasets.base import check_root, multi_hot, row_record
from ecgx.errors import ConfigValueError, MissingPathError
from ecgx.formats.record import Record, RecordError, canonical_order, check_signal

log = logging.getLogger(__name__)

FS = 400
CLASSES = ("1dAVb", "RBBB", "LBBB", "SB", "ST", "AF")
FILE_LEADS = ("DI", "DII", "DIII", "AVL", "AVF", "AVR", "V1", "V2", "V3", "V4", "V5", "V6")
_EINTHOVEN = {"DI": "I", "DII": "II", "DIII": "III"}
EXAMS_CSV = "exams.csv"
PARTS = "exams_part*.hdf5"
TEST_HDF5 = "ecg_tracings.hdf5"
GOLD_CSV = "gold_standard.csv"
ATTRIBUTES_CSV = "attributes.csv"
#: the CODE test set's other annotators and the paper's network (row i = tracing i), by the
#: names of their files in the authors' repository (data/annotations/<name>.csv)
REFERENCES = ("dnn", "cardiologist1", "cardiologist2", "cardiology_residents",
              "emergency_residents", "medical_students")  # fmt: skip


class _Tracings:
    """What both readers share: reading one HDF5 row, trimming the padding, mapping leads."""

    def __init__(self, root: str | Path, classes: Sequence[str], scale_to_mv: float,
                 leads: Sequence[str]) -> None:  # fmt: skip
        self.root = Path(root).expanduser()
        classes = [classes] if isinstance(classes, str) else [str(c) for c in classes]
        unknown = [c for c in classes if c not in CLASSES]
        if unknown or not classes:
            raise ConfigValueError(f"dataset.classes: {unknown or 'empty'}; choose from {CLASSES}")
        self.classes = classes
        if not float(scale_to_mv) > 0:
            raise ConfigValueError(f"dataset.scale_to_mv={scale_to_mv} must be positive")
        self.scale_to_mv = float(scale_to_mv)
        self.leads = [_EINTHOVEN.get(str(n).upper(), str(n)) for n in leads]
        canonical_order(np.zeros((len(self.leads), 1)), self.leads, "dataset.leads")
        self._files: dict[str, h5py.File] = {}
        self._pid = 0

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_files"], state["_pid"] = {}, 0  # handles do not cross processes
        return state

    def _open(self, name: str) -> h5py.File:
        if self._pid != os.getpid():
            # A forked build worker must not share the parent's HDF5 handles.
            self._files, self._pid = {}, os.getpid()
        f = self._files.get(name)
        if f is None:
            f = self._files[name] = open_hdf5(self.root / name)
        return f

    def tracing(self, name: str, index: int) -> np.ndarray:
        """Row ``index`` of ``name``: (12, valid samples) in mV, canonical lead order."""
        where = f"{self.root / name}[{index}]"
        f = self._open(name)
        try:
            x = np.asarray(f["tracings"][index], dtype=np.float32)  # (4096, 12): one row only
        except (OSError, KeyError, IndexError) as err:
            raise RecordError(f"{where}: unreadable tracing ({err})") from err
        if x.ndim != 2 or x.shape[1] != len(self.leads):
            raise RecordError(f"{where}: expected (samples, {len(self.leads)}), got {x.shape}")
        live = np.flatnonzero(np.any(x != 0, axis=1))
        if not len(live):
            raise RecordError(f"{where}: every sample is zero (padding only)")
        x = x[live[0] : live[-1] + 1].T * np.float32(self.scale_to_mv)
        signal = canonical_order(np.ascontiguousarray(x), self.leads, where)
        check_signal(signal, where)
        return np.ascontiguousarray(signal)

    def labels(self, meta: pd.DataFrame) -> tuple[np.ndarray, list[str], np.ndarray]:
        """Multi-hot over ``classes``; every exam is kept: an exam with none of the six is a
        negative for all of them (most exams are), not an unlabelled one."""
        y, _ = multi_hot(meta["labels"], list(self.classes))
        return y, list(self.classes), np.ones(len(meta), dtype=bool)


class CODE15(_Tracings):
    """CODE-15%: ``exams.csv`` joined with the ``exams_part*.hdf5`` present under ``root``.

    Exams of exams.csv whose part is not downloaded are left out (logged); exam ids in an HDF5
    file that exams.csv lacks are left out and counted in the log, naming the file.
    """

    def __init__(self, root: str | Path, classes: Sequence[str] = CLASSES,
                 scale_to_mv: float = 0.1, leads: Sequence[str] = FILE_LEADS) -> None:  # fmt: skip
        super().__init__(root, classes, scale_to_mv, leads)

    def parts(self) -> list[Path]:
        return sorted(self.root.glob(PARTS))

    def ensure(self) -> None:
        check_root(self.root, [EXAMS_CSV], "a CODE-15% folder")
        if not self.parts():
            raise MissingPathError(f"dataset.root={self.root}: no {PARTS} files in it")

    def signal_spec(self) -> dict:
        return {"reader": "code15", "root": str(self.root.resolve()), "scale": self.scale_to_mv,
                "leads": self.leads, "exams": file_stamp(self.root / EXAMS_CSV),
                "parts": {p.name: file_stamp(p) for p in self.parts()}}  # fmt: skip

    def metadata(self) -> pd.DataFrame:
        csv = self.root / EXAMS_CSV
        exams = pd.read_csv(csv)
        missing = [c for c in ("exam_id", "patient_id", "age", "is_male", *CLASSES)
                   if c not in exams.columns]  # fmt: skip
        if missing:
            raise RecordError(f"{csv}: missing columns {missing}")
        if exams["exam_id"].duplicated().any():
            dup = exams["exam_id"][exams["exam_id"].duplicated()].iloc[0]
            raise RecordError(f"{csv}: exam_id {dup} listed twice")
        # exam_id -> (file, row) from every part's exam_id dataset (small: N int64)
        located = []
        for part in self.parts():
            with open_hdf5(part) as f:
                ids = _exam_ids(f, part)
            rows = np.flatnonzero(ids != 0)  # exam_id 0: the padding row
            located.append(pd.DataFrame({"exam_id": ids[rows], "file": part.name, "row": rows}))
        where = pd.concat(located, ignore_index=True)
        if where["exam_id"].duplicated().any():
            dup = where[where["exam_id"].duplicated(keep=False)]
            raise RecordError(
                f"{self.root}: exam_id {dup['exam_id'].iloc[0]} is stored twice "
                f"({', '.join(f'{f}[{r}]' for f, r in zip(dup['file'], dup['row']))})"
            )
        known = where["exam_id"].isin(exams["exam_id"])
        for name, n in where[~known].groupby("file").size().items():
            first = where[~known & (where["file"] == name)]["exam_id"].iloc[0]
            log.warning("%s: %d exam_ids missing from %s (first: %d); left out",
                        self.root / name, n, csv, first)  # fmt: skip
        table = where[known].merge(exams, on="exam_id", how="left")
        left_out = len(exams) - len(table)
        if left_out:
            log.info("%s: %d exams have no tracing in the parts present; left out", csv, left_out)
        # File and row order: a cache build then reads each part front to back.
        table = table.sort_values(["file", "row"], kind="stable").reset_index(drop=True)
        hot = table[list(CLASSES)].map(_true).to_numpy()
        meta = pd.DataFrame(
            {
                "record_id": table["exam_id"].astype(np.int64).astype(str),
                "patient_id": table["patient_id"].astype(np.int64).astype(str),
                "age": pd.to_numeric(table["age"], errors="coerce").astype(float),
                "sex": 1.0 - table["is_male"].map(_true).astype(float),  # 0 male, 1 female
                "labels": [{c: 1.0 for c, on in zip(CLASSES, row) if on} for row in hot],
                "path": table["file"],
                "source": "code15",
                "row": table["row"].astype(np.int64),
            }
        )
        for column in ("nn_predicted_age", "normal_ecg", "death", "timey"):
            if column in table.columns:
                meta[column] = table[column].to_numpy()
        return meta

    def read(self, row: Mapping[str, Any]) -> Record:
        return row_record(row, self.tracing(row["path"], int(row["row"])), FS, "code15")


class CODETest(_Tracings):
    """The CODE test set: ``ecg_tracings.hdf5`` with ``gold_standard.csv`` (the cardiologists'
    consensus) and ``attributes.csv`` aligned by row; each exam its own patient."""

    def __init__(self, root: str | Path, classes: Sequence[str] = CLASSES,
                 scale_to_mv: float = 0.1, leads: Sequence[str] = FILE_LEADS) -> None:  # fmt: skip
        super().__init__(root, classes, scale_to_mv, leads)

    def ensure(self) -> None:
        check_root(self.root, [TEST_HDF5, GOLD_CSV], "the CODE test set folder")

    def signal_spec(self) -> dict:
        return {"reader": "code_test", "root": str(self.root.resolve()), "scale": self.scale_to_mv,
                "leads": self.leads, "tracings": file_stamp(self.root / TEST_HDF5),
                "gold": file_stamp(self.root / GOLD_CSV)}  # fmt: skip

    def metadata(self) -> pd.DataFrame:
        gold = pd.read_csv(self.root / GOLD_CSV)
        missing = [c for c in CLASSES if c not in gold.columns]
        if missing:
            raise RecordError(f"{self.root / GOLD_CSV}: missing columns {missing}")
        with open_hdf5(self.root / TEST_HDF5) as f:
            if "tracings" not in f:
                raise RecordError(f"{self.root / TEST_HDF5}: no dataset 'tracings' ({list(f)})")
            n = f["tracings"].shape[0]
        if n != len(gold):
            raise RecordError(
                f"{self.root / TEST_HDF5} holds {n} tracings, {self.root / GOLD_CSV} {len(gold)} "
                "rows: they are aligned by row, so they must match"
            )
        meta = pd.DataFrame(
            {
                "record_id": [str(i) for i in range(n)],
                "patient_id": [str(i) for i in range(n)],
                "age": np.nan,
                "sex": np.nan,
                "labels": [{c: 1.0 for c in CLASSES if gold.at[i, c] == 1} for i in range(n)],
                "path": TEST_HDF5,
                "source": "code_test",
                "row": np.arange(n),
            }
        )
        attributes = self.root / ATTRIBUTES_CSV
        if attributes.is_file():
            table = pd.read_csv(attributes)
            if len(table) != n:
                raise RecordError(f"{attributes}: {len(table)} rows for {n} tracings")
            meta["age"] = pd.to_numeric(table["age"], errors="coerce").astype(float)
            meta["sex"] = table["sex"].map({"M": 0.0, "F": 1.0}).astype(float)
        return meta

    def read(self, row: Mapping[str, Any]) -> Record:
        return row_record(row, self.tracing(row["path"], int(row["row"])), FS, "code_test")

    def references(self) -> dict[str, pd.DataFrame]:
        """The paper's other annotators present under root (``dnn``: its network;
        ``cardiologist1``…), each (827, 6) 0/1 in :data:`CLASSES` order, row i = tracing i."""
        out = {}
        for name in REFERENCES:
            path = self.root / f"{name}.csv"
            if path.is_file():
                table = pd.read_csv(path)
                missing = [c for c in CLASSES if c not in table.columns]
                if missing:
                    raise RecordError(f"{path}: missing columns {missing}")
                out[name] = table[list(CLASSES)].astype(int)
        return out


def open_hdf5(path: Path) -> h5py.File:
    """An HDF5 file opened read-only; RecordError naming it when absent, truncated or no HDF5."""
    try:
        return h5py.File(path, "r")
    except FileNotFoundError as err:
        raise RecordError(f"{path}: file missing") from err
    except OSError as err:  # h5py's word for a truncated or damaged file
        raise RecordError(f"{path}: unreadable HDF5 file, truncated or damaged ({err})") from err


def _exam_ids(f: h5py.File, path: Path) -> np.ndarray:
    for key in ("exam_id", "tracings"):
        if key not in f:
            raise RecordError(f"{path}: no dataset {key!r} (has {list(f)})")
    ids = np.asarray(f["exam_id"][()], dtype=np.int64)
    if len(ids) != f["tracings"].shape[0]:
        raise RecordError(f"{path}: {len(ids)} exam_ids for {f['tracings'].shape[0]} tracings")
    return ids


def _true(value: object) -> bool:
    return str(value).strip().lower() in ("true", "1", "1.0")
