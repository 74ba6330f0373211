"""``ecgx predict``: class probabilities and labels of new records from a finished run.

A record goes through exactly what the run's records went through: read to (12, samples) mV in
canonical lead order, the run's offline transforms (resampling, filters, lead subset), the
normalisation fitted at training time (stored in the checkpoint), the evaluation view of the
online transforms, then the model. The training data need not be present.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from ecgx.errors import ConfigValueError, MissingPathError
from ecgx.evaluation.calibration import stored_temperature
from ecgx.formats.record import (
    LEADS,
    Record,
    RecordError,
    canonical_leads,
    check_signal,
    reorder_leads,
)
from ecgx.tracking.runs import (
    build_net,
    datamodule_state,
    load_checkpoint,
    load_run,
    logged_thresholds,
)
from ecgx.tracking.runs import output_dir as job_output_dir
from ecgx.transforms.signal import Resample, TransformPipeline

log = logging.getLogger(__name__)

#: file endings read as one record each (``.dat`` belongs to its ``.hea``)
SUFFIXES = (".hea", ".mat", ".csv", ".h5", ".hdf5", ".npy")
FORMATS = (
    "WFDB (.hea with .dat, or CinC .hea with .mat), CPSC 2018 .mat, Chapman-Shaoxing .csv, "
    "SPH .h5/.hdf5, or NumPy .npy (leads x samples, mV)"
)
# Tables that sit next to records in the published layouts; a folder scan leaves them out.
_TABLES = {"reference.csv", "metadata.csv", "ptbxl_database.csv", "scp_statements.csv",
           "diagnostics.csv", "dx_mapping_scored.csv", "dx_mapping_unscored.csv",
           "weights.csv", "weights_abbreviations.csv"}  # fmt: skip
DEFAULT_FS = 500.0  # CPSC 2018, Chapman-Shaoxing and SPH files carry no rate; all are 500 Hz


@dataclass
class Predictions:
    """What ``ecgx predict`` wrote."""

    table: pd.DataFrame
    path: Path
    thresholds: list[float]
    threshold_source: str  # "run" (its tuned test/threshold_<class>) or "0.5"
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)


# -- reading one file -------------------------------------------------------------------------
def find_records(path: Path) -> list[Path]:
    """The record files of ``path``: the file itself, or every record file under a folder."""
    if path.is_file():
        if path.suffix.lower() not in SUFFIXES:
            raise RecordError(f"input={path}: not a supported record file; ecgx predict reads "
                              f"{FORMATS}")  # fmt: skip
        return [path]
    if not path.is_dir():
        raise MissingPathError(f"input={path}: no such file or folder")
    files = []
    for p in sorted(path.rglob("*")):
        if not p.is_file() or p.name.startswith(".") or p.suffix.lower() not in SUFFIXES:
            continue
        if p.suffix.lower() == ".mat" and p.with_suffix(".hea").is_file():
            continue  # the signal file of a CinC header record, read through its header
        if p.suffix.lower() == ".csv" and p.name.lower() in _TABLES:
            continue
        files.append(p)
    if not files:
        raise MissingPathError(f"input={path}: no record files in it; ecgx predict reads {FORMATS}")
    return files


def _row(path: Path) -> pd.Series:
    # The readers take a metadata row; a lone file has no labels or demographics.
    return pd.Series({"record_id": path.stem, "path": path.name, "patient_id": "",
                      "age": np.nan, "sex": np.nan, "labels": {}, "n_samples": None})  # fmt: skip


def read_file(path: str | Path, fs: float | None = None) -> Record:
    """One record file in any supported format as (12, samples) float32 mV, canonical leads.

    WFDB (``.hea`` with a ``.dat`` or, CinC style, ``.mat`` signal file) carries its rate;
    CPSC 2018 ``.mat``, Chapman ``.csv`` and SPH ``.h5`` are read at ``fs`` (default 500 Hz);
    ``.npy`` (leads × samples, mV, canonical lead order) needs ``fs``. RecordError naming the
    file for anything else.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".mat" and path.with_suffix(".hea").is_file():
            path, suffix = path.with_suffix(".hea"), ".hea"
        if suffix == ".hea":
            record = _read_wfdb(path)
        elif suffix == ".mat":
            from ecgx.datasets.cpsc2018 import CPSC2018

            record = CPSC2018(path.parent, fs=fs or DEFAULT_FS).read(_row(path))
        elif suffix == ".csv":
            from ecgx.datasets.chapman import ChapmanShaoxing

            # No quality filter: it is the vision seed's training-set rule, not a read check.
            record = ChapmanShaoxing(path.parent, quality_filter=False).read(_row(path))
        elif suffix in (".h5", ".hdf5"):
            from ecgx.datasets.sph import SPH

            record = SPH(path.parent).read(_row(path))
        elif suffix == ".npy":
            record = _read_npy(path, fs)
        else:
            raise RecordError(f"{path}: not a supported record file; ecgx predict reads {FORMATS}")
    except RecordError:
        raise
    except Exception as err:  # a reader meeting something it never expected: still name the file
        raise RecordError(f"{path}: unreadable ({type(err).__name__}: {err})") from err
    if fs and suffix in (".csv", ".h5", ".hdf5"):
        record.fs = float(fs)  # these readers fix 500 Hz; a user's file may differ
    record.extra["file"] = str(path)
    return record


