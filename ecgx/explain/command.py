"""``ecgx explain``: rebuild a finished run's data and model, explain records, log to the run."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ecgx.errors import ConfigValueError, MissingPathError
from ecgx.explain.run import Explanation, explain_and_log

log = logging.getLogger(__name__)


def load_run(cfg: DictConfig) -> tuple[DictConfig, Path]:
    """The training config and checkpoint of ``run_id`` (MLflow) or ``checkpoint`` + ``config``."""
    from ecgx.train import resolve_checkpoint

    if cfg.get("run_id"):
        from mlflow.tracking import MlflowClient

        from ecgx.tracking.mlflow_run import check_tracking_uri

        check_tracking_uri(cfg.tracking_uri)
        client = MlflowClient(cfg.tracking_uri)
        try:
            local = client.download_artifacts(str(cfg.run_id), "config.yaml", tempfile.mkdtemp())
        except Exception as err:  # MLflow raises several types for an unknown run
            raise MissingPathError(f"run_id={cfg.run_id}: no config.yaml in that run") from err
        return OmegaConf.load(local), resolve_checkpoint(str(cfg.run_id), cfg.tracking_uri)
    if cfg.get("checkpoint") and cfg.get("config"):
        config = Path(str(cfg.config)).expanduser()
        if not config.is_file():
            raise MissingPathError(f"config={config}: not a file")
        return OmegaConf.load(config), resolve_checkpoint(str(cfg.checkpoint), cfg.tracking_uri)
    raise ConfigValueError("ecgx explain needs run_id=<MLflow run> or checkpoint=... config=...")


def _datamodule_state(checkpoint: dict[str, Any]) -> dict | None:
    # Lightning stores a DataModule's state_dict under its class name.
    return checkpoint.get("ECGDataModule")


def _output_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig
    from omegaconf.errors import MissingMandatoryValue

    try:
        return Path(HydraConfig.get().runtime.output_dir)
    except (ValueError, MissingMandatoryValue):  # not inside a Hydra job (e.g. a composed cfg)
        return Path(tempfile.mkdtemp(prefix="ecgx-explain-"))


def explain_run(cfg: DictConfig) -> Explanation:
    run_cfg, ckpt_path = load_run(cfg)
    if cfg.get("data"):
        run_cfg.data = OmegaConf.merge(run_cfg.data, cfg.data)
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    datamodule = instantiate(run_cfg.data)
    state = _datamodule_state(checkpoint)
    if state is not None:  # the normalisation fitted at training time, not refitted
        datamodule.load_state_dict(state)
    datamodule.prepare_data()
    datamodule.setup("test")
    net = instantiate(run_cfg.model, in_channels=datamodule.num_leads,
                      num_classes=datamodule.num_classes)  # fmt: skip
    weights = {k.removeprefix("net."): v for k, v in checkpoint["state_dict"].items()
               if k.startswith("net.")}  # fmt: skip
    net.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in weights.items()})
    client = None
    if cfg.get("run_id"):
        from mlflow.tracking import MlflowClient

        client = MlflowClient(cfg.tracking_uri)
    out_dir = _output_dir() / "explain" / str(cfg.explainer.get("name", "explainer"))
    result = explain_and_log(cfg.explainer, net, datamodule, run_cfg.module.task, client,
                             cfg.get("run_id"), seed=int(cfg.seed), out_dir=out_dir)  # fmt: skip
    print(f"\nExplainer {result.name} on {len(result.record_ids)} records; files in {out_dir}")
    for key, value in sorted(result.metrics.items()):
        print(f"  {key:<40} {value:.4f}")
    if client is not None:
        print(f"Logged to MLflow run {cfg.run_id} under explain/{result.name}/")
    return result
