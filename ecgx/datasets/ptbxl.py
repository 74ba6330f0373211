"""PTB-XL (Wagner et al. 2020) in its own on-disk layout, and its label tasks.

The reader yields records with PTB-XL's own vocabulary (``scp_codes`` with likelihoods); turning
those into task classes is :meth:`PTBXL.labels`, kept apart so a task change never re-reads
signals (the signal cache key does not include the task).
"""

from __future__ import annotations

import ast
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ecgx.data.cache import file_stamp
from ecgx.datasets.base import check_root, row_record
from ecgx.errors import ConfigValueError, MissingPathError
from ecgx.formats.record import Record, RecordError, canonical_order, check_signal
from ecgx.formats.wfdb_format16 import read_record

log = logging.getLogger(__name__)

DATABASE_CSV = "ptbxl_database.csv"
STATEMENTS_CSV = "scp_statements.csv"
# The PTB-XL benchmark's six tasks plus the statement-level ones they are built from.
TASKS = ("superdiagnostic", "subdiagnostic", "diagnostic", "form", "rhythm", "all",
         "mi_subdisease", "regression")  # fmt: skip
MI_CLASSES = ["ASMI", "IMI", "NORM"]
RECORD_SECONDS = 10  # every PTB-XL record (Wagner et al. 2020); a longer one is damage


