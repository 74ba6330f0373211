"""``ecgx register``: a run's logged model as a version of a registered model, with an alias
(conf/register.yaml); the work is :mod:`ecgx.deploy.registry`'s."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from ecgx.deploy.registry import register_run


def register(cfg: DictConfig) -> Any:
    return register_run(cfg)