def _read_wfdb(hea: Path) -> Record:
    from ecgx.datasets.cinc import CinC, parse_header

    header = parse_header(hea)
    if header["file"].lower().endswith(".mat"):
        return CinC(hea.parent).read(_row(hea))
    from ecgx.formats.wfdb_format16 import read_record

    where = str(hea)
    signal, fs, names = read_record(hea.with_suffix(""))
    check_signal(signal, where)
    leads = canonical_leads(names, where)
    return Record(record_id=hea.stem, signal=reorder_leads(signal, leads, LEADS, where),
                  fs=float(fs), leads=LEADS)  # fmt: skip


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
    return Record(record_id=path.stem, signal=signal, fs=float(fs), leads=LEADS)


# -- the run's pipeline -----------------------------------------------------------------------
class RunPipeline:
    """A finished run's transforms and model, applied to single records."""

    def __init__(
        self,
        run_cfg: DictConfig,
        checkpoint: dict[str, Any],
        model_fs: float | None = None,
        calibrate: bool | None = None,
    ) -> None:
        state = datamodule_state(checkpoint) or {}
        self.class_names: list[str] = list(state.get("class_names") or [])
        if not self.class_names:
            raise ConfigValueError("the checkpoint holds no class names (not an ecgx run?)")
        self.transform: TransformPipeline = instantiate(run_cfg.data.transform)
        normalize = self.transform.normalize
        if normalize is not None:
            if state.get("normalize") is None:
                raise ConfigValueError("the checkpoint holds no fitted normalisation state")
            normalize.load_state_dict(state["normalize"])
        self.task = str(run_cfg.module.task)
        leads = self.transform.output_leads(LEADS)
        self.net = build_net(run_cfg, checkpoint, len(leads), len(self.class_names))
        self.fs = float(model_fs) if model_fs else _model_fs(run_cfg, self.transform)
        # Temperature scaling as the run tested (module.calibrate), unless told otherwise.
        wanted = run_cfg.module.get("calibrate", False) if calibrate is None else calibrate
        self.temperature = None
        if wanted and self.task != "regression":
            self.temperature = stored_temperature(checkpoint)
            if self.temperature is None:
                raise ConfigValueError(
                    "calibrate=true: the checkpoint holds no fitted temperature (train with "
                    "module.calibrate=true, or let `ecgx eval calibrate=true` fit one on the "
                    "run's validation split)"
                )

    def inputs(self, record: Record) -> tuple[np.ndarray, np.ndarray, float]:
        """(model input, the same evaluation view in mV, its rate) of one record: offline
        transforms, fitted normalisation, evaluation view of the online transforms."""
        x, fs = self.transform.apply_offline(record.signal, record.fs)
        if self.fs is not None and fs != self.fs:
            where = record.extra.get("file", record.record_id)
            raise RecordError(
                f"{where}: {record.fs:g} Hz becomes {fs:g} Hz after the run's offline "
                f"transforms, but the model was trained at {self.fs:g} Hz (the run does not "
                f"resample: resample the record, or train with transform Resample)"
            )
        # The cache stores float32: the same rounding as the records the model was tested on.
        x = np.asarray(x, dtype=np.float32)
        view = np.asarray(self.transform.apply_online(x, None), dtype=np.float32)
        if self.transform.normalize is not None:
            x = self.transform.normalize(x)
        return np.asarray(self.transform.apply_online(x, None), dtype=np.float32), view, fs

    @torch.no_grad()
    def outputs(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities (or regression values) of one prepared input."""
        logits = self.net(torch.from_numpy(x)[None]).float()
        if self.temperature is not None:
            logits = logits / self.temperature
        if self.task == "multilabel":
            out = torch.sigmoid(logits)
        elif self.task == "multiclass":
            out = torch.softmax(logits, dim=1)
        else:
            out = logits
        return out[0].numpy()


def _model_fs(run_cfg: DictConfig, transform: TransformPipeline) -> float | None:
    """The rate of the model's inputs: a Resample's, else the training reader's native rate
    (None where the reader has no single rate, e.g. CinC without resampling)."""
    rates = [t.fs for t in transform.offline if isinstance(t, Resample)]
    if rates:
        return rates[-1]
    import sys

    try:
        reader = instantiate(run_cfg.data.dataset)  # readers only store settings here
    except Exception as err:  # e.g. a reader whose settings no longer validate
        log.warning("cannot tell the run's sampling rate (%s): not checked", err)
        return None
    for name in ("sampling_rate", "fs"):
        if getattr(reader, name, None):
            return float(getattr(reader, name))
    fixed = getattr(sys.modules[type(reader).__module__], "FS", None)  # Chapman, SPH: 500 Hz
    return float(fixed) if fixed else None


# -- the command --------------------------------------------------------------------------------
def predict_run(cfg: DictConfig) -> Predictions:
    """Predict every record of ``cfg.input`` with a finished run (see conf/predict.yaml)."""
    if not cfg.get("input"):
        raise ConfigValueError("ecgx predict needs input=<record file or folder>")
    on_error = str(cfg.get("on_error", "raise"))
    if on_error not in ("raise", "skip"):
        raise ConfigValueError(f"on_error must be raise or skip, got {on_error!r}")
    files = find_records(Path(str(cfg.input)).expanduser())
    run_cfg, ckpt_path = load_run(cfg, "predict")
    pipeline = RunPipeline(run_cfg, load_checkpoint(ckpt_path), cfg.get("model_fs"),
                           cfg.get("calibrate"))  # fmt: skip
    names = pipeline.class_names
    thresholds, source = _thresholds(cfg, names)
    fs = float(cfg.fs) if cfg.get("fs") else None
    out = Path(str(cfg.output)).expanduser() if cfg.get("output") else None
    out = out or job_output_dir("predict") / "predictions.csv"
    explainer = None
    if (cfg.get("explainer") or {}).get("method"):
        explainer = _RecordExplainer(cfg.explainer, pipeline, out.parent / "explain")

    rows, skipped = [], []
    for path in files:
        try:
            record = read_file(path, fs)
            x, view, rate = pipeline.inputs(record)
            probs = pipeline.outputs(x)
        except RecordError as err:
            if on_error == "raise":
                raise
            log.warning("skipped: %s", err)
            skipped.append((str(path), str(err)))
            continue
        row: dict[str, Any] = {"file": str(path), "record_id": record.record_id}
        classify = pipeline.task != "regression"
        row.update({f"{'prob' if classify else 'pred'}_{n}": float(p)
                    for n, p in zip(names, probs)})  # fmt: skip
        if pipeline.task == "multilabel":
            row.update({f"label_{n}": int(p >= t) for n, p, t in zip(names, probs, thresholds)})
        elif pipeline.task == "multiclass":
            row.update({f"label_{n}": int(i == int(np.argmax(probs))) for i, n in enumerate(names)})
        if explainer is not None:
            row["explanation"] = str(explainer.plot(record.record_id, x, view, rate, probs))
        rows.append(row)
    table = pd.DataFrame(rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    print(f"\nPredicted {len(table)} of {len(files)} records with {ckpt_path.name}; wrote {out}")
    if pipeline.task == "multilabel":
        where = ("the run's tuned test/threshold_<class>" if source == "run"
                 else "0.5 for every class")  # fmt: skip
        print(f"label_<class> = prob >= threshold, thresholds: {where}")
        log.info("thresholds (%s): %s", source, dict(zip(names, thresholds)))
    if skipped:
        print(f"Skipped {len(skipped)} unreadable records:")
        for file, reason in skipped:
            print(f"  {file}: {reason}")
    return Predictions(table, out, thresholds, source, skipped)


class _RecordExplainer:
    """A paper-ECG plot per record with the attribution of its most probable class."""

    def __init__(self, node: DictConfig, pipeline: RunPipeline, out_dir: Path) -> None:
        from ecgx.transforms.chart import ChartImage

        if any(isinstance(t, ChartImage) for t in pipeline.transform.offline):
            raise ConfigValueError("explainer: per-record plots need a signal model, not a chart")
        self.method = instantiate(node.method)(pipeline.net)
        self.name = str(node.get("name") or type(self.method).__name__.lower())
        if self.method.needs_background:
            # Baselines are training records, which predict does not read.
            raise ConfigValueError(f"explainer={self.name} needs training records as baselines")
        self.pipeline = pipeline
        self.layout = str(node.get("layout", "12x1"))
        self.out_dir = out_dir / self.name

    def plot(self, record_id: str, x: np.ndarray, view: np.ndarray, fs: float,
             probs: np.ndarray) -> Path:  # fmt: skip
        from ecgx.explain import plots

        target = int(np.argmax(probs))
        a = self.method.attribute(torch.from_numpy(x)[None], torch.tensor([target]))[0].numpy()
        name = self.pipeline.class_names[target]
        title = f"{self.name}: record {record_id}, class {name} (p={probs[target]:.2f})"
        # Saturate at the 99.5th percentile, as ecgx explain: a few extreme gradient samples
        # would otherwise leave the rest of the record white.
        vmax = float(np.percentile(np.abs(a), 99.5)) or None
        leads = list(self.pipeline.transform.output_leads(LEADS))
        fig = plots.ecg_paper(view, fs, leads=leads, attribution=a, title=title,
                              signed=self.method.signed, vmax=vmax, layout=self.layout)  # fmt: skip
        return plots.save(fig, self.out_dir / f"record_{record_id}.png")


def _thresholds(cfg: DictConfig, names: list[str]) -> tuple[list[float], str]:
    """The run's tuned thresholds when it logged them (``thresholds=auto``), else 0.5; a
    number for ``thresholds`` uses that one for every class."""
    setting = cfg.get("thresholds", "auto")
    if setting not in (None, "auto"):
        try:
            value = float(setting)
        except (TypeError, ValueError) as err:
            raise ConfigValueError(f"thresholds must be auto or a number, got {setting!r}") from err
        return [value] * len(names), str(value)
    tuned = logged_thresholds(cfg.tracking_uri, cfg.get("run_id"), names)
    if tuned is not None:
        return tuned, "run"
    return [0.5] * len(names), "0.5"