class PTBXL:
    """PTB-XL records at 100 or 500 Hz with one of the benchmark's label tasks.

    Args:
        root: folder with ``ptbxl_database.csv``, ``scp_statements.csv`` and ``records100/500``.
        sampling_rate: 100 (``filename_lr``) or 500 (``filename_hr``).
        task: one of :data:`TASKS`.
        min_likelihood: a statement counts when its likelihood is at least this. The IMLE-Net
            seed counts every statement at any likelihood (0, the default).
        synthetic: if given (``{n_records, seed}``) and ``root`` holds no database yet, ecgx's
            synthetic PTB-XL-layout set is generated there first.
        features_csv: ``task=regression``: a table keyed by ``ecg_id`` (PTB-XL+, e.g.
            ``features/unig_features.csv``; relative to ``root`` or absolute).
        target_columns: ``task=regression``: its columns to predict; shell patterns allowed
            (``[T_Amp_*]``: the T-wave amplitude of every lead, XAI4ECG). Records with a
            missing value in any target are left out.
    """

    def __init__(
        self,
        root: str | Path,
        sampling_rate: int = 100,
        task: str = "superdiagnostic",
        min_likelihood: float = 0.0,
        synthetic: dict | None = None,
        features_csv: str | None = None,
        target_columns: list[str] | None = None,
    ) -> None:
        if sampling_rate not in (100, 500):
            raise ConfigValueError(f"dataset.sampling_rate must be 100 or 500, got {sampling_rate}")
        if task not in TASKS:
            raise ConfigValueError(f"dataset.task must be one of {TASKS}, got {task!r}")
        self.root = Path(root).expanduser()
        self.sampling_rate = int(sampling_rate)
        self.task = task
        self.min_likelihood = float(min_likelihood)
        self.synthetic = dict(synthetic) if synthetic else None
        self.features_csv = features_csv
        self.target_columns = list(target_columns or [])
        if task == "regression" and not (features_csv and self.target_columns):
            raise ConfigValueError(
                "dataset.task=regression needs dataset.features_csv and dataset.target_columns"
            )

    # -- files -------------------------------------------------------------------------------
    def ensure(self) -> None:
        """Generate the synthetic set if asked to, then fail early on a missing root or table."""
        if self.synthetic and not (self.root / DATABASE_CSV).is_file():
            from ecgx.datasets.synthetic import generate_ptbxl_like

            log.info("generating synthetic PTB-XL-layout set at %s", self.root)
            generate_ptbxl_like(self.root, **self.synthetic)
        check_root(self.root, [DATABASE_CSV, STATEMENTS_CSV], "a PTB-XL folder")

    def signal_spec(self) -> dict:
        """What determines the signals (and so the cache key): not the task or label rules."""
        return {
            "reader": "ptbxl",
            "root": str(self.root.resolve()),
            "sampling_rate": self.sampling_rate,
            "database_csv": file_stamp(self.root / DATABASE_CSV),
        }

    def metadata(self) -> pd.DataFrame:
        """One row per record: record_id, patient_id, age, sex, strat_fold, labels, path."""
        csv = self.root / DATABASE_CSV
        table = pd.read_csv(csv)
        need = ["ecg_id", "patient_id", "age", "sex", "scp_codes", "strat_fold"]
        column = "filename_lr" if self.sampling_rate == 100 else "filename_hr"
        missing = [c for c in [*need, column] if c not in table.columns]
        if missing:
            raise RecordError(f"{csv}: missing columns {missing}")
        twice = table["ecg_id"][table["ecg_id"].duplicated()].unique().tolist()
        if twice:
            # A record listed twice would be read, counted and trained on twice (and may land
            # in two splits): a table fault, so an error whatever data.on_error says.
            raise RecordError(f"{csv}: ecg_id listed more than once: {twice[:10]}")
        return pd.DataFrame(
            {
                "record_id": table["ecg_id"].astype(int).astype(str),
                "patient_id": table["patient_id"].map(_patient_str),
                "age": table["age"].astype(float),
                "sex": table["sex"].astype(float),
                "strat_fold": table["strat_fold"].astype(int),
                "labels": [
                    _parse_codes(s, csv, i) for i, s in zip(table["ecg_id"], table["scp_codes"])
                ],
                "path": table[column].astype(str),
                "source": "ptbxl",
            }
        )

    def read(self, row: Mapping[str, Any]) -> Record:
        """The record of one metadata row, leads in canonical order, in mV."""
        path = Path(os.path.join(self.root, row["path"]))
        where = str(path)
        signal, fs, names = read_record(path)
        if fs != self.sampling_rate:
            raise RecordError(f"{where}: fs {fs} Hz, expected {self.sampling_rate}")
        if signal.shape[1] != RECORD_SECONDS * self.sampling_rate:
            raise RecordError(
                f"{where}: {signal.shape[1]} samples ({signal.shape[1] / fs:g} s); every PTB-XL "
                f"record lasts {RECORD_SECONDS} s"
            )
        check_signal(signal, where)
        return row_record(row, canonical_order(signal, names, where), fs, "ptbxl")

    # -- labels ------------------------------------------------------------------------------
    def statement_map(self) -> dict[str, str]:
        """Statement code -> task class for this task (from ``scp_statements.csv``)."""
        table = pd.read_csv(self.root / STATEMENTS_CSV, index_col=0)
        if self.task == "all":
            return {code: code for code in table.index}
        if self.task in ("form", "rhythm"):
            rows = table[table[self.task] == 1]
            return {code: code for code in rows.index}
        rows = table[table["diagnostic"] == 1]
        column = {
            "superdiagnostic": "diagnostic_class",
            "subdiagnostic": "diagnostic_subclass",
            "diagnostic": None,
        }[self.task]
        if column is None:
            return {code: code for code in rows.index}
        return {code: str(rows.at[code, column]) for code in rows.index}

    def labels(self, meta: pd.DataFrame) -> tuple[np.ndarray, list[str], np.ndarray]:
        """Multi-hot targets (N, C), class names (sorted), and which records have any label.

        Records without a statement of the task are dropped by the caller and counted.
        """
        if self.task == "mi_subdisease":
            return _mi_subdisease(meta)
        if self.task == "regression":
            return self._regression_targets(meta)
        mapping = self.statement_map()
        known = set(pd.read_csv(self.root / STATEMENTS_CSV, index_col=0).index)
        classes = sorted(set(mapping.values()))
        col = {name: i for i, name in enumerate(classes)}
        y = np.zeros((len(meta), len(classes)), dtype=np.float32)
        unknown: dict[str, int] = {}
        for i, codes in enumerate(meta["labels"]):
            for code, likelihood in codes.items():
                if code in mapping and likelihood >= self.min_likelihood:
                    y[i, col[mapping[code]]] = 1.0
                elif code not in known:
                    unknown[code] = unknown.get(code, 0) + 1
        if unknown:
            log.warning("%s: scp_codes not in %s (ignored): %s", self.root / DATABASE_CSV,
                        STATEMENTS_CSV, unknown)  # fmt: skip
        return y, classes, y.any(axis=1)

    def _regression_targets(self, meta: pd.DataFrame) -> tuple[np.ndarray, list[str], np.ndarray]:
        import fnmatch

        path = Path(self.features_csv).expanduser()
        path = path if path.is_absolute() else self.root / path
        if not path.is_file():
            raise MissingPathError(f"dataset.features_csv: {path} does not exist")
        table = pd.read_csv(path)
        if "ecg_id" not in table.columns:
            raise ConfigValueError(f"dataset.features_csv: {path} has no ecg_id column")
        columns: list[str] = []
        for pattern in self.target_columns:
            found = [c for c in table.columns if fnmatch.fnmatchcase(c, pattern)]
            if not found:
                raise ConfigValueError(
                    f"dataset.target_columns: {pattern!r} matches no column of {path}"
                )
            columns += [c for c in found if c not in columns]
        table = table.set_index(table["ecg_id"].astype(int).astype(str))
        y = table.reindex(meta["record_id"])[columns].to_numpy(dtype=np.float32)
        keep = np.isfinite(y).all(axis=1)
        return np.nan_to_num(y), columns, keep


