"""The MLflow pyfunc model of a run: raw records in, class probabilities and labels out.

The model is MLflow's "loader module" flavour, not a pickled ``PythonModel``: its folder holds
data only (``weights.pt``, tensors and plain containers loaded with ``weights_only=True``, and
``contract.json``), and MLflow calls :func:`_load_pyfunc` of this installed module on it. So
loading a logged model never unpickles an object, and its config may only build ecgx classes
(:func:`ecgx.deploy.contract.check_targets`). Everything between the raw record and the network
is :class:`ecgx.commands.predict.RunPipeline`, so it predicts what ``ecgx predict`` predicts.
"""

from __future__ import annotations

import functools
import logging
import shutil
import tempfile
import time
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from ecgx.deploy.contract import Contract, check_targets
from ecgx.errors import ConfigValueError, MissingPathError
from ecgx.formats.record import LEADS, Record, RecordError

log = logging.getLogger(__name__)

ARTIFACT_PATH = "model"  # runs:/<run id>/model
DATA_DIR = "ecgx"  # <model>/data/ecgx/{weights.pt, contract.json}
WEIGHTS = "weights.pt"
CONTRACT = "contract.json"
# What a checkpoint holds that predicting needs: not the optimiser state (it doubles the size).
KEPT_KEYS = ("state_dict", "ECGDataModule", "ecgx")
# The packages the pyfunc imports when it loads (pinned to the versions that logged it).
REQUIREMENTS = ("torch", "lightning", "hydra-core", "omegaconf", "numpy", "scipy", "pandas",
                "mlflow", "wfdb", "torchmetrics", "captum", "filelock")  # fmt: skip


# -- loading ------------------------------------------------------------------------------------
class EcgxPyfunc:
    """A logged ecgx model: ``predict({"signal": (n, leads, samples)}, params)``."""

    def __init__(self, folder: str | Path) -> None:
        from ecgx.commands.predict import RunPipeline
        from ecgx.tracking.runs import _config_from_text, load_checkpoint

        folder = Path(folder)
        if not (folder / WEIGHTS).is_file() or not (folder / CONTRACT).is_file():
            raise MissingPathError(f"{folder}: not an ecgx model ({WEIGHTS}, {CONTRACT} needed)")
        self.contract = Contract.read(folder / CONTRACT)
        checkpoint = load_checkpoint(folder / WEIGHTS)
        run_cfg = _config_from_text((checkpoint.get("ecgx") or {}).get("config") or "{}")
        # What RunPipeline instantiates (the optimiser and scheduler it never builds).
        for key in ("data.transform", "data.dataset", "model", "module.test_windows"):
            check_targets(OmegaConf.select(run_cfg, key), f"{folder / WEIGHTS}: config {key}")
        self.run_cfg = run_cfg
        self.pipeline = RunPipeline(run_cfg, checkpoint, self.contract.fs)
        self.thresholds = self.contract.thresholds or [0.5] * len(self.contract.class_names)

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """Probabilities and labels, one row per record, as ``ecgx predict``'s columns.

        ``model_input``: ``{"signal": float (n, leads, samples) mV}`` (or the array alone), and
        ``age`` (years) and ``sex`` (0 male, 1 female; NaN unknown) per record where the model
        takes demographics. ``params``: ``fs`` (Hz) and ``leads`` (names, in the array's order),
        by default the contract's.
        """
        params = dict(params or {})
        signal, age, sex = _arrays(model_input)
        fs = float(params.get("fs") or self.contract.fs or 0)
        leads = [str(v) for v in (params.get("leads") or self.contract.input_leads)]
        self._check(signal, fs, leads)
        rows = []
        for i, x in enumerate(signal):
            full = np.zeros((len(LEADS), x.shape[-1]), np.float32)
            for name, lead in zip(leads, x):  # leads the model never reads stay zero
                full[LEADS.index(name)] = lead
            record = Record(f"input[{i}]", full, fs, LEADS,
                            age=None if age is None or np.isnan(age[i]) else float(age[i]),
                            sex=None if sex is None or np.isnan(sex[i]) else int(sex[i]))  # fmt: skip
            x_in, _, _ = self.pipeline.inputs(record)
            probs = self.pipeline.outputs(x_in, self.pipeline.extras(record))
            rows.append(self.pipeline.columns(probs, self.thresholds))
        return pd.DataFrame(rows)

    def _check(self, signal: np.ndarray, fs: float, leads: list[str]) -> None:
        """Refuse an input the model was not trained on, naming what differs."""
        expected = self.contract.input_leads
        if signal.ndim != 3:
            raise RecordError(f"input signal: shape {signal.shape}, expected (records, "
                              f"{len(expected)} leads, samples)")  # fmt: skip
        missing = [n for n in expected if n not in leads]
        unknown = [n for n in leads if n not in expected]
        if missing or unknown:
            said = [f"missing leads {missing}" if missing else "",
                    f"leads the model does not take {unknown}" if unknown else ""]  # fmt: skip
            raise RecordError(f"input leads {leads}: {', '.join(s for s in said if s)}; the "
                              f"model takes {expected} in this order")  # fmt: skip
        if leads != expected:
            raise RecordError(f"input lead order {leads} does not match the model's {expected}: "
                              "reorder the array's rows")  # fmt: skip
        if signal.shape[1] != len(leads):
            raise RecordError(f"input signal: {signal.shape[1]} rows for {len(leads)} leads "
                              f"{leads}")  # fmt: skip
        want = self.contract.fs
        if not fs:
            raise RecordError("input fs: not given, and the model's run has no single rate: "
                              "pass params fs=<Hz>")  # fmt: skip
        if want and abs(fs - want) > 1e-6 and not self.contract.resamples:
            raise RecordError(f"input fs={fs:g} Hz, but the model was trained at {want:g} Hz and "
                              f"its run does not resample: resample the records to {want:g} Hz")  # fmt: skip


