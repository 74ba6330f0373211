"""``ecgx bench suite=explain``: seconds per record of every explainer against its floor.

A gradient method cannot cost less than the model evaluations it needs: integrated gradients
``n_steps`` forward+backward passes per record, GradientSHAP ``n_samples``, DeepLift two (input
and baseline), DeepLiftSHAP two per background record, Grad-CAM one, occlusion one forward per
occluded window (plus the unoccluded one). The floor of a method is that count × the time of
one forward+backward (or forward, for the forward-only methods) of the same records on the same
model, measured in this run; the method's figure is its ratio to that floor, so what it shows is
the overhead of captum and of ecgx's wrapper beyond the gradients themselves.

The methods run on one mid-sized model (ECGNet by default); those whose rules that model's layers
cannot carry (DeepLift-family on reused ReLU modules, LRP on residual sums, attention on a
model without attention) run on the model ``models`` names for them, each against its own floor.
Batch 1 against batch ``records`` shows whether batching records raises records/s (on a CPU the
methods are compute-bound; on a GPU batching must help).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ecgx.bench.core import Context, Figure, sync
from ecgx.bench.train import timed
from ecgx.errors import ConfigValueError
from ecgx.explain import methods as m
from ecgx.models.base import ECGModel
from ecgx.models.catalog import build, model_names
from ecgx.paths import config_dir

SUITE = "explain"
# Explainer configs that are not an attribution of a batch of records.
_NOT_TIMED = ("none", "tcav", "_settings")


def explainer_names() -> list[str]:
    return sorted(p.stem for p in (config_dir() / "explainer").glob("*.yaml")
                  if p.stem not in _NOT_TIMED)  # fmt: skip


@dataclass
class Settings:
    methods: list[str]
    models: dict[str, str]  # method -> model
    records: int
    method_records: dict[str, int]
    device: str
    batching: list[str]
    batching_records: int
    batching_target: str | None
    target: str | None
    repeats: int
    budget_s: float
    min_repeat_s: float
    options: dict[str, dict[str, Any]]


def settings(cfg: DictConfig, ctx: Context) -> Settings:
    """The suite's config with quick mode applied and every name checked."""
    quick = cfg.get("quick") or {}
    pick = (lambda key: quick.get(key, cfg[key])) if ctx.quick else (lambda key: cfg[key])
    known = explainer_names()
    methods = [str(n) for n in pick("methods")]
    for key, names in (("explain.methods", methods), ("explain.batching", pick("batching"))):
        for name in names:
            if name not in known:
                raise ConfigValueError(f"{key}: unknown explainer {name!r}; choose from {known}")
    model_map = {str(k): str(v) for k, v in cfg.models.items()}
    if ctx.quick:
        model_map.update({str(k): str(v) for k, v in (quick.get("models") or {}).items()})
    for method, model in model_map.items():
        if method != "default" and method not in known:
            raise ConfigValueError(f"explain.models: unknown explainer {method!r}; choose from "
                                   f"{known}")  # fmt: skip
        if model not in model_names():
            raise ConfigValueError(f"explain.models.{method}: unknown model {model!r}; choose "
                                   f"from {model_names()}")  # fmt: skip
    options = OmegaConf.to_container(
        OmegaConf.merge(cfg.options or {}, (quick.get("options") or {}) if ctx.quick else {})
    )
    for name in options:
        if name not in known:
            raise ConfigValueError(f"explain.options: unknown explainer {name!r}")
    records = int(pick("records"))
    if records < 1:
        raise ConfigValueError(f"explain.records={records}: must be at least 1")
    return Settings(
        methods=methods,
        models={n: str(model_map.get(n, model_map["default"])) for n in methods},
        records=records,
        method_records={str(k): int(v) for k, v in (pick("method_records") or {}).items()},
        device=ctx.device,
        batching=[str(n) for n in pick("batching")],
        batching_records=int(pick("batching_records")),
        batching_target=cfg.batching_target_gpu if ctx.device == "cuda" else None,
        target=cfg.target_cpu if ctx.device == "cpu" else None,
        repeats=ctx.repeats,
        budget_s=float(pick("budget_s")),
        min_repeat_s=float(pick("min_repeat_s")),
        options=options,
    )


