"""Chapman-Shaoxing (Zheng et al. 2020, figshare collection 4560497) and its label tasks.

On disk: ``Diagnostics.xlsx`` (one row per record: FileName, Rhythm, Beat, PatientAge, Gender,
rates and intervals) and one CSV per record, 5000 rows × 12 leads at 500 Hz in µV, under
``ECGDataDenoised/`` (no header) or ``ECGData/`` (raw). The reader yields the table's own codes
(Rhythm, Beat); :meth:`ChapmanShaoxing.labels` turns them into one of three tasks.
"""

from __future__ import annotations

import logging
import re
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from ecgx.data.cache import file_stamp
from ecgx.datasets.base import check_root, row_record
from ecgx.errors import ConfigValueError, MissingPathError
from ecgx.formats.record import (
    LEADS,
    Record,
    RecordError,
    canonical_leads,
    check_signal,
    reorder_leads,
)

log = logging.getLogger(__name__)

DIAGNOSTICS = "Diagnostics.xlsx"
FS = 500
N_SAMPLES = 5000  # 10 s at 500 Hz: every published record
LABEL_SETS = ("merged4", "rhythm", "beat")
COLUMNS = (
    "FileName", "Rhythm", "Beat", "PatientAge", "Gender", "VentricularRate", "AtrialRate",
    "QRSDuration", "QTInterval", "QTCorrected", "RAxis", "TAxis", "QRSCount", "QOnset",
    "QOffset", "TOffset",
)  # fmt: skip
NUMERIC = COLUMNS[5:]

# The 11 rhythms of the table. The table spells sinus irregularity "SA"; Zheng et al. call it
# "SI", and so does the vision seed (which renames it), so the task classes use "SI".
RHYTHMS = ("AF", "AFIB", "AT", "AVNRT", "AVRT", "SA", "SAAWR", "SB", "SR", "ST", "SVT")
RHYTHM_CLASS = {code: ("SI" if code == "SA" else code) for code in RHYTHMS}
# The vision seed's merge (Zheng et al.'s four groups): LabelEncoder order AFIB, GSVT, SB, SR.
MERGED4 = {
    "AFIB": "AFIB", "AF": "AFIB",
    "ST": "GSVT", "SVT": "GSVT", "AT": "GSVT", "AVNRT": "GSVT", "AVRT": "GSVT", "SAAWR": "GSVT",
    "SB": "SB",
    "SR": "SR", "SA": "SR",
}  # fmt: skip
# Every code of the Beat column of the official table (10,646 rows), "NONE" included: the table
# writes NONE where a record has no beat/condition finding. It is kept as a class so that half
# of the records are not dropped as unlabelled by the beat task (the DataModule drops records
# without any class).
BEATS = (
    "1AVB", "2AVB", "2AVB1", "2AVB2", "3AVB", "ABI", "ALS", "APB", "AQW", "ARS", "AVB", "CCR",
    "CR", "ERV", "FQRS", "IDC", "IVB", "JEB", "JPS", "JPT", "LBBB", "LBBBB", "LFBBB", "LRRI",
    "LVH", "LVHV", "LVQRSAL", "LVQRSCL", "LVQRSLL", "MI", "MIBW", "MIFW", "MILW", "MISW", "NONE",
    "PRIE", "PWC", "QTIE", "RAH", "RAHV", "RBBB", "RVH", "STDD", "STE", "STTC", "STTU", "TWC",
    "TWO", "UW", "VB", "VEB", "VET", "VFW", "VPB", "VPE", "WAVN", "WPW",
)  # fmt: skip


