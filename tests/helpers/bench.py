"""Running one bench suite in quick mode, as its tests do."""

from __future__ import annotations

import math
from pathlib import Path
from types import ModuleType
from typing import Any

from ecgx.bench.core import Context, Figure, Report


def quick_figures(suite: ModuleType, cfg: Any, workdir: Path) -> dict[str, Figure]:
    """The suite's figures by name, each checked to hold finite, positive values."""
    ctx = Context(quick=True, repeats=1, device="cpu", workdir=workdir, threads=2)
    report = Report({})
    report.add(suite.run(cfg, ctx))
    figures = {f.name: f for f in report.figures}
    for fig in figures.values():
        assert fig.values and all(math.isfinite(v) and v > 0 for v in fig.values), fig.name
    return figures
