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

from ecgx.data.extras import from_record
from ecgx.errors import ConfigValueError
from ecgx.evaluation.calibration import stored_temperature
from ecgx.formats.files import find_records, read_record
from ecgx.formats.record import LEADS, Record, RecordError, canonical_record
from ecgx.models.base import task_outputs
from ecgx.tracking.runs import (
    build_net,
    datamodule_state,
    load_checkpoint,
    load_run,
    logged_thresholds,
)
from ecgx.tracking.runs import output_dir as job_output_dir
from ecgx.training.windows import Windows
from ecgx.transforms.signal import Resample, TransformPipeline

log = logging.getLogger(__name__)


@dataclass
class Predictions:
    """What ``ecgx predict`` wrote."""

    table: pd.DataFrame
    path: Path
    thresholds: list[float]
    threshold_source: str  # "run" (its tuned test/threshold_<class>) or "0.5"
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)


# -- reading one file -------------------------------------------------------------------------
def read_file(path: str | Path, fs: float | None = None) -> Record:
    """One record file in any format :mod:`ecgx.formats.files` reads, as every model takes it:
    (12, samples) float32 mV in canonical lead order (limb leads of 8-lead files derived)."""
    return canonical_record(read_record(path, fs))


# -- the run's pipeline -----------------------------------------------------------------------
class RunPipeline:
    """A finished run's transforms and model, applied to single records."""

    def __init__(
        self,
        run_cfg: DictConfig,
        checkpoint: dict[str, Any],
        model_fs: float | None = None,
        calibrate: bool | None = None,
        need_classes: bool = True,
    ) -> None:
        state = datamodule_state(checkpoint) or {}
        self.class_names: list[str] = list(state.get("class_names") or [])
        # ecgx embed also reads pretraining runs of unlabelled data (no classes).
        if not self.class_names and need_classes:
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
        windows = run_cfg.module.get("test_windows")
        self.windows: Windows | None = instantiate(windows) if windows else None
        # Scored by windows: the record uncropped, as the run's test saw its records.
        self.view = self.transform.uncropped() if self.windows else self.transform
        thresholds = (checkpoint.get("ecgx") or {}).get("thresholds")
        #: thresholds tuned on validation with these weights (saved in the checkpoint)
        self.thresholds: list[float] | None = None if thresholds is None else list(thresholds)

    def extras(self, record: Record) -> dict[str, torch.Tensor]:
        """The model's extra inputs from the record's header (e.g. age and sex)."""
        return {k: torch.from_numpy(v) for k, v in from_record(self.net, record).items()}

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
        view = np.asarray(self.view.apply_online(x, None), dtype=np.float32)
        if self.transform.normalize is not None:
            x = self.transform.normalize(x)
        return np.asarray(self.view.apply_online(x, None), dtype=np.float32), view, fs

    @torch.no_grad()
    def outputs(self, x: np.ndarray, extras: dict[str, torch.Tensor] | None = None) -> np.ndarray:
        """Class probabilities (or regression values) of one prepared input."""
        if self.windows is not None:
            out = self.windows.score(self._outputs, torch.from_numpy(x)[None], extras=extras)
        else:
            out = self._outputs(torch.from_numpy(x)[None], **(extras or {}))
        return out[0].numpy()

    def columns(self, probs: np.ndarray, thresholds: list[float]) -> dict[str, float | int]:
        """One record's output columns: ``prob_<class>`` (``pred_<class>`` for regression) and
        ``label_<class>`` (multi-label: prob >= its threshold; multi-class: the argmax)."""
        names = self.class_names
        classify = self.task != "regression"
        row: dict[str, float | int] = {f"{'prob' if classify else 'pred'}_{n}": float(p)
                                       for n, p in zip(names, probs)}  # fmt: skip
        if self.task == "multilabel":
            row.update({f"label_{n}": int(p >= t) for n, p, t in zip(names, probs, thresholds)})
        elif self.task == "multiclass":
            row.update({f"label_{n}": int(i == int(np.argmax(probs))) for i, n in enumerate(names)})
        return row

    def _outputs(self, x: torch.Tensor, **extras: torch.Tensor) -> torch.Tensor:
        return task_outputs(self.net(x, **extras), self.task, self.temperature)


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
def input_records(cfg: DictConfig, command: str) -> tuple[list[Path], str]:
    """The record files of ``cfg.input`` and ``cfg.on_error`` (raise | skip), checked, for the
    commands that read a user's files with a run (``ecgx predict``, ``ecgx embed``)."""
    if not cfg.get("input"):
        raise ConfigValueError(f"ecgx {command} needs input=<record file or folder>")
    on_error = str(cfg.get("on_error", "raise"))
    if on_error not in ("raise", "skip"):
        raise ConfigValueError(f"on_error must be raise or skip, got {on_error!r}")
    return find_records(Path(str(cfg.input)).expanduser()), on_error


