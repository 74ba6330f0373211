"""One record file in any supported format -> a :class:`Record`: the one entry every command
that reads single files uses (``ecgx predict`` and ``ecgx data record`` today).

The format is chosen by suffix, and by content where a suffix is ambiguous or missing:
``.xml`` is GE MUSE (root ``<RestingECG>``) or HL7 aECG (``<AnnotatedECG>``); a DICOM file is
known by its ``DICM`` prefix whatever its name; SCP-ECG by the ``SCPECG`` tag of section 0;
EDF by its header. Readers return the leads their file holds, in its order, at its rate:
:func:`ecgx.formats.record.canonical_record` and the run's transforms do the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from ecgx.errors import MissingPathError
from ecgx.formats.record import LEADS, Record, RecordError, canonical_leads, check_signal

#: file endings read as one record each (``.dat`` belongs to its ``.hea``)
SUFFIXES = (".hea", ".mat", ".csv", ".h5", ".hdf5", ".npy", ".xml", ".dcm", ".scp", ".edf")
FORMATS = (
    "WFDB (.hea with .dat, or CinC .hea with .mat), CPSC 2018 .mat, Chapman-Shaoxing .csv, "
    "SPH .h5/.hdf5, NumPy .npy (leads x samples, mV), GE MUSE XML or HL7 aECG (.xml), "
    "DICOM waveforms (.dcm or any file with a DICM prefix), SCP-ECG (.scp) or EDF/EDF+ (.edf)"
)
# Tables that sit next to records in the published layouts; a folder scan leaves them out.
_TABLES = {"reference.csv", "metadata.csv", "ptbxl_database.csv", "scp_statements.csv",
           "diagnostics.csv", "dx_mapping_scored.csv", "dx_mapping_unscored.csv",
           "weights.csv", "weights_abbreviations.csv",
           # MIMIC-IV-ECG's and CODE's tables
           "record_list.csv", "machine_measurements.csv", "waveform_note_links.csv",
           "machine_measurements_data_dictionary.csv", "exams.csv", "gold_standard.csv",
           "attributes.csv", "dnn.csv", "cardiologist1.csv", "cardiologist2.csv",
           "emergency_residents.csv", "medical_students.csv", "cardiology_residents.csv",
           "patients.csv"}  # fmt: skip
DEFAULT_FS = 500.0  # CPSC 2018, Chapman-Shaoxing and SPH files carry no rate; all are 500 Hz
_HEAD = 4096  # bytes read to tell a format by content


def _head(path: Path) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(_HEAD)
    except FileNotFoundError as err:
        raise RecordError(f"{path}: file missing") from err
    except OSError as err:
        raise RecordError(f"{path}: not readable ({err})") from err


def detect_format(path: Path) -> str | None:
    """The format name of one file (a key of :data:`READERS`), or None if it is none of them."""
    suffix = path.suffix.lower()
    if suffix in (".hea", ".mat", ".csv", ".h5", ".hdf5", ".npy"):
        return {".hea": "WFDB", ".mat": "MATLAB", ".csv": "CSV", ".h5": "HDF5",
                ".hdf5": "HDF5", ".npy": "NumPy"}[suffix]  # fmt: skip
    from ecgx.formats import dicom, edf, hl7_aecg, muse_xml, scp_ecg, xml_safe

    head = _head(path)
    if suffix == ".xml":
        name = xml_safe.root_name(head)
        if muse_xml.is_muse(name):
            return muse_xml.FORMAT
        if hl7_aecg.is_aecg(name):
            return hl7_aecg.FORMAT
        raise RecordError(f"{path}: an XML file that is neither GE MUSE (<RestingECG>) nor "
                          f"HL7 aECG (<AnnotatedECG>); its root is <{name or '?'}>")  # fmt: skip
    if dicom.is_dicom(head):
        return dicom.FORMAT
    if scp_ecg.is_scp(head):
        return scp_ecg.FORMAT
    if edf.is_edf(head):
        return edf.FORMAT
    if suffix in (".dcm", ".scp", ".edf"):
        what = {".dcm": "DICOM (no DICM prefix at byte 128)", ".scp": "SCP-ECG (no SCPECG "
                "section 0)", ".edf": "EDF (no EDF header)"}[suffix]  # fmt: skip
        raise RecordError(f"{path}: not a {what}")
    return None


def read_record(path: str | Path, fs: float | None = None) -> Record:
    """One record file in any supported format, as the file holds it: (leads, samples) float32
    in mV, the file's leads and rate, ``format`` naming the format and ``extra["file"]`` the path.

    WFDB, MUSE, DICOM, aECG, SCP-ECG and EDF carry their rate; CPSC 2018 ``.mat``, Chapman
    ``.csv`` and SPH ``.h5`` are read at ``fs`` (default 500 Hz); ``.npy`` (leads × samples, mV,
    canonical lead order) needs ``fs``. RecordError naming the file for anything else.
    """
    path = Path(path)
    try:
        if path.suffix.lower() == ".mat" and path.with_suffix(".hea").is_file():
            path = path.with_suffix(".hea")
        name = detect_format(path)
        if name is None:
            raise RecordError(f"{path}: not a supported record file; ecgx reads {FORMATS}")
        record = READERS[name](path, fs)
    except RecordError:
        raise
    except Exception as err:  # a reader meeting something it never expected: still name the file
        raise RecordError(f"{path}: unreadable ({type(err).__name__}: {err})") from err
    record.format = record.format or name
    record.extra["file"] = str(path)
    return record


def find_records(path: Path) -> list[Path]:
    """The record files of ``path``: the file itself, or every record file under a folder
    (by suffix; files without a suffix when their content is DICOM, SCP-ECG or EDF)."""
    if path.is_file():
        if path.suffix.lower() not in SUFFIXES and detect_format(path) is None:
            raise RecordError(f"input={path}: not a supported record file; ecgx reads {FORMATS}")
        return [path]
    if not path.is_dir():
        raise MissingPathError(f"input={path}: no such file or folder")
    files = []
    for p in sorted(path.rglob("*")):
        if not p.is_file() or p.name.startswith("."):
            continue
        suffix = p.suffix.lower()
        if suffix not in SUFFIXES:
            # DICOM exports are often named by UID alone (1.2.840…, no suffix of their own).
            if suffix and not suffix[1:].isdigit():
                continue
            if detect_format(p) is None:
                continue
        if suffix == ".mat" and p.with_suffix(".hea").is_file():
            continue  # the signal file of a CinC header record, read through its header
        if suffix == ".csv" and p.name.lower() in _TABLES:
            continue
        files.append(p)
    if not files:
        raise MissingPathError(f"input={path}: no record files in it; ecgx reads {FORMATS}")
    return files


# -- the formats the dataset readers own ------------------------------------------------------
def _row(path: Path) -> pd.Series:
    # The dataset readers take a metadata row; a lone file has no labels or demographics.
    return pd.Series({"record_id": path.stem, "path": path.name, "patient_id": "",
                      "age": np.nan, "sex": np.nan, "labels": {}, "n_samples": None})  # fmt: skip


def _read_wfdb(hea: Path, fs: float | None) -> Record:
    from ecgx.datasets.cinc import CinC, parse_age, parse_header, parse_sex

    header = parse_header(hea)
    if header["file"].lower().endswith(".mat"):
        # The header's #Age / #Sex: a model with demographics inputs is fed them.
        row = _row(hea)
        row["age"] = parse_age(header["comments"].get("Age"))
        row["sex"] = parse_sex(header["comments"].get("Sex"))
        record = CinC(hea.parent).read(row)
        record.age = None if np.isnan(row["age"]) else float(row["age"])
        record.sex = None if np.isnan(row["sex"]) else int(row["sex"])
    else:
        from ecgx.formats.wfdb_format16 import read_record as read_wfdb

        where = str(hea)
        signal, rate, names = read_wfdb(hea.with_suffix(""))
        check_signal(signal, where)
        record = Record(record_id=hea.stem, signal=signal, fs=float(rate),
                        leads=canonical_leads(names, where))  # fmt: skip
    record.format = "WFDB"
    return record


def _read_cpsc_mat(path: Path, fs: float | None) -> Record:
    from ecgx.datasets.cpsc2018 import CPSC2018

    record = CPSC2018(path.parent, fs=fs or DEFAULT_FS).read(_row(path))
    record.format = "CPSC 2018 MATLAB"
    return record


def _read_chapman_csv(path: Path, fs: float | None) -> Record:
    from ecgx.datasets.chapman import ChapmanShaoxing

    # No quality filter: it is the vision seed's training-set rule, not a read check.
    record = ChapmanShaoxing(path.parent, quality_filter=False).read(_row(path))
    record.fs = float(fs) if fs else record.fs  # the reader fixes 500 Hz; a user's file may differ
    record.format = "Chapman-Shaoxing CSV"
    return record


def _read_sph_h5(path: Path, fs: float | None) -> Record:
    from ecgx.datasets.sph import SPH

    record = SPH(path.parent).read(_row(path))
    record.fs = float(fs) if fs else record.fs
    record.format = "SPH HDF5"
    return record


def _read_npy(path: Path, fs: float | None) -> Record:
    if not fs:
        raise RecordError(f"{path}: a .npy file carries no sampling rate: give fs=<Hz>")
    try:
        signal = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise RecordError(f"{path}: unreadable .npy ({err})") from err
    if signal.ndim != 2 or signal.shape[0] != len(LEADS):
        raise RecordError(
            f"{path}: expected (12 leads, samples) in canonical order {list(LEADS)}, "
            f"got shape {signal.shape}"
        )
    if signal.dtype.kind not in "iuf":
        raise RecordError(f"{path}: not numeric ({signal.dtype})")
    signal = signal.astype(np.float32)
    check_signal(signal, str(path))
    return Record(record_id=path.stem, signal=signal, fs=float(fs), leads=LEADS, format="NumPy")


def _module_reader(module: str) -> Callable[[Path, float | None], Record]:
    def read(path: Path, fs: float | None) -> Record:
        import importlib

        return importlib.import_module(f"ecgx.formats.{module}").read(path)

    return read


#: format name -> reader(path, fs)
READERS: dict[str, Callable[[Path, float | None], Record]] = {
    "WFDB": _read_wfdb,
    "MATLAB": _read_cpsc_mat,
    "CSV": _read_chapman_csv,
    "HDF5": _read_sph_h5,
    "NumPy": _read_npy,
    "MUSE XML": _module_reader("muse_xml"),
    "HL7 aECG": _module_reader("hl7_aecg"),
    "DICOM": _module_reader("dicom"),
    "SCP-ECG": _module_reader("scp_ecg"),
    "EDF": _module_reader("edf"),
}
