"""``ecgx models``: every model of ``conf/model/`` with its cost at the seed configuration."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf
from torch.utils.flop_counter import FlopCounterMode

from ecgx.models.base import ECGModel, count_parameters
from ecgx.paths import config_dir


@dataclass
class ModelCost:
    name: str
    target: str
    input_shape: tuple[int, int]
    num_classes: int
    parameters: int
    flops: int  # per sample, forward, at input_shape (torch's flop counter: 2 per MAC)
    checkpoint_mb: float  # float32 state dict, serialised


def _is_neural(path: Path) -> bool:
    return issubclass(get_class(OmegaConf.load(path)._target_), ECGModel)


def model_names() -> list[str]:
    """The torch models of ``conf/model`` (the classical baselines are listed apart)."""
    return sorted(p.stem for p in (config_dir() / "model").glob("*.yaml") if _is_neural(p))


def classical_names() -> list[str]:
    return sorted(p.stem for p in (config_dir() / "model").glob("*.yaml") if not _is_neural(p))


def build(
    name: str, num_classes: int | None = None, in_channels: int | None = None, **overrides: object
) -> ECGModel:
    """The model of ``conf/model/<name>.yaml`` at its seed configuration (or as given)."""
    node = OmegaConf.load(config_dir() / "model" / f"{name}.yaml")
    cls = get_class(node._target_)
    return instantiate(
        node,
        in_channels=in_channels or cls.input_shape[0],
        num_classes=num_classes or cls.seed_num_classes,
        **overrides,
    )


def cost(name: str) -> ModelCost:
    model = build(name).eval()
    leads, samples = model.input_shape
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, leads, samples))
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return ModelCost(
        name=name,
        target=f"{type(model).__module__}.{type(model).__name__}",
        input_shape=(leads, samples),
        num_classes=model.seed_num_classes,
        parameters=count_parameters(model),
        flops=int(counter.get_total_flops()),
        checkpoint_mb=buffer.getbuffer().nbytes / 2**20,
    )


def table(names: list[str] | None = None) -> str:
    rows = [cost(n) for n in (names or model_names())]
    header = f"{'model':<16} {'input':>10} {'classes':>7} {'parameters':>12} {'GFLOPs':>8} {'ckpt MB':>8}  class"
    lines = [header, "-" * len(header)]
    for r in rows:
        shape = f"{r.input_shape[0]}x{r.input_shape[1]}"
        lines.append(f"{r.name:<16} {shape:>10} {r.num_classes:>7} {r.parameters:>12,} "
                     f"{r.flops / 1e9:>8.3f} {r.checkpoint_mb:>8.1f}  {r.target}")  # fmt: skip
    if names is None and classical_names():
        lines.append(f"\nclassical baselines (scikit-learn on 636 expert features, no FLOPs): "
                     f"{', '.join(classical_names())}")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="ecgx models", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"models (default: all in {Path('conf/model')})")
    args = parser.parse_args(argv)
    print(table(args.names or None))