def predict_run(cfg: DictConfig) -> Predictions:
    """Predict every record of ``cfg.input`` with a finished run (see conf/predict.yaml)."""
    files, on_error = input_records(cfg, "predict")
    if cfg.get("model_uri"):  # a logged or registered MLflow model: its own weights and contract
        from ecgx.deploy.pyfunc import load

        logged = load(str(cfg.model_uri), cfg.get("tracking_uri"))
        pipeline, used = logged.pipeline, str(cfg.model_uri)
        names = pipeline.class_names
        thresholds, source = _thresholds(cfg, names, logged.contract.thresholds, model=True)
    else:
        run_cfg, ckpt_path = load_run(cfg, "predict")
        pipeline = RunPipeline(run_cfg, load_checkpoint(ckpt_path), cfg.get("model_fs"),
                               cfg.get("calibrate"))  # fmt: skip
        used = ckpt_path.name
        names = pipeline.class_names
        thresholds, source = _thresholds(cfg, names, pipeline.thresholds)
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
            extras = pipeline.extras(record)
            probs = pipeline.outputs(x, extras)
        except RecordError as err:
            if on_error == "raise":
                raise
            log.warning("skipped: %s", err)
            skipped.append((str(path), str(err)))
            continue
        row: dict[str, Any] = {"file": str(path), "record_id": record.record_id,
                               "format": record.format, "fs": record.fs,
                               "leads": " ".join(record.extra.get("file_leads", record.leads)),
                               "derived_leads": " ".join(record.extra.get("derived_leads", []))}  # fmt: skip
        row.update(pipeline.columns(probs, thresholds))
        if explainer is not None:
            row["explanation"] = str(explainer.plot(record.record_id, x, view, rate, probs,
                                                    extras))  # fmt: skip
        rows.append(row)
    table = pd.DataFrame(rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    print(f"\nPredicted {len(table)} of {len(files)} records with {used}; wrote {out}")
    if pipeline.task == "multilabel":
        where = {"run": "the run's tuned test/threshold_<class>",
                 "checkpoint": "tuned on validation, saved in the checkpoint",
                 "model": "those of the logged model's contract"}.get(
                     source, f"{source} for every class")  # fmt: skip
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
             probs: np.ndarray, extras: dict[str, torch.Tensor] | None = None) -> Path:  # fmt: skip
        from ecgx.explain import plots

        target = int(np.argmax(probs))
        a = self.method.attribute(torch.from_numpy(x)[None], torch.tensor([target]),
                                  extras=extras)[0].numpy()  # fmt: skip
        name = self.pipeline.class_names[target]
        title = f"{self.name}: record {record_id}, class {name} (p={probs[target]:.2f})"
        if extras:
            title += f"; {', '.join(extras)} held fixed"
        # Saturate at the 99.5th percentile, as ecgx explain: a few extreme gradient samples
        # would otherwise leave the rest of the record white.
        vmax = float(np.percentile(np.abs(a), 99.5)) or None
        leads = list(self.pipeline.transform.output_leads(LEADS))
        fig = plots.ecg_paper(view, fs, leads=leads, attribution=a, title=title,
                              signed=self.method.signed, vmax=vmax, layout=self.layout)  # fmt: skip
        return plots.save(fig, self.out_dir / f"record_{record_id}.png")


def _thresholds(
    cfg: DictConfig, names: list[str], saved: list[float] | None = None, model: bool = False
) -> tuple[list[float], str]:
    """The run's tuned thresholds when it logged them (``thresholds=auto``), else those saved
    in the checkpoint, else 0.5; a number for ``thresholds`` uses that one for every class."""
    setting = cfg.get("thresholds", "auto")
    if setting not in (None, "auto"):
        try:
            value = float(setting)
        except (TypeError, ValueError) as err:
            raise ConfigValueError(f"thresholds must be auto or a number, got {setting!r}") from err
        return [value] * len(names), str(value)
    if model:  # the logged model's contract holds the thresholds it was logged with
        return list(saved or [0.5] * len(names)), "model"
    tuned = logged_thresholds(cfg.tracking_uri, cfg.get("run_id"), names)
    if tuned is not None:
        return tuned, "run"
    if saved is not None and len(saved) == len(names):
        return [float(t) for t in saved], "checkpoint"
    return [0.5] * len(names), "0.5"
