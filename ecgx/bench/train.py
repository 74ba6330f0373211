"""``ecgx bench suite=train``: how fast every model trains and predicts, against the machine.

For each model at its seed input shape: training steps (forward + the seed task's loss +
backward + Adam) and inference batches per second, the FLOPs per sample that torch's flop
counter sees in one step, and the GFLOP/s that achieves as a fraction of this machine's fp32
matmul peak, measured in the same run (a large fp32 matmul loop). Optional figures:
``torch.compile`` and bf16 autocast (each against the same model's eager fp32 speed) and, on
a GPU, channels-last memory for the 2-D chart models. The seeds' own published speeds are shown
in the notes as orientation only: they were not measured in this run.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ecgx.bench.core import Context, Figure, rates, sync
from ecgx.errors import ConfigValueError
from ecgx.models.catalog import build, classical_names, model_names

SUITE = "train"
PEAK = "matmul fp32"
PEAK_BF16 = "matmul bf16"


@dataclass
class Settings:
    models: list[str]
    batch_size: int
    min_repeat_s: float
    repeats: int
    budget_s: float
    compile: set[str]
    bf16: set[str]
    channels_last: bool
    multiclass: set[str]
    matmul_size: int
    matmul_loops: int
    reference: dict[str, Any]


def settings(cfg: DictConfig, ctx: Context) -> Settings:
    """The suite's config with quick mode applied and every model name checked."""
    quick = cfg.get("quick") or {}
    pick = (lambda key: quick.get(key, cfg[key])) if ctx.quick else (lambda key: cfg[key])
    known = model_names()
    models = _names(cfg.models, "train.models", known) if cfg.models is not None else None
    if models is None:
        models = _names(quick["models"], "train.quick.models", known) if ctx.quick else known
    return Settings(
        models=models,
        batch_size=_positive(pick("batch_size"), "train.batch_size"),
        min_repeat_s=float(pick("min_repeat_s")),
        repeats=ctx.repeats,
        budget_s=float(pick("budget_s")),
        compile=_subset(cfg.compile, "train.compile", models, known),
        bf16=_subset(cfg.bf16, "train.bf16", models, known),
        channels_last=bool(cfg.channels_last),
        multiclass=set(_names(cfg.multiclass, "train.multiclass", known)),
        matmul_size=_positive(pick("matmul_size"), "train.matmul_size"),
        matmul_loops=_positive(pick("matmul_loops"), "train.matmul_loops"),
        reference=OmegaConf.to_container(cfg.reference) if cfg.reference else {},
    )


def _positive(value: Any, key: str) -> int:
    if not isinstance(value, int) or value < 1:
        raise ConfigValueError(f"{key}={value!r}: must be a positive integer")
    return value


def _names(value: Any, key: str, known: list[str]) -> list[str]:
    names = [str(value)] if isinstance(value, str) else [str(v) for v in value or []]
    for name in names:
        if name in classical_names():
            raise ConfigValueError(f"{key}: {name!r} is a scikit-learn baseline, not a torch "
                                   f"model; it has no training step to time")  # fmt: skip
        if name not in known:
            raise ConfigValueError(f"{key}: unknown model {name!r}; choose from {known}")
    return names


def _subset(value: Any, key: str, models: list[str], known: list[str]) -> set[str]:
    """``true`` (every selected model), ``false`` / null (none) or a list of model names."""
    if isinstance(value, bool) or value is None:
        return set(models) if value else set()
    if not isinstance(value, list | ListConfig | str):
        raise ConfigValueError(f"{key}={value!r}: use true, false or a list of model names")
    return set(_names(value, key, known))


# --------------------------------------------------------------------------- measuring


def timed(call: Callable[[], None], repeats: int, budget_s: float, min_repeat_s: float = 0.0,
          warmup: Callable[[], None] | None = None) -> list[float]:  # fmt: skip
    """Seconds per ``call()`` of each timed repeat, after one unmeasured warm-up call.

    A repeat runs ``call`` as many times as it takes to last ``min_repeat_s`` (so millisecond
    steps are not timer noise); repeating stops early, after at least one repeat, once another
    would take the total past ``budget_s`` (so the largest models cost a few steps, not minutes
    each). ``warmup`` replaces the warm-up call where a cheaper one primes the same code.
    """
    (warmup or call)()
    t0 = time.perf_counter()
    call()
    first = time.perf_counter() - t0
    per_repeat = max(1, math.ceil(min_repeat_s / first)) if first > 0 else 1
    times = [first] if per_repeat == 1 else []
    while len(times) < repeats and not (times and sum(times) + times[-1] > budget_s):
        t0 = time.perf_counter()
        for _ in range(per_repeat):
            call()
        times.append((time.perf_counter() - t0) / per_repeat)
    return times


