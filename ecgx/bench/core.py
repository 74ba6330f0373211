"""Figures, timing and the report every benchmark suite writes into.

A figure keeps every repeat (min / median / max are reported) and, where it has a baseline
measured in the same run, its ratio to that baseline and whether the issue's target is met.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SUITES = ("ingest", "load", "train", "explain", "sweep", "memory", "deploy", "evaluation", "scale")


@dataclass
class Figure:
    """One measured quantity of one suite.

    ``ratio_to`` names the baseline figure of the same suite (its median divides this one's);
    ``target`` is ``">= 5"`` / ``"<= 1.2"``, checked on the ratio when there is one, else on the
    median. ``higher_is_better`` only orders the columns of the table.
    """

    suite: str
    name: str
    unit: str
    values: list[float]
    ratio_to: str | None = None
    ratio: float | None = None
    target: str | None = None
    met: bool | None = None
    note: str = ""
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def median(self) -> float:
        return float(statistics.median(self.values)) if self.values else float("nan")

    @property
    def min(self) -> float:
        return float(min(self.values)) if self.values else float("nan")

    @property
    def max(self) -> float:
        return float(max(self.values)) if self.values else float("nan")

    def check(self) -> None:
        """Fill ``met`` from ``target`` (on the ratio when there is one)."""
        if self.target is None:
            return
        op, _, bound = self.target.partition(" ")
        value = self.ratio if self.ratio_to is not None else self.median
        if value is None or op not in (">=", "<="):
            raise ValueError(f"figure {self.name!r}: target {self.target!r} is not '>= x' / '<= x'")
        self.met = value >= float(bound) if op == ">=" else value <= float(bound)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(min=self.min, median=self.median, max=self.max)
        return out


def repeat(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> list[float]:
    """Seconds of ``fn()`` for each of ``repeats`` calls after ``warmup`` unmeasured ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def rates(count: float, seconds: list[float]) -> list[float]:
    """Items per second of each repeat."""
    return [count / s if s > 0 else float("inf") for s in seconds]


@dataclass
class Context:
    """What every suite gets besides its own config node."""

    quick: bool  # small sizes, 1 repeat: a check that the suite runs (the tests use it)
    repeats: int
    device: str  # "cpu" | "cuda"
    workdir: Path  # scratch space of this run (synthetic sets, caches), removed afterwards
    threads: int


def sync(device: str, *_: Any) -> None:
    """Wait for queued GPU work (timings of CUDA calls end when the work does); extra
    arguments are ignored so a result can be passed through in a lambda."""
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def compose_train(overrides: list[str]) -> Any:
    """``conf/train.yaml`` as ``ecgx train`` composes it, outside a Hydra run."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from ecgx.paths import config_dir

    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return compose("train", overrides=overrides)


def machine_info(device: str = "cpu") -> dict[str, Any]:
    import numpy
    import torch

    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gb": _memory_gb(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "device": device,
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gb() -> float | None:
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
    return round(pages * size / 2**30, 1)


@dataclass
class Report:
    machine: dict[str, Any]
    figures: list[Figure] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # wall time of each suite
    errors: dict[str, str] = field(default_factory=dict)  # suite -> why it did not finish

    def add(self, figures: list[Figure]) -> None:
        by_name = {(f.suite, f.name): f for f in self.figures}
        for fig in figures:
            by_name[(fig.suite, fig.name)] = fig
            if fig.ratio_to is not None and fig.ratio is None:
                base = by_name.get((fig.suite, fig.ratio_to))
                if base is None:
                    raise ValueError(f"figure {fig.name!r}: baseline {fig.ratio_to!r} not measured")
                fig.ratio = fig.median / base.median if base.median else float("inf")
            fig.check()
        self.figures.extend(figures)

    def get(self, suite: str, name: str) -> Figure:
        for fig in self.figures:
            if fig.suite == suite and fig.name == name:
                return fig
        raise KeyError(f"{suite}/{name}")

    def as_dict(self) -> dict[str, Any]:
        return {
            "machine": self.machine,
            "seconds": self.seconds,
            "errors": self.errors,
            "figures": [f.as_dict() for f in self.figures],
        }

    def markdown(self) -> str:
        m = self.machine
        lines = [
            "# ecgx bench",
            "",
            f"Machine: {m.get('cpu')}, {m.get('cores')} cores, {m.get('torch_threads')} torch "
            f"threads, {m.get('memory_gb')} GB; {m.get('gpu') or 'no GPU'}; Python "
            f"{m.get('python')}, torch {m.get('torch')}, numpy {m.get('numpy')}.",
        ]
        for suite in dict.fromkeys(f.suite for f in self.figures):
            lines += ["", f"## {suite}", "", "| figure | median | min | max | unit | ratio | "
                      "target | |", "|---|---:|---:|---:|---|---:|---|---|"]  # fmt: skip
            for f in self.figures:
                if f.suite != suite:
                    continue
                ratio = f"{f.ratio:.2f}× {f.ratio_to}" if f.ratio is not None else ""
                met = {True: "met", False: "**missed**", None: ""}[f.met]
                lines.append(
                    f"| {f.name} | {_num(f.median)} | {_num(f.min)} | {_num(f.max)} | {f.unit} "
                    f"| {ratio} | {f.target or ''} | {met} |"
                )
            notes = [f"- {f.name}: {f.note}" for f in self.figures if f.suite == suite and f.note]
            if notes:
                lines += ["", *notes]
        for suite, why in self.errors.items():
            lines += ["", f"## {suite}: not finished", "", f"    {why}"]
        return "\n".join(lines) + "\n"

    def write(self, folder: Path) -> tuple[Path, Path]:
        folder.mkdir(parents=True, exist_ok=True)
        json_path, md_path = folder / "bench.json", folder / "bench.md"
        json_path.write_text(json.dumps(self.as_dict(), indent=1, default=str))
        md_path.write_text(self.markdown())
        return json_path, md_path

    @classmethod
    def load(cls, path: Path) -> Report:
        data = json.loads(Path(path).read_text())
        report = cls(data["machine"], seconds=data["seconds"], errors=data["errors"])
        keep = {k for k in Figure.__dataclass_fields__}
        report.figures = [
            Figure(**{k: v for k, v in f.items() if k in keep}) for f in data["figures"]
        ]
        return report


def _num(x: float) -> str:
    if x != x:  # NaN
        return "n/a"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"