def _arrays(model_input: Any) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    if isinstance(model_input, Mapping):
        if "signal" not in model_input:
            raise RecordError(f"input has no 'signal' (got {sorted(model_input)})")
        signal = model_input["signal"]
        age, sex = model_input.get("age"), model_input.get("sex")
    else:
        signal, age, sex = model_input, None, None
    as_array = lambda v: None if v is None else np.asarray(v, dtype=np.float64).reshape(-1)  # noqa: E731
    return np.asarray(signal, dtype=np.float32), as_array(age), as_array(sex)


def _load_pyfunc(data_path: str, model_config: dict | None = None) -> EcgxPyfunc:
    """MLflow's entry point for a model logged with ``loader_module="ecgx.deploy.pyfunc"``."""
    return EcgxPyfunc(data_path)


def load(model_uri: str, tracking_uri: str | None = None) -> EcgxPyfunc:
    """The ecgx model behind an MLflow model URI (``runs:/<id>/model``, ``models:/<name>@<alias>``
    or a local folder) of the store at ``tracking_uri`` (also its registry), with its pipeline
    reachable (``ecgx predict model=...``)."""
    import mlflow

    scratch = tempfile.mkdtemp(prefix="ecgx-model-")
    try:
        try:
            uri = _registered_source(model_uri, tracking_uri) or model_uri
            local = Path(mlflow.artifacts.download_artifacts(
                uri, dst_path=scratch, tracking_uri=tracking_uri))  # fmt: skip
        except Exception as err:  # MLflow raises several types for an unknown model
            raise MissingPathError(f"model={model_uri}: no such MLflow model ({err})") from err
        return EcgxPyfunc(local / "data" / DATA_DIR)  # reads its files here, keeps none open
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _registered_source(model_uri: str, tracking_uri: str | None) -> str | None:
    """Where ``models:/<name>@<alias>`` or ``models:/<name>/<version>`` of the registry at
    ``tracking_uri`` points (MLflow resolves ``models:/`` against its process-wide registry)."""
    if not model_uri.startswith("models:/") or not tracking_uri:
        return None
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    ref = model_uri.removeprefix("models:/")
    if "@" in ref:
        name, alias = ref.split("@", 1)
        version = client.get_model_version_by_alias(name, alias).version
    else:
        name, _, version = ref.partition("/")
        if not version.isdigit():  # models:/<name>/latest and stages: MLflow's own resolution
            return None
    return client.get_model_version_download_uri(name, version)


