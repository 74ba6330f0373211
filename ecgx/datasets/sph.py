"""SPH, the Shandong Provincial Hospital database (Liu et al., Sci Data 2022; figshare 5779802).

Records are HDF5 files with one dataset ``ecg``: 12 × N float16 in mV at 500 Hz, leads in the
canonical order, 10–60 s long. Labels are AHA/ACC/HRS statement codes (Mason et al. 2007) in the
``AHA_Code`` column: statements separated by ``;``, a primary statement optionally followed by
modifiers joined with ``+`` (``50+346``: atrial fibrillation, with a modifier).

Two on-disk layouts are read:

- pristine (as published): ``metadata.csv`` with ``ECG_ID`` (``A00001``), ``AHA_Code``,
  ``Patient_ID``, ``Age``, ``Sex`` (M/F), ``N`` (samples), ``Date``; records in
  ``records/<ECG_ID>.h5``.
- flat (how the refactored SE-ResNet repository stores its SPH part, and the ecg-samples
  copy): ``metadata.csv`` whose ``ECG_ID`` is the file name (``SPH00001.h5``), records next to
  it, and the columns that repository's ``label_mapping.py`` added (``fs``, ``SNOMEDCTCode``,
  ``SR``). Its rows without a mapped SNOMED code were dropped by that script, so such a
  metadata.csv lists fewer records than there are files; only listed records are read.

The layout is chosen per root: ``records/`` present means pristine. An ``ECG_ID`` ending in
``.h5`` is taken as the file name, otherwise ``.h5`` is appended.
"""

from __future__ import annotations

import logging
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from ecgx.data.cache import file_stamp
from ecgx.datasets.base import check_root, multi_hot, row_record
from ecgx.errors import ConfigValueError
from ecgx.formats.record import LEADS, Record, RecordError, check_signal

log = logging.getLogger(__name__)

METADATA_CSV = "metadata.csv"
RECORDS_DIR = "records"
FS = 500
TASKS = ("primary", "statements", "snomed")
REQUIRED = ("ECG_ID", "AHA_Code", "Patient_ID", "Age", "Sex", "N")

NORMAL_ECG = "1"  # AHA statement 1, "normal ECG"
SINUS_RHYTHM = "426783006"
# Primary AHA statement -> SNOMED CT code of the SE-ResNet refactor's label set (spec 1.6).
# Any modifier keeps the primary's code, except where a modifier form has its own concept.
SNOMED_OF_PRIMARY = {
    "21": "427084000",  # sinus tachycardia
    "22": "426177001",  # sinus bradycardia
    "23": "427393009",  # sinus arrhythmia
    "30": "284470004",  # atrial premature complex(es)
    "50": "164889003",  # atrial fibrillation
    "51": "164890007",  # atrial flutter
    "82": "270492004",  # first-degree AV block
    "101": "445118002",  # left anterior fascicular block
    "104": "164909002",  # left bundle branch block
    "105": "713426002",  # incomplete right bundle branch block
    "106": "59118001",  # right bundle branch block
    "120": "47665007",  # right axis deviation
    "121": "39732003",  # left axis deviation
    "125": "251146004",  # low QRS voltages
    "147": "164934002",  # T-wave abnormality
}
SNOMED_OF_STATEMENT = {"147+367": "59931005"}  # T-wave abnormality + inversion: T-wave inversion
# The refactor's 17 classes, in its column order.
SNOMED_CLASSES = (
    "426783006", "426177001", "164934002", "427393009", "713426002", "427084000", "59118001",
    "164889003", "59931005", "47665007", "445118002", "39732003", "164890007", "164909002",
    "270492004", "251146004", "284470004",
)  # fmt: skip


