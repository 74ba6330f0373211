"""A finished training run, rebuilt: its config, checkpoint, data (with the fitted normalisation
of training time) and model. Shared by ``ecgx explain``, ``ecgx eval`` and ``ecgx predict``."""

from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ecgx.errors import ConfigValueError, MissingPathError

log = logging.getLogger(__name__)


# Modules that moved when the package layout came to mirror the config groups: a run logged
# before the move names the old ``_target_`` paths in its config.yaml, and must still rebuild.
MOVED_MODULES = {
    "ecgx.module.": "ecgx.training.module.",
    "ecgx.data.transforms.": "ecgx.transforms.signal.",
    "ecgx.data.chart.": "ecgx.transforms.chart.",
    "ecgx.data.splits.": "ecgx.splits.splitters.",
    **{f"ecgx.data.{name}.": f"ecgx.datasets.{name}."
       for name in ("ptbxl", "cinc", "cpsc2018", "chapman", "sph")},
}  # fmt: skip


def load_config(path: str | Path) -> DictConfig:
    """A run's logged ``config.yaml``, its ``_target_`` paths brought up to the current layout."""
    return _config_from_text(Path(path).read_text())


def _config_from_text(text: str) -> DictConfig:
    for old, new in MOVED_MODULES.items():
        text = re.sub(rf"(_target_: *){re.escape(old)}", rf"\g<1>{new}", text)
    cfg = OmegaConf.create(text)
    assert isinstance(cfg, DictConfig)
    return cfg


def load_run(cfg: DictConfig, command: str = "explain") -> tuple[DictConfig, Path]:
    """The training config and checkpoint of ``run_id`` (MLflow) or ``checkpoint`` + ``config``."""
    if cfg.get("run_id"):
        from mlflow.tracking import MlflowClient

        from ecgx.tracking.mlflow_run import check_tracking_uri

        check_tracking_uri(cfg.tracking_uri)
        client = MlflowClient(cfg.tracking_uri)
        try:
            local = client.download_artifacts(str(cfg.run_id), "config.yaml", tempfile.mkdtemp())
        except Exception as err:  # MLflow raises several types for an unknown run
            raise MissingPathError(f"run_id={cfg.run_id}: no config.yaml in that run") from err
        return load_config(local), resolve_checkpoint(str(cfg.run_id), cfg.tracking_uri)
    if cfg.get("checkpoint") and cfg.get("config"):
        config = Path(str(cfg.config)).expanduser()
        if not config.is_file():
            raise MissingPathError(f"config={config}: not a file")
        return load_config(config), resolve_checkpoint(str(cfg.checkpoint), cfg.tracking_uri)
    if cfg.get("checkpoint"):
        # A bare checkpoint: ecgx train saves the run's config in every checkpoint.
        path = resolve_checkpoint(str(cfg.checkpoint), cfg.tracking_uri)
        text = (load_checkpoint(path).get("ecgx") or {}).get("config")
        if not text:
            raise ConfigValueError(
                f"checkpoint={path} holds no run config (saved before ecgx kept it there): "
                "give config=<the run's config.yaml> too"
            )
        return _config_from_text(text), path
    raise ConfigValueError(
        f"ecgx {command} needs run_id=<MLflow run> or checkpoint=[... config=...]"
    )


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A Lightning checkpoint on CPU (tensors and plain containers only)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def datamodule_state(checkpoint: dict[str, Any]) -> dict | None:
    """The ECGDataModule state saved with the weights: class names and fitted normalisation."""
    # Lightning stores a DataModule's state_dict under its class name.
    return checkpoint.get("ECGDataModule")


def build_net(
    run_cfg: DictConfig, checkpoint: dict[str, Any], in_channels: int, num_classes: int
) -> nn.Module:
    """The run's model with the checkpoint's weights, in eval mode."""
    net = instantiate(run_cfg.model, in_channels=in_channels, num_classes=num_classes)
    weights = {k.removeprefix("net."): v for k, v in checkpoint["state_dict"].items()
               if k.startswith("net.")}  # fmt: skip
    # Weights saved under torch.compile carry its wrapper's prefix; the eager model has none.
    net.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in weights.items()})
    return net.eval()