class ChapmanShaoxing:
    """Chapman-Shaoxing records (500 Hz, 10 s) with one of three label tasks.

    Args:
        root: folder with ``Diagnostics.xlsx`` and ``ECGDataDenoised/`` (or ``ECGData/``).
        labels: ``merged4`` — the vision seed's four classes AFIB, GSVT, SB, SR;
            ``rhythm`` — the 11 rhythms (``SA`` named ``SI``); ``beat`` — the Beat column's
            conditions, multi-label, ``NONE`` included as a class. The single-label tasks
            still give a multi-hot matrix (one 1 per row), the form every reader returns.
        denoised: read ``ECGDataDenoised/`` (the seed's choice) rather than raw ``ECGData/``.
        quality_filter: the vision seed's filter: :meth:`metadata` leaves out every record
            whose CSV has a NaN, a sample exactly 0 or fewer than 5000 rows (the seed tests the
            denoised files and keeps 10,588 of 10,646; here the files read are tested). It has to read every file, about 2–3 ms each, which the cache
            build pays once: the DataModule lists the dataset only when it builds the cache.
            :meth:`read` applies the same test, so a row from elsewhere cannot slip through.
    """

    def __init__(
        self,
        root: str | Path,
        labels: str = "merged4",
        denoised: bool = True,
        quality_filter: bool = True,
    ) -> None:
        if labels not in LABEL_SETS:
            raise ConfigValueError(f"dataset.labels must be one of {LABEL_SETS}, got {labels!r}")
        self.root = Path(root).expanduser()
        self.labels_task = labels
        self.denoised = bool(denoised)
        self.quality_filter = bool(quality_filter)

    @property
    def folder(self) -> str:
        return "ECGDataDenoised" if self.denoised else "ECGData"

    # -- files -------------------------------------------------------------------------------
    def ensure(self) -> None:
        """Fail early on a missing root, table or signal folder."""
        check_root(self.root, [DIAGNOSTICS], "a Chapman-Shaoxing folder")
        if not (self.root / self.folder).is_dir():
            raise MissingPathError(
                f"dataset.root={self.root}: {self.folder}/ is missing "
                f"(dataset.denoised={self.denoised})"
            )

    def signal_spec(self) -> dict:
        """What determines the signals: the folder read and the filter deciding the file set."""
        return {
            "reader": "chapman_shaoxing",
            "root": str(self.root.resolve()),
            "sampling_rate": FS,
            "folder": self.folder,
            "quality_filter": self.quality_filter,
            "diagnostics": file_stamp(self.root / DIAGNOSTICS),
        }

    def metadata(self) -> pd.DataFrame:
        """One row per row of ``Diagnostics.xlsx`` (the quality filter's failures left out),
        in the table's order."""
        path = self.root / DIAGNOSTICS
        table = read_xlsx_table(path)
        missing = [c for c in COLUMNS if c not in table.columns]
        if missing:
            raise RecordError(f"{path}: missing columns {missing}")
        names = table["FileName"].astype(str).str.strip()
        meta = pd.DataFrame(
            {
                "record_id": names,
                # Zheng et al.: one ECG per patient (10,646 patients), so the record is the patient.
                "patient_id": names,
                "age": pd.to_numeric(table["PatientAge"], errors="coerce").astype(float),
                "sex": table["Gender"].map(_sex).astype(float),
                "labels": [_codes(r, b) for r, b in zip(table["Rhythm"], table["Beat"])],
                "path": self.folder + "/" + names + ".csv",
                "source": "chapman_shaoxing",
                "rhythm": table["Rhythm"].astype(str).str.strip(),
                "beat": table["Beat"].astype(str).str.strip(),
            }
        )
        for column in NUMERIC:
            meta[column] = pd.to_numeric(table[column], errors="coerce").astype(float)
        if self.quality_filter:
            meta = self._drop_low_quality(meta)
        return meta

    def read(self, row: pd.Series) -> Record:
        """The record of one metadata row: µV → mV, leads in canonical order."""
        path = self.root / row["path"]
        where = str(path)
        values, names = _load_csv(path)
        if self.quality_filter:
            problems = _quality_problems(values)
            if problems:
                raise RecordError(
                    f"{where}: fails the vision seed's quality filter ({', '.join(problems)})"
                )
        # The denoised files have no header; Zheng et al. publish the column order, which is
        # the canonical one (checked on the sample: aVR ≈ -(I+II)/2, aVF ≈ (II+III)/2).
        leads = canonical_leads(names, where) if names else LEADS
        signal = (values.T / 1000.0).astype(np.float32)
        check_signal(signal, where)
        return row_record(row, reorder_leads(signal, leads, LEADS, where), FS, "chapman_shaoxing")

    def _drop_low_quality(self, meta: pd.DataFrame) -> pd.DataFrame:
        failing = []
        for record_id, relative in zip(meta["record_id"], meta["path"]):
            path = self.root / relative
            if not path.is_file():
                continue  # not a quality verdict: read() reports the missing file
            try:
                values, _ = _load_csv(path)
            except RecordError:
                continue  # likewise: read() names what is wrong with it
            problems = _quality_problems(values)
            if problems:
                failing.append(record_id)
                log.debug("quality filter drops %s: %s", path, ", ".join(problems))
        if failing:
            log.info(
                "quality filter: %d of %d records left out (NaN, exact 0 or < %d rows), e.g. %s",
                len(failing), len(meta), N_SAMPLES, failing[:5],
            )  # fmt: skip
        return meta[~meta["record_id"].isin(failing)].reset_index(drop=True)

    # -- labels ------------------------------------------------------------------------------
    def classes(self) -> list[str]:
        """The task's class names, in column order (sorted, as the seed's LabelEncoder)."""
        if self.labels_task == "merged4":
            return sorted(set(MERGED4.values()))
        if self.labels_task == "rhythm":
            return sorted(RHYTHM_CLASS.values())
        return list(BEATS)

    def labels(self, meta: pd.DataFrame) -> tuple[np.ndarray, list[str], np.ndarray]:
        """Multi-hot targets (N, C), class names, and which records have a class.

        ``merged4`` and ``rhythm`` are single-label: each row has exactly one 1.
        """
        classes = self.classes()
        col = {name: i for i, name in enumerate(classes)}
        mapping = {
            "merged4": MERGED4,
            "rhythm": RHYTHM_CLASS,
            "beat": {code: code for code in BEATS},
        }[self.labels_task]
        y = np.zeros((len(meta), len(classes)), dtype=np.float32)
        unknown: set[str] = set()
        for i, codes in enumerate(meta["labels"]):
            for code in codes:
                if code in mapping:
                    y[i, col[mapping[code]]] = 1.0
                elif code not in RHYTHMS and code not in BEATS:
                    unknown.add(code)
        if unknown:
            log.warning("codes outside the published vocabulary are ignored: %s", sorted(unknown))
        return y, classes, y.any(axis=1)