# -- logging ------------------------------------------------------------------------------------
def save(folder: Path, checkpoint_path: str | Path, metrics: Mapping[str, float],
         datamodule: Any = None, run_id: str | None = None,
         run_cfg: DictConfig | None = None) -> Contract:  # fmt: skip
    """Write the MLflow model of a run's best checkpoint into ``folder`` (new); ``metrics``
    are the run's test metrics (its tuned thresholds), ``datamodule`` gives the input
    example (one test record); ``run_cfg``, the run's config, saves parsing the checkpoint's
    copy of it again."""
    from ecgx.commands.predict import RunPipeline
    from ecgx.tracking.runs import _config_from_text, load_checkpoint

    checkpoint = load_checkpoint(checkpoint_path)
    text = (checkpoint.get("ecgx") or {}).get("config")
    if not text:
        raise ConfigValueError(f"{checkpoint_path}: holds no run config (not an ecgx checkpoint)")
    run_cfg = run_cfg if run_cfg is not None else _config_from_text(text)
    pipeline = RunPipeline(run_cfg, checkpoint)
    names = pipeline.class_names
    tuned = [metrics.get(f"test/threshold_{n}") for n in names]
    saved = (checkpoint.get("ecgx") or {}).get("thresholds")
    if all(t is not None for t in tuned):  # as `ecgx predict run_id=...` picks them
        thresholds, source = [float(t) for t in tuned], "run"
    elif saved is not None and len(saved) == len(names):
        thresholds, source = [float(t) for t in saved], "checkpoint"
    else:
        thresholds, source = [0.5] * len(names), "0.5"
    contract = Contract.of(pipeline, run_cfg, thresholds, source, run_id)
    example = example_record(datamodule, contract) if datamodule is not None else None

    scratch = Path(tempfile.mkdtemp(prefix="ecgx-model-"))
    try:
        _save(folder, scratch / DATA_DIR, checkpoint, contract, pipeline, example)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return contract


def _save(folder: Path, data: Path, checkpoint: dict, contract: Contract, pipeline: Any,
          example: np.ndarray | None) -> None:  # fmt: skip
    import mlflow.pyfunc
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

    names, thresholds = contract.class_names, contract.thresholds or []
    data.mkdir()
    torch.save({k: checkpoint[k] for k in KEPT_KEYS if k in checkpoint}, data / WEIGHTS)
    contract.write(data / CONTRACT)

    # (records, leads, samples): the lead axis left open so that a record missing a lead
    # reaches EcgxPyfunc._check, which names the lead (MLflow would only name the shape); the
    # leads themselves are the ``leads`` param's default.
    inputs = [TensorSpec(np.dtype(np.float32), (-1, -1, -1), "signal")]
    if contract.extra_inputs:  # demographics: per record, NaN where unknown
        inputs += [TensorSpec(np.dtype(np.float64), (-1,), "age"),
                   TensorSpec(np.dtype(np.float64), (-1,), "sex")]  # fmt: skip
    out_cols = list(pipeline.columns(np.zeros(len(names)), thresholds))
    outputs = Schema([ColSpec("double" if c.startswith(("prob_", "pred_")) else "long", c)
                      for c in out_cols])  # fmt: skip
    params = ParamSchema([ParamSpec("fs", "double", float(contract.fs or 0.0)),
                          ParamSpec("leads", "string", contract.input_leads, (-1,))])  # fmt: skip
    signature = ModelSignature(Schema(inputs), outputs, params)
    input_example = None
    if example is not None:
        input_example = {"signal": example[None].astype(np.float32)}
        if contract.extra_inputs:
            input_example.update({"age": np.array([np.nan]), "sex": np.array([np.nan])})
        # Explicit params: MLflow writes them with the example, for `mlflow models serve`.
        input_example = (input_example, {"fs": float(contract.fs or 0.0),
                                         "leads": contract.input_leads})  # fmt: skip
    mlflow.pyfunc.save_model(
        str(folder),
        loader_module=__name__,
        data_path=str(data),
        signature=signature,
        input_example=input_example,
        # Listed, not inferred: inferring loads the model in a subprocess (seconds per run).
        pip_requirements=list(_requirements()),
        metadata={
            "ecgx_contract": CONTRACT,
            "task": contract.task,
            "class_names": names,
            "fs": contract.fs,
        },  # fmt: skip
    )


@functools.cache  # reading package metadata costs ~0.1 s: once per process
def _requirements() -> list[str]:
    out = []
    for name in REQUIREMENTS:
        try:
            out.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            out.append(name)
    return out