def matmul_figure(size: int, loops: int, repeats: int, device: str, dtype: torch.dtype,
                  name: str) -> Figure:  # fmt: skip
    """GFLOP/s of a square matmul loop: the practical peak the models are measured against."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=gen).to(device, dtype)
    b = torch.randn(size, size, generator=gen).to(device, dtype)

    def loop() -> None:
        for _ in range(loops):
            torch.mm(a, b)
        sync(device)

    seconds = timed(loop, repeats, budget_s=float("inf"))
    return Figure(
        SUITE, name, "GFLOP/s", rates(loops * 2 * size**3 / 1e9, seconds),
        note=f"{size}×{size} {str(dtype).removeprefix('torch.')} matmul, {loops} per repeat, "
        f"{torch.get_num_threads()} threads; the peak each model's GFLOP/s is divided by",
        params={"size": size, "loops": loops},
    )  # fmt: skip


@dataclass
class _Batch:
    x: torch.Tensor
    target: torch.Tensor
    loss: nn.Module


def _batch(model: nn.Module, batch_size: int, multiclass: bool, device: str) -> _Batch:
    gen = torch.Generator().manual_seed(0)
    leads, samples = model.input_shape
    classes = model.seed_num_classes
    x = torch.randn(batch_size, leads, samples, generator=gen)
    if multiclass:
        target = torch.randint(0, classes, (batch_size,), generator=gen)
        loss: nn.Module = nn.CrossEntropyLoss()
    else:
        target = (torch.rand(batch_size, classes, generator=gen) > 0.5).float()
        loss = nn.BCEWithLogitsLoss()
    return _Batch(x.to(device), target.to(device), loss)


def _autocast(device: str, bf16: bool) -> contextlib.AbstractContextManager:
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device, dtype=torch.bfloat16)


def _train_step(model: nn.Module, net: Callable, batch: _Batch, device: str,
                bf16: bool) -> Callable[[], None]:  # fmt: skip
    """One optimisation step of ``net`` (the model, or its compiled form) on ``batch``."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> None:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        with _autocast(device, bf16):
            loss = batch.loss(net(batch.x), batch.target)
        loss.backward()
        optimizer.step()
        sync(device)

    return step


def _inference(model: nn.Module, net: Callable, batch: _Batch, device: str,
               bf16: bool) -> Callable[[], None]:  # fmt: skip
    def predict() -> None:
        model.eval()
        with torch.inference_mode(), _autocast(device, bf16):
            net(batch.x)
        sync(device)

    return predict


def count_flops(model: nn.Module, batch: _Batch) -> tuple[float, float]:
    """(forward, training step) FLOPs per sample: the forward counted by torch's flop counter on
    2 records in training mode (BatchNorm needs more than one), the step as 3 × that (the
    backward computes a gradient for the input and one for the weights, each as costly as the
    forward). The counter's own backward figure is not used: it counts grouped and depthwise
    convolutions' backward as if dense (8× the forward for ConvNeXt, 40× for EfficientNet)."""
    model.train()
    with torch.no_grad(), FlopCounterMode(display=False) as forward:
        model(batch.x[:2])
    fwd = forward.get_total_flops() / 2
    return fwd, 3 * fwd


@contextlib.contextmanager
def _seeded() -> Iterator[None]:
    state = torch.random.get_rng_state()
    torch.manual_seed(0)
    try:
        yield
    finally:
        torch.random.set_rng_state(state)


def _bf16_drift(model: nn.Module, batch: _Batch, multiclass: bool, device: str) -> float:
    """Largest change of an output probability under bf16 autocast (eval mode, same batch)."""
    model.eval()
    with torch.inference_mode():
        full = model(batch.x).float()
        with _autocast(device, True):
            half = model(batch.x).float()
    prob = (lambda z: z.softmax(-1)) if multiclass else torch.sigmoid
    return float((prob(full) - prob(half)).abs().max())