def build_method(name: str, model: nn.Module, options: dict[str, Any] | None = None,
                 **extra: Any) -> m.Method:  # fmt: skip
    """The method of ``conf/explainer/<name>.yaml`` (with ``options`` merged) on ``model``."""
    node = OmegaConf.load(config_dir() / "explainer" / f"{name}.yaml").method
    node = OmegaConf.merge(node, options or {}, extra)
    return instantiate(node)(model)


def evaluations(method: m.Method, x: torch.Tensor) -> tuple[int, bool]:
    """(model evaluations per record, whether each is a forward+backward) that ``method``
    needs at the very least, from its own settings."""
    leads, samples = x.shape[1], x.shape[-1]
    if isinstance(method, m.IntegratedGradients):
        return method.n_steps, True
    if isinstance(method, m.GradientShap):
        return method.n_samples, True
    if isinstance(method, m.DeepLiftShap):
        return 2 * len(method.background), True  # each record with each baseline, both passed
    if isinstance(method, m.DeepLift | m.GuidedGradCAM):
        return 2, True  # input and baseline / Grad-CAM and guided backprop
    if isinstance(method, m.Occlusion):
        if method.mode == "lead":
            return leads + 1, False  # one per lead, plus the unoccluded output
        positions = math.ceil((samples - method.window) / method.stride) + 1
        return (leads if method.per_lead else 1) * positions + 1, False
    if isinstance(method, m.Attention):
        return 1, False
    # saliency, input × gradient, Grad-CAM, guided backprop, LRP: one pass each way
    return 1, True


def _records(model: nn.Module, n: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, *model.input_shape, generator=gen)


class _UnitCosts:
    """Seconds of one forward, or forward + backward to the input (what a captum gradient costs:
    no parameter gradients), of ``rows`` records on one model; each size measured once."""

    def __init__(self, model: nn.Module, s: Settings) -> None:
        self.model, self.s = model, s
        self.seconds: dict[tuple[int, bool], list[float]] = {}

    def __call__(self, rows: int, backward: bool) -> list[float]:
        if (rows, backward) not in self.seconds:
            x = _records(self.model, rows, seed=2).to(self.s.device)
            target = torch.zeros(rows, 1, dtype=torch.long, device=x.device)

            def forward() -> None:
                with torch.no_grad():
                    self.model(x)
                sync(self.s.device)

            def forward_backward() -> None:
                inputs = x.detach().requires_grad_()
                out = self.model(inputs)
                torch.autograd.grad(out.gather(1, target).sum(), inputs)
                sync(self.s.device)

            fn = forward_backward if backward else forward
            self.seconds[rows, backward] = timed(fn, max(3, self.s.repeats), self.s.budget_s,
                                                 self.s.min_repeat_s)  # fmt: skip
        return self.seconds[rows, backward]

    def figures(self, name: str, rows: int) -> list[Figure]:
        return [
            Figure(SUITE, f"{name} {label}", "s/record", [t / rows for t in self(rows, back)],
                   note=f"batch of {rows} records at {tuple(self.model.input_shape)}, eval mode",
                   params={"model": name})
            for label, back in (("forward", False), ("forward+backward", True))
        ]  # fmt: skip


def _observed_calls(fn: Callable[[], None]) -> list[int]:
    """Rows of every forward call of an ECG model while ``fn`` runs (captum's own batching)."""
    rows: list[int] = []

    def hook(module: nn.Module, args: tuple, _: Any) -> None:
        if isinstance(module, ECGModel) and args and isinstance(args[0], torch.Tensor):
            rows.append(int(args[0].shape[0]))

    handle = nn.modules.module.register_module_forward_hook(hook)
    try:
        fn()
    finally:
        handle.remove()
    return rows


