"""PhysioNet/CinC Challenge 2020/2021 training data: ``.hea`` + MATLAB v4 ``.mat`` records.

Every source of the challenges (CPSC, CPSC-Extra, INCART, PTB, PTB-XL, Georgia, Chapman-Shaoxing,
Ningbo) shares one format: a WFDB header with ``#Age``, ``#Sex`` and ``#Dx``
comments next to a ``.mat`` holding ``val``, the (leads, samples) digital signal. Records are
found recursively, so the challenge archives can be unpacked as they come.

Signals are read with ``scipy.io.loadmat`` and scaled by the header's gains and baselines exactly
as ``wfdb.rdsamp`` does (same float64 arithmetic, then float32), at a fraction of its cost. The
metadata keeps each header's SNOMED codes; :meth:`CinC.labels` turns them into a task's classes
through :mod:`ecgx.datasets.cinc_labels`, so a task change never rebuilds the signal cache.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ecgx.data.cache import listing_stamp
from ecgx.datasets.base import check_root, row_record
from ecgx.datasets.cinc_labels import EDITIONS, TASKS, class_map, multi_hot, parse_dx
from ecgx.errors import ConfigValueError, MissingPathError
from ecgx.formats.matlab import load_mat
from ecgx.formats.record import LEADS, Record, RecordError, canonical_order, check_signal

log = logging.getLogger(__name__)

# Record-name prefix -> source (the challenges name every record this way).
SOURCES: dict[str, str] = {
    "A": "CPSC",
    "Q": "CPSC-Extra",
    "I": "INCART",
    "S": "PTB",
    "HR": "PTB-XL",
    "E": "Georgia",
    "JS": "Chapman-Shaoxing",  # JS00001-JS10646; Ningbo above (LAST_CHAPMAN_JS)
}
# Chapman-Shaoxing and Ningbo share the JS prefix; CinC 2021 ships them as separate folders
# (WFDB_ChapmanShaoxing, WFDB_Ningbo; chapman_shaoxing/, ningbo/ on PhysioNet) whose numbers do
# not overlap: Chapman-Shaoxing JS00001-JS10646 (10,247 records, gaps where the challenge dropped
# some), Ningbo JS10647-JS45551 (34,905). The number tells them apart in any folder layout,
# including the SE-ResNet refactor's merged ChapmanShaoxing_Ningbo folder.
LAST_CHAPMAN_JS = 10646
NINGBO = "Ningbo"
OTHER = "other"  # a record name with none of the prefixes above
# Every source a record can have: the 8 of CinC 2021, then OTHER.
ALL_SOURCES: tuple[str, ...] = (*SOURCES.values(), NINGBO, OTHER)
# Older configs named the two JS sources together; the alias keeps both.
SOURCE_ALIASES: dict[str, tuple[str, ...]] = {
    "Chapman-Shaoxing/Ningbo": ("Chapman-Shaoxing", NINGBO),
}
# Source -> database as the SE-ResNet refactor groups them for database-wise splits (spec 1.8:
# its data folders), so `split.column=database` reproduces its leave-one-database-out runs.
DATABASES: dict[str, str] = {
    "CPSC": "CPSC_CPSC-Extra",
    "CPSC-Extra": "CPSC_CPSC-Extra",
    "INCART": "INCART",
    "PTB": "PTB_PTBXL",
    "PTB-XL": "PTB_PTBXL",
    "Georgia": "G12EC",
    "Chapman-Shaoxing": "ChapmanShaoxing_Ningbo",
    NINGBO: "ChapmanShaoxing_Ningbo",
    OTHER: OTHER,
}
# ADC gains in early 2020 headers that were later corrected to 1000 adu/mV (torch_ecg's CinC
# reader documents them: Georgia issue 3; PTB and PTB-XL in the first All_training_WFDB headers).
# The samples carry 1000 everywhere; only these exact values are replaced.
WRONG_GAINS: dict[str, float] = {"Georgia": 4880.0, "PTB": 2_000_000.0, "PTB-XL": 200.0}
RIGHT_GAIN = 1000.0
# WFDB's "no sample" value for format 16; wfdb.rdsamp turns it into NaN. A few Georgia and
# Ningbo records hold it (torch_ecg lists them as reading NaN through wfdb); none of the samples.
INVALID_16 = -32768
_UNITS = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3}
_NAME = re.compile(r"^([A-Za-z]+)\d+$")


class CinC:
    """Records of the CinC 2020/2021 challenges with one of their label tasks.

    Args:
        root: folder searched recursively for ``*.hea`` (each with its ``.mat`` beside it).
        edition: 2020 or 2021: whose scoring tables define the ``scored`` classes.
        classes: ``scored`` (2020: 24, 2021: 26 classes, equivalent codes merged),
            ``seresnet17`` (the SE-ResNet refactor's 17 codes) or ``all`` (every code of the
            edition's mapping tables).
        sources: keep only these sources (:data:`ALL_SOURCES`; the alias
            ``Chapman-Shaoxing/Ningbo`` keeps both JS sources); None keeps all.
        fix_quirks: replace the known-wrong ADC gains of early headers (:data:`WRONG_GAINS`).
    """

    def __init__(
        self,
        root: str | Path,
        edition: int = 2021,
        classes: str = "scored",
        sources: list[str] | None = None,
        fix_quirks: bool = True,
    ) -> None:
        if edition not in EDITIONS:
            raise ConfigValueError(f"dataset.edition must be one of {EDITIONS}, got {edition!r}")
        if classes not in TASKS:
            raise ConfigValueError(f"dataset.classes must be one of {TASKS}, got {classes!r}")
        known = [*ALL_SOURCES, *SOURCE_ALIASES]
        if sources is not None:
            sources = [sources] if isinstance(sources, str) else [str(s) for s in sources]
            unknown = [s for s in sources if s not in known]
            if unknown or not sources:
                raise ConfigValueError(
                    f"dataset.sources: unknown {unknown or sources!r}, choose from {known}"
                )
        self.root = Path(root).expanduser()
        self.edition = int(edition)
        self.classes = classes
        if sources is not None:
            sources = [name for s in sources for name in SOURCE_ALIASES.get(s, (s,))]
        self.sources = sorted(set(sources)) if sources is not None else None
        self.fix_quirks = bool(fix_quirks)
        self._headers: list[Path] | None = None

    # -- files -------------------------------------------------------------------------------
    def _find(self) -> list[Path]:
        if self._headers is None:
            found = [
                p.relative_to(self.root)
                for p in self.root.rglob("*.hea")
                # macOS archives carry "._A0001.hea" resource forks next to the records.
                if not p.name.startswith(".")
            ]
            found.sort(key=lambda p: p.as_posix())
            if self.sources is not None:
                found = [p for p in found if source_of(p.stem) in self.sources]
            self._headers = found
        return self._headers

    def ensure(self) -> None:
        """Fail early on a missing root, or one without records of the chosen sources."""
        check_root(self.root)
        if not self._find():
            what = f" of sources {self.sources}" if self.sources else ""
            raise MissingPathError(
                f"dataset.root={self.root} holds no CinC records{what} (*.hea with a .mat)"
            )

    def signal_spec(self) -> dict:
        """The file set and quirk fixes, not the edition or classes (labels only)."""
        return {
            "reader": "cinc",
            "root": str(self.root.resolve()),
            "sources": self.sources,
            "fix_quirks": self.fix_quirks,
            "files": listing_stamp(self._find()),
        }

    def metadata(self) -> pd.DataFrame:
        """One row per record: record_id, patient_id, age, sex, labels (SNOMED code -> 1.0),
        path (the ``.hea``), source, database (:data:`DATABASES`), fs, n_samples.

        A header that cannot be parsed gives a row without labels (logged); reading that record
        raises the RecordError, where ``data.on_error`` decides what happens.
        """
        rows = []
        broken: list[str] = []
        seen: dict[str, Path] = {}
        for rel in self._find():
            name = rel.stem
            if name in seen:
                raise ConfigValueError(
                    f"dataset.root={self.root} holds record {name} twice ({seen[name]} and "
                    f"{rel}): point it at one copy of the data"
                )
            seen[name] = rel
            try:
                header = parse_header(self.root / rel)
            except RecordError as err:
                broken.append(str(err))
                header = None
            comments = header["comments"] if header else {}
            rows.append(
                {
                    "record_id": name,
                    # The challenge headers carry no patient id: each record stands alone.
                    "patient_id": name,
                    "age": parse_age(comments.get("Age")),
                    "sex": parse_sex(comments.get("Sex")),
                    "labels": {code: 1.0 for code in parse_dx(comments.get("Dx", ""))},
                    "path": rel.as_posix(),
                    "source": source_of(name),
                    "database": DATABASES[source_of(name)],
                    "fs": header["fs"] if header else math.nan,
                    "n_samples": header["n_samples"] if header else pd.NA,
                }
            )
        if broken:
            log.warning("%d unreadable headers, e.g. %s", len(broken), broken[0])
        columns = ["record_id", "patient_id", "age", "sex", "labels", "path", "source",
                   "database", "fs", "n_samples"]  # fmt: skip
        table = pd.DataFrame(rows, columns=columns)
        table["age"] = table["age"].astype(float)
        table["sex"] = table["sex"].astype(float)
        table["fs"] = table["fs"].astype(float)
        table["n_samples"] = table["n_samples"].astype("Int64")
        return table

    def read(self, row: Mapping[str, Any]) -> Record:
        """The record of one metadata row, leads in canonical order, in mV."""
        hea = self.root / row["path"]
        header = parse_header(hea)
        if header["n_sig"] != len(LEADS):
            raise RecordError(f"{hea}: {header['n_sig']} leads, expected {len(LEADS)}")
        if Path(header["file"]).stem != hea.stem:
            # Reading it would give another record's signal under this record's labels.
            raise RecordError(
                f"{hea}: the header names data file {header['file']!r}, not {hea.stem}.mat "
                "(another record's signal?)"
            )
        mat = hea.parent / header["file"]
        val = _load_val(mat, header["n_sig"], header["n_samples"])
        gain = header["gain"].copy()
        if (gain == 0).any():
            zero = [header["leads"][i] for i in np.flatnonzero(gain == 0)]
            raise RecordError(f"{hea}: ADC gain 0 for lead(s) {zero}")
        source = source_of(hea.stem)
        if self.fix_quirks and source in WRONG_GAINS:
            gain[gain == WRONG_GAINS[source]] = RIGHT_GAIN
        if val.dtype.kind in "iu":
            invalid = val == INVALID_16
            if invalid.any():
                raise RecordError(
                    f"{mat}: {int(invalid.sum())} samples hold WFDB's invalid value "
                    f"{INVALID_16} (wfdb reads them as NaN)"
                )
        # The same float64 arithmetic as wfdb's dac, so the result equals wfdb.rdsamp's.
        physical = (val.astype(np.float64) - header["baseline"][:, None]) / gain[:, None]
        if (header["scale"] != 1.0).any():
            physical = physical * header["scale"][:, None]
        signal = physical.astype(np.float32)
        check_signal(signal, str(mat))
        signal = canonical_order(signal, header["leads"], str(hea))
        return row_record(row, signal, header["fs"], source)

    # -- labels ------------------------------------------------------------------------------
    def labels(self, meta: pd.DataFrame) -> tuple[np.ndarray, list[str], np.ndarray]:
        """Multi-hot targets (N, C), class names (SNOMED codes), records with any class."""
        names, mapping = class_map(self.edition, self.classes)
        y, keep = multi_hot(meta["labels"], names, mapping)
        return y, names, keep


def source_of(record_name: str) -> str:
    """The source a challenge record comes from, by its name's letter prefix (and, for JS,
    its number: :data:`LAST_CHAPMAN_JS`)."""
    match = _NAME.match(record_name)
    if not match:
        return OTHER
    source = SOURCES.get(match.group(1).upper(), OTHER)
    if source == "Chapman-Shaoxing" and int(record_name[len(match.group(1)) :]) > LAST_CHAPMAN_JS:
        return NINGBO
    return source


def parse_header(path: Path) -> dict[str, Any]:
    """The parts of a CinC WFDB header the reader needs; RecordError naming the file otherwise.

    Keys: n_sig, fs, n_samples, file (the signal file, relative to the header), leads, gain,
    baseline, scale (to mV) as float64 arrays per lead, comments (``#Key: value`` pairs).
    """
    try:
        blob = path.read_bytes()
    except FileNotFoundError as err:
        raise RecordError(f"{path}: header file missing") from err
    except OSError as err:
        raise RecordError(f"{path}: unreadable header ({err})") from err
    try:
        if b"\x00" in blob:
            raise UnicodeError("NUL bytes")
        text = blob.decode("utf-8")
    except UnicodeError as err:
        raise RecordError(f"{path}: not a text header ({err})") from err
    comments: dict[str, str] = {}
    lines: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("#"):
            key, sep, value = line[1:].partition(":")
            if sep:
                comments.setdefault(key.strip(), value.strip())
        elif line:
            lines.append(line)
    if not lines:
        raise RecordError(f"{path}: no record line")
    fields = lines[0].split()
    try:
        n_sig = int(fields[1])
        # "500" or "500/50" (sampling / counter frequency).
        fs = float(fields[2].split("/")[0])
        n_samples = int(fields[3])
    except (IndexError, ValueError) as err:
        raise RecordError(f"{path}: malformed record line {lines[0]!r}") from err
    if n_sig <= 0 or fs <= 0 or n_samples <= 0:
        raise RecordError(f"{path}: record line {lines[0]!r} declares no signal")
    signal_lines = lines[1 : 1 + n_sig]
    if len(signal_lines) != n_sig:
        raise RecordError(f"{path}: {n_sig} signals declared, {len(signal_lines)} signal lines")
    files, leads, gain, baseline, scale = [], [], [], [], []
    for line in signal_lines:
        # file format gain[(baseline)][/units] adc_resolution adc_zero initial checksum block name
        parts = line.split()
        try:
            adc_zero = int(parts[4]) if len(parts) > 4 else 0
            g, b, s = _gain_field(parts[2] if len(parts) > 2 else "", adc_zero)
        except ValueError as err:
            raise RecordError(f"{path}: malformed signal line {line!r} ({err})") from err
        files.append(parts[0])
        leads.append(" ".join(parts[8:]))
        gain.append(g)
        baseline.append(b)
        scale.append(s)
    if len(set(files)) != 1:
        raise RecordError(f"{path}: signals spread over several files {sorted(set(files))}")
    return {
        "n_sig": n_sig,
        "fs": fs,
        "n_samples": n_samples,
        "file": files[0],
        "leads": leads,
        "gain": np.array(gain, dtype=np.float64),
        "baseline": np.array(baseline, dtype=np.float64),
        "scale": np.array(scale, dtype=np.float64),
        "comments": comments,
    }


def _gain_field(text: str, adc_zero: int) -> tuple[float, float, float]:
    """``gain[(baseline)][/units]`` -> (gain, baseline, factor to mV), WFDB's defaults applied."""
    units = "mV"
    if "/" in text:
        text, units = text.split("/", 1)
    baseline = float(adc_zero)  # WFDB: the baseline is the ADC zero unless given
    if "(" in text:
        text, _, rest = text.partition("(")
        baseline = float(rest.rstrip(")"))
    # An absent gain is WFDB's default 200; a written 0 (which WFDB also reads as 200) is
    # damage in a challenge header, all of which write 1000 or the known quirks: kept as 0 so
    # that read() refuses it naming the lead (the header's labels stay readable).
    gain = float(text) if text else 200.0
    factor = _UNITS.get(units.strip().lower())
    if factor is None:
        raise ValueError(f"unsupported units {units!r}")
    return gain, baseline, factor


def _load_val(mat: Path, n_sig: int, n_samples: int) -> np.ndarray:
    val = load_mat(mat, "val", missing="signal file missing").get("val")
    if not isinstance(val, np.ndarray) or val.dtype.kind not in "iuf":
        raise RecordError(f"{mat}: no numeric variable 'val'")
    if val.shape != (n_sig, n_samples):
        raise RecordError(
            f"{mat}: 'val' is {val.shape}, the header declares ({n_sig}, {n_samples})"
        )
    return val


def parse_age(text: str | None) -> float:
    # Headers write unknown ages as "NaN", "Unknown" or a negative number.
    try:
        age = float(text) if text is not None else math.nan
    except ValueError:
        return math.nan
    return age if math.isfinite(age) and age >= 0 else math.nan


def parse_sex(text: str | None) -> float:
    value = (text or "").strip().lower()
    return {"male": 0.0, "m": 0.0, "female": 1.0, "f": 1.0}.get(value, math.nan)