def model_figures(name: str, s: Settings, device: str) -> list[Figure]:
    """Eager fp32 training / inference figures of one model, plus the optional variants."""
    with _seeded():
        model = build(name).to(device)
    multiclass = name in s.multiclass
    batch = _batch(model, s.batch_size, multiclass, device)
    fwd_flops, train_flops = count_flops(model, batch)

    def measure(make: Callable[..., Callable[[], None]], net: Callable, bf16: bool) -> list[float]:
        call = make(model, net, batch, device, bf16)
        return timed(call, s.repeats, s.budget_s, s.min_repeat_s)

    ref = s.reference.get(name) or {}
    where = f"batch {s.batch_size}, {name} at {tuple(model.input_shape)}"
    out = []
    for mode, make, flops in (("train", _train_step, train_flops),
                              ("inference", _inference, fwd_flops)):  # fmt: skip
        seconds = measure(make, model, False)
        published = ref.get(mode)
        note = f"{flops / 1e9:.3g} GFLOP/sample ({'3 × forward' if mode == 'train' else 'forward'}); {len(seconds)} repeat(s) of {where}"  # noqa: E501
        if published:
            note += f"; published, not measured here: {published} samples/s ({ref.get('source')})"
        params = {"model": name, "flops_per_sample": flops, "batch_size": s.batch_size}
        out.append(Figure(SUITE, f"{name} {mode}", "samples/s", rates(s.batch_size, seconds), note=note,
                          params=params))  # fmt: skip
        out.append(Figure(SUITE, f"{name} {mode} GFLOP/s", "GFLOP/s",
                          [r * flops / 1e9 for r in rates(s.batch_size, seconds)], ratio_to=PEAK,
                          params=params))  # fmt: skip
    if name in s.bf16:
        drift = _bf16_drift(model, batch, multiclass, device)
        for mode, make in (("train", _train_step), ("inference", _inference)):
            seconds = measure(make, model, True)
            out.append(Figure(SUITE, f"{name} {mode} bf16", "samples/s", rates(s.batch_size, seconds),
                              ratio_to=f"{name} {mode}", params={"model": name},
                              note=f"bf16 autocast; outputs vs fp32: max |Δ probability| "
                                   f"{drift:.2g}"))  # fmt: skip
    if name in s.compile:
        out += _compiled_figures(name, model, s, measure)
    if device == "cuda" and s.channels_last and hasattr(model, "to_image"):
        out += _channels_last_figures(name, model, batch, s, device)
    return out


def _compiled_figures(name: str, model: nn.Module, s: Settings, measure: Callable) -> list[Figure]:
    """torch.compile figures; a model inductor cannot compile gets its error as the note."""
    out = []
    for mode, make in (("train", _train_step), ("inference", _inference)):
        figure = Figure(SUITE, f"{name} {mode} compiled", "samples/s", [],
                        ratio_to=f"{name} {mode}", params={"model": name})  # fmt: skip
        torch._dynamo.reset()
        t0 = time.perf_counter()
        try:
            seconds = measure(make, torch.compile(model), False)
        except Exception as err:  # noqa: BLE001 - a compile failure is a result, not a crash
            first = (str(err).splitlines() or [""])[0]
            figure.note = f"torch.compile failed: {type(err).__name__}: {first}"
        else:
            figure.values = rates(s.batch_size, seconds)
            figure.note = (f"torch.compile (inductor); compile, warm-up and timing took "
                           f"{time.perf_counter() - t0:.0f} s")  # fmt: skip
        out.append(figure)
    torch._dynamo.reset()
    return out


def _channels_last_figures(name: str, model: nn.Module, batch: _Batch, s: Settings,
                           device: str) -> list[Figure]:  # fmt: skip
    """2-D chart models with NHWC activations (tensor cores prefer them)."""
    height, width = model.image_size
    image = batch.x.reshape(len(batch.x), -1, height, width)
    nhwc = _Batch(image.contiguous(memory_format=torch.channels_last), batch.target, batch.loss)
    model.to(memory_format=torch.channels_last)
    out = []
    for mode, make in (("train", _train_step), ("inference", _inference)):
        for bf16 in (False, True):
            call = make(model, model, nhwc, device, bf16)
            seconds = timed(call, s.repeats, s.budget_s, s.min_repeat_s)
            label = f"{name} {mode} channels-last" + (" bf16" if bf16 else "")
            out.append(Figure(SUITE, label, "samples/s", rates(s.batch_size, seconds),
                              ratio_to=f"{name} {mode}", params={"model": name}))  # fmt: skip
    model.to(memory_format=torch.contiguous_format)
    return out


def run(cfg: DictConfig, ctx: Context) -> list[Figure]:
    s = settings(cfg, ctx)
    dtypes = {PEAK: torch.float32} | ({PEAK_BF16: torch.bfloat16} if s.bf16 else {})

    def peaks() -> list[Figure]:
        return [matmul_figure(s.matmul_size, s.matmul_loops, s.repeats, ctx.device, dtype, name)
                for name, dtype in dtypes.items()]  # fmt: skip

    figures = peaks()
    for name in s.models:
        t0 = time.perf_counter()
        figures += model_figures(name, s, ctx.device)
        print(f"[bench] train: {name} {time.perf_counter() - t0:.0f} s", flush=True)
    # The peak again at the end, into the same figures: on a shared machine the load moves
    # during a suite of many minutes, and the fractions divide by the peak's median.
    for first, last in zip(figures, peaks() if s.models and not ctx.quick else [], strict=False):
        first.values += last.values
        first.note += "; timed at the start and at the end of the suite"
    return figures