class SPH:
    """SPH records (500 Hz, 10–60 s) with an AHA-statement task.

    Args:
        root: folder with ``metadata.csv`` and the ``.h5`` records (either layout above).
        task: ``primary`` — one class per primary AHA statement (modifiers dropped: ``50+346``
            counts as ``50``); ``statements`` — every statement as written, modifier forms as
            classes of their own; ``snomed`` — the SE-ResNet refactor's 17 SNOMED CT classes
            (spec 1.6), see :meth:`snomed_codes` for what is mapped and what is left out.
            ``primary`` and ``statements`` take their classes from the metadata (sorted
            numerically), since the statement list is not part of the records.
    """

    def __init__(self, root: str | Path, task: str = "primary") -> None:
        if task not in TASKS:
            raise ConfigValueError(f"dataset.task must be one of {TASKS}, got {task!r}")
        self.root = Path(root).expanduser()
        self.task = task

    @property
    def layout(self) -> str:
        return "pristine" if (self.root / RECORDS_DIR).is_dir() else "flat"

    # -- files -------------------------------------------------------------------------------
    def ensure(self) -> None:
        """Fail early on a missing root or metadata table."""
        check_root(self.root, [METADATA_CSV], "an SPH folder")

    def signal_spec(self) -> dict:
        """What determines the signals (the task does not)."""
        return {
            "reader": "sph",
            "root": str(self.root.resolve()),
            "sampling_rate": FS,
            "layout": self.layout,
            "metadata": file_stamp(self.root / METADATA_CSV),
        }

    def metadata(self) -> pd.DataFrame:
        """One row per metadata.csv row, in its order."""
        csv = self.root / METADATA_CSV
        table = pd.read_csv(csv, dtype={"ECG_ID": str, "AHA_Code": str, "Patient_ID": str})
        missing = [c for c in REQUIRED if c not in table.columns]
        if missing:
            raise RecordError(f"{csv}: missing columns {missing}")
        if "fs" in table.columns and not (table["fs"] == FS).all():
            raise RecordError(f"{csv}: fs other than {FS} Hz: {sorted(set(table['fs']))}")
        files = table["ECG_ID"].str.strip().map(lambda s: s if s.endswith(".h5") else s + ".h5")
        folder = RECORDS_DIR + "/" if self.layout == "pristine" else ""
        meta = pd.DataFrame(
            {
                "record_id": files.str.removesuffix(".h5"),
                "patient_id": table["Patient_ID"].astype(str).str.strip(),
                "age": pd.to_numeric(table["Age"], errors="coerce").astype(float),
                "sex": table["Sex"].map(_sex).astype(float),
                "labels": [_statements(s, csv, i) for i, s in zip(files, table["AHA_Code"])],
                "path": folder + files,
                "source": "sph",
                "n_samples": pd.to_numeric(table["N"], errors="coerce"),
                "aha_code": table["AHA_Code"].astype(str),
            }
        )
        if "Date" in table.columns:
            meta["date"] = table["Date"].astype(str)
        if "SNOMEDCTCode" in table.columns:
            # The flat layout's derived labels (refactor script), kept for comparison only.
            meta["snomed_ct"] = table["SNOMEDCTCode"].astype(str)
        return meta

    def read(self, row: pd.Series) -> Record:
        """The record of one metadata row: float16 mV → float32, leads already canonical."""
        path = self.root / row["path"]
        where = str(path)
        try:
            with h5py.File(path, "r") as f:
                if "ecg" not in f:
                    raise RecordError(f"{where}: no dataset 'ecg' (has {list(f.keys())})")
                signal = f["ecg"][()]
        except FileNotFoundError as err:
            raise RecordError(f"{where}: record file missing") from err
        except OSError as err:  # h5py reports damaged or non-HDF5 files as OSError
            raise RecordError(f"{where}: unreadable HDF5 file ({err})") from err
        if signal.ndim != 2 or signal.shape[0] != len(LEADS):
            raise RecordError(f"{where}: expected 12 × N, got shape {signal.shape}")
        n = row.get("n_samples")
        if n is not None and not pd.isna(n) and int(n) != signal.shape[1]:
            raise RecordError(f"{where}: {signal.shape[1]} samples, metadata N says {int(n)}")
        signal = signal.astype(np.float32)
        check_signal(signal, where)
        return row_record(row, signal, FS, "sph")

    # -- labels ------------------------------------------------------------------------------
    @staticmethod
    def snomed_codes(statements: dict[str, float] | list[str]) -> set[str]:
        """SNOMED CT codes of a record's AHA statements, as in the SE-ResNet refactor.

        A statement maps through its exact form (``147+367``) if listed, else through its
        primary statement, so every modifier of 30 (APC) or 50 (AF) maps like the refactor's
        listed forms do. Normal ECG (1) becomes sinus rhythm: the refactor marks it ``-1`` and
        then imputes SR with a logistic regression fitted on PhysioNet headers, which is left
        out here, so other records never get SR. Statements outside the table are dropped.
        """
        out = set()
        for statement in statements:
            primary = statement.split("+")[0]
            if statement == NORMAL_ECG:
                out.add(SINUS_RHYTHM)
            elif statement in SNOMED_OF_STATEMENT:
                out.add(SNOMED_OF_STATEMENT[statement])
            elif primary in SNOMED_OF_PRIMARY:
                out.add(SNOMED_OF_PRIMARY[primary])
        return out

    def labels(self, meta: pd.DataFrame) -> tuple[np.ndarray, list[str], np.ndarray]:
        """Multi-hot targets (N, C), class names, and which records have a class."""
        if self.task == "snomed":
            per_record = [self.snomed_codes(codes) for codes in meta["labels"]]
            classes = list(SNOMED_CLASSES)
        elif self.task == "primary":
            per_record = [{s.split("+")[0] for s in codes} for codes in meta["labels"]]
            classes = sorted(set().union(*per_record), key=_numeric_order)
        else:
            per_record = [set(codes) for codes in meta["labels"]]
            classes = sorted(set().union(*per_record), key=_numeric_order)
        y, keep = multi_hot(per_record, classes)
        return y, classes, keep


def _statements(text: object, csv: Path, ecg_id: str) -> dict[str, float]:
    if not isinstance(text, str) or not text.strip():
        raise RecordError(f"{csv}: {ecg_id}: empty AHA_Code")
    out = {}
    for statement in text.split(";"):
        parts = [p.strip() for p in statement.split("+")]
        if not all(p.isdigit() for p in parts):
            raise RecordError(f"{csv}: {ecg_id}: AHA_Code {text!r} is not codes like 50+346;147")
        out["+".join(parts)] = 1.0
    return out


def _numeric_order(code: str) -> tuple[int, ...]:
    return tuple(int(p) for p in code.split("+"))


def _sex(value: object) -> float:
    # PTB-XL's coding, which the Record uses: 0 male, 1 female.
    return {"M": 0.0, "F": 1.0}.get(str(value).strip().upper(), np.nan)