def method_figures(method_name: str, model_name: str, model: nn.Module, x: torch.Tensor,
                   targets: torch.Tensor, units: _UnitCosts, s: Settings) -> list[Figure]:  # fmt: skip
    method = build_method(method_name, model, s.options.get(method_name))
    if method.needs_background:
        method.set_background(_records(model, _background_size(), seed=1).to(s.device))
    n = s.method_records.get(method_name, len(x))
    x, targets = x[:n], targets[:n]
    count, backward = evaluations(method, x)

    def attribute() -> None:
        method.attribute(x, targets)
        sync(s.device)

    method.attribute(x[:1], targets[:1])  # its model check and lazy set-up, not timed
    calls: list[int] = []
    seconds = timed(attribute, s.repeats, s.budget_s, s.min_repeat_s,
                    warmup=lambda: calls.extend(_observed_calls(attribute)))  # fmt: skip
    if not calls:  # e.g. IMLE-Net's attention: forward_with_attention, not the module call
        size = min(method.batch_size, len(x))
        calls = [size] * (len(x) // size) + ([len(x) % size] if len(x) % size else [])
        calls = calls * count
    # The floor: the same model calls, at the same batch sizes, without the method around them.
    sizes = sorted(set(calls))
    floor_s = sum(calls.count(n) * statistics.median(units(n, backward)) for n in sizes)
    kind = "forward+backward" if backward else "forward"
    expected = count * len(x)
    floor = Figure(
        SUITE, f"{method_name} floor", "s/record", [floor_s / len(x)],
        note=f"{count} {kind} per record by its settings; captum ran {len(calls)} model calls of "
        f"{'/'.join(map(str, sizes))} rows ({sum(calls)} rows"
        + ("" if sum(calls) == expected else f", {expected} expected") + f"), each timed alone "
        f"on {model_name}",
        params={"evaluations": count, "calls": len(calls), "rows": sum(calls)},
    )  # fmt: skip
    figure = Figure(
        SUITE, method_name, "s/record", [t / len(x) for t in seconds], ratio_to=floor.name,
        target=s.target, params={"model": model_name, "records": len(x),
                                 "batch_size": method.batch_size},
        note=f"{model_name}, {len(x)} records, {method.batch_size} per call",
    )  # fmt: skip
    out = [floor, figure]
    if method_name in s.batching:
        out += _batching_figures(method, method_name, x, targets, figure, s)
    return out


def _batching_figures(method: m.Method, name: str, x: torch.Tensor, targets: torch.Tensor,
                      batched: Figure, s: Settings) -> list[Figure]:  # fmt: skip
    """records/s with one record per call against ``len(x)`` per call."""
    n = min(s.batching_records, len(x))
    size = method.batch_size
    method.batch_size = 1
    try:
        seconds = timed(lambda: sync(s.device, method.attribute(x[:n], targets[:n])),
                        s.repeats, s.budget_s, s.min_repeat_s,
                        warmup=lambda: method.attribute(x[:1], targets[:1]))  # fmt: skip
    finally:
        method.batch_size = size
    single = Figure(SUITE, f"{name} batch 1", "records/s", [n / t for t in seconds],
                    note=f"{n} records, one per call", params={"records": n})  # fmt: skip
    many = Figure(SUITE, f"{name} batch {min(size, len(x))}", "records/s", [1 / v for v in batched.values],
                  ratio_to=single.name, target=s.batching_target,
                  note=f"the {name} figure as records/s ({len(x)} records, {size} per call)")  # fmt: skip
    return [single, many]


def _background_size() -> int:
    return int(OmegaConf.load(config_dir() / "explainer" / "_settings.yaml").background)


def run(cfg: DictConfig, ctx: Context) -> list[Figure]:
    s = settings(cfg, ctx)
    figures: list[Figure] = []
    by_model: dict[str, list[str]] = {}
    for method, model in s.models.items():
        by_model.setdefault(model, []).append(method)
    for model_name, methods in by_model.items():
        torch.manual_seed(0)
        model = build(model_name).eval().to(s.device)
        x = _records(model, s.records).to(s.device)
        with torch.no_grad():
            targets = model(x).argmax(dim=1)  # the predicted class, as `ecgx explain` does
        units = _UnitCosts(model, s)
        figures += units.figures(model_name, len(x))
        for method in methods:
            figures += method_figures(method, model_name, model, x, targets, units, s)
            print(f"[bench] explain: {method} on {model_name}", flush=True)
    return figures