def example_record(datamodule: Any, contract: Contract) -> np.ndarray | None:
    """One test record as a caller would send it (the contract's leads, at its rate, mV)."""
    from ecgx.formats.record import canonical_record
    from ecgx.transforms.signal import Resample

    cache = datamodule.cache
    rows = datamodule.indices.get("test")
    if cache is None or rows is None or not len(rows):
        return None
    try:
        record = canonical_record(datamodule.dataset.read(cache.meta.iloc[int(rows[0])].to_dict()))
    except Exception as err:  # a reader that cannot reread from the cache's metadata
        log.warning("no input example for the logged model: %s", err)
        return None
    x, fs = record.signal, record.fs
    if contract.fs and fs != contract.fs:
        x, fs = Resample(contract.fs)(x, fs)
    keep = [LEADS.index(n) for n in contract.input_leads]
    return np.asarray(x, dtype=np.float32)[keep]


def log_model(client: Any, run_id: str, checkpoint_path: str | Path,
              metrics: Mapping[str, float], datamodule: Any = None,
              run_cfg: DictConfig | None = None) -> tuple[Contract, float]:  # fmt: skip
    """Log the run's pyfunc model under ``runs:/<run_id>/model``; (its contract, seconds)."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / ARTIFACT_PATH
        contract = save(folder, checkpoint_path, metrics, datamodule, run_id, run_cfg)
        client.log_artifacts(run_id, str(folder), ARTIFACT_PATH)
    return contract, time.perf_counter() - start


# -- a run's pipeline and contract, from any of the ways a command names a run ----------------
def pipeline_and_contract(cfg: Any, command: str) -> tuple[Any, Contract]:
    """The RunPipeline and contract of ``model_uri`` (a logged model) or of ``run_id`` /
    ``checkpoint`` (+ ``config``), thresholds chosen as ``ecgx predict`` chooses them."""
    from ecgx.commands.predict import RunPipeline, _thresholds
    from ecgx.tracking.runs import load_checkpoint, load_run

    if cfg.get("model_uri"):
        logged = load(str(cfg.model_uri), cfg.get("tracking_uri"))
        return logged.pipeline, logged.contract
    run_cfg, ckpt_path = load_run(cfg, command)
    pipeline = RunPipeline(run_cfg, load_checkpoint(ckpt_path))
    thresholds, source = _thresholds(cfg, pipeline.class_names, pipeline.thresholds)
    contract = Contract.of(pipeline, run_cfg, thresholds, source, cfg.get("run_id"))
    return pipeline, contract


def example_input(cfg: Any, pipeline: Any, contract: Contract) -> np.ndarray:
    """An input for tracing an export: the logged model's input example (a real test record)
    through :func:`ecgx.deploy.export.export_input`, else seeded random values of the model's
    input shape."""
    from ecgx.deploy.export import export_input, folded

    uri = cfg.get("model_uri") or (f"runs:/{cfg.run_id}/{ARTIFACT_PATH}" if cfg.get("run_id")
                                   else None)  # fmt: skip
    if uri:
        import mlflow
        from mlflow.models import Model

        scratch = tempfile.mkdtemp(prefix="ecgx-model-")
        try:
            uri = _registered_source(uri, cfg.get("tracking_uri")) or uri
            local = mlflow.artifacts.download_artifacts(
                uri, dst_path=scratch, tracking_uri=cfg.get("tracking_uri"))  # fmt: skip
            example = Model.load(local).load_input_example(local)
        except Exception as err:  # noqa: BLE001 - a run without a logged model: random input
            log.info("no logged input example (%s): tracing on random values", err)
            example = None
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        if isinstance(example, tuple):  # (data, params)
            example = example[0]
        if isinstance(example, Mapping) and "signal" in example:
            signal = np.asarray(example["signal"], dtype=np.float32)[0]
            full = np.zeros((len(LEADS), signal.shape[-1]), np.float32)
            for name, lead in zip(contract.input_leads, signal):
                full[LEADS.index(name)] = lead
            record = Record("example", full, float(contract.fs or 0), LEADS)
            return export_input(pipeline, record)
    _, leads, _ = folded(pipeline)
    shape = getattr(pipeline.net, "input_shape", None)
    length = int(shape[-1]) if shape else 1000
    return np.random.default_rng(0).normal(0, 0.2, (len(leads), length)).astype(np.float32)