def _patient_str(value: object) -> str:
    # PTB-XL stores patient ids as floats ("15709.0"); a plain integer string is the stable id.
    try:
        return str(int(float(value)))
    except (TypeError, ValueError):
        return str(value)


def _parse_codes(text: str, csv: Path, ecg_id: object) -> dict[str, float]:
    if isinstance(text, str) and '"' not in text and "\\" not in text:
        # PTB-XL writes {'NORM': 100.0, 'SR': 0.0}: with single quotes swapped that is JSON,
        # parsed ~10x faster than by literal_eval (a visible share of listing 21,837 rows).
        # Anything JSON reads differently (NaN, true/null...) is left to literal_eval.
        try:
            codes = json.loads(text.replace("'", '"'), parse_constant=_not_literal)
        except (ValueError, _NotLiteral):
            pass
        else:
            if isinstance(codes, dict) and all(type(v) in (int, float) for v in codes.values()):
                return {str(k): float(v) for k, v in codes.items()}
    try:
        codes = ast.literal_eval(text)
    except (ValueError, SyntaxError) as err:
        raise RecordError(f"{csv}: ecg_id {ecg_id}: scp_codes is not a dict: {text!r}") from err
    if not isinstance(codes, dict):
        raise RecordError(f"{csv}: ecg_id {ecg_id}: scp_codes is not a dict: {text!r}")
    return {str(k): float(v) for k, v in codes.items()}


class _NotLiteral(Exception):
    pass


def _not_literal(name: str) -> None:
    raise _NotLiteral(name)


def _mi_subdisease(meta: pd.DataFrame) -> tuple[np.ndarray, list[str], np.ndarray]:
    """IMLE-Net's MI sub-disease task (spec A3), one-hot over ASMI / IMI / NORM.

    MI records: an ASMI or IMI statement at likelihood 0, 80 or 100 (15/35/50 do not count),
    and exactly one of the two. NORM records: NORM at likelihood exactly 100 and no MI.
    """
    y = np.zeros((len(meta), 3), dtype=np.float32)
    for i, codes in enumerate(meta["labels"]):
        mi = [c for c in ("ASMI", "IMI") if c in codes and codes[c] in (0.0, 80.0, 100.0)]
        if len(mi) == 1:
            y[i, MI_CLASSES.index(mi[0])] = 1.0
        elif not mi and codes.get("NORM") == 100.0 and not {"ASMI", "IMI"} & set(codes):
            y[i, 2] = 1.0
    return y, list(MI_CLASSES), y.any(axis=1)
