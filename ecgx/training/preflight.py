"""Checks a training config passes before any data is read: keys an experiment requires, a
strategy its launcher can host, folders it writes to, the tracking server it logs to."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ecgx.errors import ConfigValueError, UnwritablePathError
from ecgx.tracking.mlflow_run import check_tracking_uri


def preflight(cfg: DictConfig) -> None:
    """Every check, cheapest first: a wrong key or an unreachable server is reported in seconds."""
    refuse_ddp_in_local_multirun(cfg)
    check_required(cfg)
    check_pairs(cfg)
    check_writable_paths(cfg)
    if enabled(cfg.get("logger")):
        check_tracking_uri(cfg.tracking_uri)


def enabled(node: Any) -> bool:
    """A group switched on (``logger: none`` and ``explainer: none`` hold no ``_target_``)."""
    return node is not None and "_target_" in node


def check_required(cfg: DictConfig) -> None:
    """Keys an experiment file lists under ``required`` must be set (not null).

    A file cannot make a key mandatory with ``???``: OmegaConf keeps train.yaml's ``null`` when
    a missing value is merged over it, so a fine-tune would silently start from random weights.
    """
    unset = [str(k) for k in cfg.get("required") or [] if OmegaConf.select(cfg, str(k)) is None]
    if unset:
        raise ConfigValueError(
            f"{', '.join(unset)}: this experiment requires a value; give it on the command line "
            f"({' '.join(f'{k}=...' for k in unset)})"
        )


def check_pairs(cfg: DictConfig) -> None:
    """``data.pairs=patient`` reads a second record per record; only contrastive pretraining
    uses it, so anywhere else it would double the reading for nothing."""
    if OmegaConf.select(cfg, "data.pairs") != "patient":
        return
    pretrain = cfg.get("pretrain")
    objective = OmegaConf.select(pretrain, "objective._target_") if enabled(pretrain) else None
    if objective != "ecgx.pretrain.objectives.Contrastive":
        raise ConfigValueError(
            "data.pairs=patient: only contrastive pretraining uses a second record "
            f"(pretrain=contrastive pretrain.objective.views.pairs=patient); this run's "
            f"objective is {objective or 'none (classification)'}"
        )


_LOCAL_LAUNCHERS = ("basic_launcher", "joblib_launcher")


def refuse_ddp_in_local_multirun(cfg: DictConfig, hydra_cfg: Any = None) -> None:
    """A multirun on the basic/joblib launcher cannot host a multi-process strategy: plain ddp
    re-launches the command per rank (extra folders and runs) and ddp/ddp_spawn jobs hang or get
    killed between jobs (lightning-hydra-template #393, #194). Refuse it before any work."""
    from hydra.types import RunMode

    if hydra_cfg is None:
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return
        hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return
    launcher = str(hydra_cfg.launcher.get("_target_", ""))
    if not any(name in launcher for name in _LOCAL_LAUNCHERS):
        return
    trainer = cfg.get("trainer") or {}
    strategy = str(trainer.get("strategy", "auto")).lower()
    devices = trainer.get("devices", 1)
    if isinstance(devices, str) or not hasattr(devices, "__len__"):
        n = int(devices) if str(devices).lstrip("-").isdigit() else 1  # "auto": unknown
    else:
        n = len(devices)  # a list of device indices
    many = n > 1 or n == -1 or int(trainer.get("num_nodes") or 1) > 1
    multi_process = strategy == "auto" or any(k in strategy for k in ("ddp", "fsdp", "deepspeed"))
    if ("ddp" in strategy and "spawn" in strategy) or (many and multi_process):
        raise ConfigValueError(
            f"trainer.strategy={strategy} with trainer.devices={devices} cannot run inside a "
            f"multirun on the {launcher.rsplit('.', 1)[-1]} (processes hang or duplicate runs): "
            "use launcher=submitit_local or launcher=slurm for the sweep, or run a single job "
            "(no -m)"
        )


def check_writable_paths(cfg: DictConfig, keys: tuple[str, ...] = ("cache_dir", "log_dir",
                         "output_dir")) -> None:  # fmt: skip
    """Fail before any data is read when a folder a run writes to cannot be written: creates
    it if absent and a temporary file in it (a read-only mount, a path under a file, a full
    disk all fail here, named)."""
    paths = cfg.get("paths") or {}
    for key in keys:
        value = paths.get(key)
        if not value:
            continue
        folder = Path(str(value)).expanduser()
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".ecgx-write-test-"):
                pass
        except OSError as err:
            reason = err.strerror or type(err).__name__
            raise UnwritablePathError(
                f"paths.{key}={folder}: folder not writable ({reason})"
            ) from None