def rebuild(
    run_cfg: DictConfig,
    checkpoint: dict[str, Any],
    split: Callable[..., dict] | None = None,
    stage: str = "test",
) -> tuple[Any, nn.Module]:
    """The run's datamodule (set up, normalisation as fitted at training time) and its net.

    ``split`` replaces the run's split callable before setup (e.g. every record in one part,
    for a dataset whose metadata the run's split cannot read). ConfigValueError listing both
    when the data's class names are not the run's, in the same order.
    """
    datamodule = instantiate(run_cfg.data)
    if split is not None:
        datamodule.split = split
    state = datamodule_state(checkpoint)
    if state is not None:  # the normalisation fitted at training time, not refitted
        datamodule.load_state_dict(state)
    datamodule.prepare_data()
    datamodule.setup(stage)
    trained = list((state or {}).get("class_names") or [])
    if trained and list(datamodule.class_names) != trained:
        # Checked before the weights load: a size mismatch there would not say why.
        raise ConfigValueError(
            f"the data's classes differ from the run's (same names, same order needed):\n"
            f"  run:  {trained}\n  data: {list(datamodule.class_names)}"
        )
    net = build_net(run_cfg, checkpoint, datamodule.num_leads, datamodule.num_classes)
    datamodule.add_extra_inputs(net)
    return datamodule, net


def output_dir(prefix: str) -> Path:
    """The running Hydra job's output folder, or a fresh temporary one outside a job."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf.errors import MissingMandatoryValue

    try:
        return Path(HydraConfig.get().runtime.output_dir)
    except (ValueError, MissingMandatoryValue):  # not inside a Hydra job (e.g. a composed cfg)
        return Path(tempfile.mkdtemp(prefix=f"ecgx-{prefix}-"))


def logged_thresholds(
    tracking_uri: str, run_id: str | None, class_names: list[str]
) -> list[float] | None:
    """The per-class thresholds a run tuned on its validation split (its ``test/threshold_<c>``
    metrics), or None when the run has not logged one for every class."""
    if not run_id:
        return None
    from mlflow.tracking import MlflowClient

    metrics = MlflowClient(tracking_uri).get_run(str(run_id)).data.metrics
    keys = [f"test/threshold_{name}" for name in class_names]
    if not all(k in metrics for k in keys):
        return None
    return [float(metrics[k]) for k in keys]


def resolve_checkpoint(ref: str, tracking_uri: str) -> Path:
    """A checkpoint file, or the best checkpoint logged by an MLflow run: its run id, or
    ``run:<experiment name>/<run name>`` for the newest FINISHED run of that name (how a study's
    later files name the pretraining run an earlier file made, experiments/fm_protocol)."""
    if Path(ref).expanduser().is_file():
        return Path(ref).expanduser()
    if ref.startswith("run:"):
        ref = _run_by_name(ref, tracking_uri)
    if re.fullmatch(r"[0-9a-f]{32}", ref):
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri)
        files = [
            a.path for a in client.list_artifacts(ref, "checkpoints") if a.path.endswith(".ckpt")
        ]
        if files:
            return Path(client.download_artifacts(ref, files[0], tempfile.mkdtemp()))
        raise MissingPathError(f"init_from={ref}: MLflow run has no checkpoints/*.ckpt")
    raise MissingPathError(f"init_from={ref}: neither a checkpoint file nor an MLflow run id")


def _run_by_name(ref: str, tracking_uri: str) -> str:
    from mlflow.tracking import MlflowClient

    experiment, sep, name = ref.removeprefix("run:").partition("/")
    if not sep or not experiment or not name:
        raise ConfigValueError(f"init_from={ref}: expected run:<experiment name>/<run name>")
    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    runs = [] if found is None else client.search_runs(
        [found.experiment_id],
        f"attributes.run_name = '{name}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"], max_results=1)  # fmt: skip
    if not runs:
        raise MissingPathError(f"init_from={ref}: no FINISHED run named {name!r} in MLflow "
                               f"experiment {experiment!r} at {tracking_uri}")  # fmt: skip
    return runs[0].info.run_id