def read_xlsx_table(path: str | Path) -> pd.DataFrame:
    """The first worksheet of an .xlsx file as strings, its first row the column names.

    Hand-written because openpyxl is not a dependency and the one table we need is plain: an
    .xlsx is a zip of XML where text cells index ``xl/sharedStrings.xml`` and numbers are
    stored in the cell. Formulas, dates and styles are not interpreted (the Chapman table has
    none); every value comes back as the text Excel stored, for the caller to convert.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as book:
            names = set(book.namelist())
            strings = (
                _shared_strings(book.read("xl/sharedStrings.xml"))
                if "xl/sharedStrings.xml" in names
                else []
            )
            sheet = ET.fromstring(book.read("xl/worksheets/sheet1.xml"))
    except (zipfile.BadZipFile, KeyError, ET.ParseError) as err:
        raise RecordError(f"{path}: not a readable .xlsx workbook ({err})") from err
    rows: list[dict[int, str | None]] = []
    data = sheet.find(_tag("sheetData"))
    for row in data if data is not None else []:
        cells: dict[int, str | None] = {}
        for cell in row.findall(_tag("c")):
            cells[_column_index(cell.get("r", ""), path)] = _cell_text(cell, strings, path)
        rows.append(cells)
    if not rows:
        raise RecordError(f"{path}: the first worksheet is empty")
    width = max((max(r) + 1 for r in rows if r), default=0)
    header = [rows[0].get(j) or f"column{j}" for j in range(width)]
    body = [[r.get(j) for j in range(width)] for r in rows[1:]]
    # Excel keeps empty trailing rows it once formatted; they carry no record.
    body = [r for r in body if any(v not in (None, "") for v in r)]
    return pd.DataFrame(body, columns=header, dtype=object)


_MAIN_NS = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"


def _tag(name: str) -> str:
    return _MAIN_NS + name


def _shared_strings(xml: bytes) -> list[str]:
    out = []
    for item in ET.fromstring(xml).findall(_tag("si")):
        # Plain text is one <t>; rich text is runs <r><t>. Phonetic hints (<rPh><t>) are not
        # part of the value, hence no deep iteration.
        parts = [t.text or "" for t in item.findall(_tag("t"))]
        parts += [t.text or "" for run in item.findall(_tag("r")) for t in run.findall(_tag("t"))]
        out.append("".join(parts))
    return out


def _column_index(ref: str, path: Path) -> int:
    match = re.match(r"([A-Z]+)\d*$", ref)
    if not match:
        raise RecordError(f"{path}: cell without a reference ({ref!r})")
    index = 0
    for ch in match.group(1):
        index = index * 26 + (ord(ch) - ord("A") + 1)
    return index - 1


def _cell_text(cell: ET.Element, strings: list[str], path: Path) -> str | None:
    kind = cell.get("t", "n")
    if kind == "inlineStr":
        inline = cell.find(_tag("is"))
        return "".join(t.text or "" for t in inline.iter(_tag("t"))) if inline is not None else ""
    value = cell.find(_tag("v"))
    if value is None or value.text is None:
        return None
    if kind == "s":
        index = int(value.text)
        if not 0 <= index < len(strings):
            raise RecordError(f"{path}: cell {cell.get('r')} points past the shared strings")
        return strings[index]
    return value.text


def _codes(rhythm: object, beat: object) -> dict[str, float]:
    codes = {str(rhythm).strip(): 1.0}
    codes.update({code: 1.0 for code in str(beat).split()})
    return codes


def _sex(value: object) -> float:
    # PTB-XL's coding, which the Record uses: 0 male, 1 female.
    return {"MALE": 0.0, "FEMALE": 1.0}.get(str(value).strip().upper(), np.nan)


def _load_csv(path: Path) -> tuple[np.ndarray, list[str] | None]:
    """(rows, 12) µV values and the header's lead names (None for the headerless files)."""
    where = str(path)
    try:
        with path.open() as f:
            first = f.readline()
    except FileNotFoundError as err:
        raise RecordError(f"{where}: record file missing") from err
    header = _is_header(first)
    try:
        values = pd.read_csv(path, header=0 if header else None, dtype=np.float64).to_numpy()
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise RecordError(f"{where}: not a numeric CSV ({err})") from err
    if values.ndim != 2 or values.shape[1] != 12:
        raise RecordError(f"{where}: expected 12 columns, got shape {values.shape}")
    return values, ([n.strip() for n in first.split(",")] if header else None)


def _is_header(line: str) -> bool:
    first = line.split(",")[0].strip()
    try:
        float(first)
    except ValueError:
        return bool(first)
    return False


def _quality_problems(values: np.ndarray) -> list[str]:
    """The vision seed's data-quality test (any NaN, any exact 0, fewer than 5000 rows)."""
    problems = []
    nan = int(np.isnan(values).sum())
    if nan:
        problems.append(f"{nan} NaN")
    zeros = int((values == 0).sum())
    if zeros:
        problems.append(f"{zeros} samples exactly 0")
    if len(values) < N_SAMPLES:
        problems.append(f"{len(values)} rows < {N_SAMPLES}")
    return problems
