"""``ecgx bench suite=load``: loader speed against the fastest model's training step."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from ecgx.bench.core import Report
from ecgx.commands.bench import compose_bench, run_bench
from tests.conftest import PTBXL_SAMPLES


def _run(tmp_path: Path, *overrides: str) -> Report:
    cfg = compose_bench(["suite=load", "quick=true", "device=cpu", f"output_dir={tmp_path / 'out'}",
                         f"workdir={tmp_path / 'work'}", *overrides])  # fmt: skip
    return run_bench(cfg)[0]


def test_quick_load(tmp_path: Path) -> None:
    report = _run(tmp_path)
    assert report.errors == {}
    figures = {f.name: f for f in report.figures}
    assert set(figures) == {"train step xai_lenet", "loader w0 batches", "loader w0 samples",
                            "loader w2 batches", "loader w2 samples", "cache open"}  # fmt: skip
    for fig in figures.values():
        assert fig.values and all(v > 0 and math.isfinite(v) for v in fig.values)
    step = figures["train step xai_lenet"]
    assert step.params["input"] == [12, 250] and step.params["batch"] == 32
    for workers in (0, 2):
        batches, samples = (
            figures[f"loader w{workers} batches"],
            figures[f"loader w{workers} samples"],
        )
        assert samples.median == pytest.approx(batches.median * 64)  # conf/bench/load.yaml
        assert samples.ratio_to == "train step xai_lenet" and samples.target == ">= 10"
        assert samples.ratio == pytest.approx(samples.median / step.median)
        assert samples.params["num_workers"] == workers
        # The real samples when present, else the synthetic set.
        assert samples.params["data"] == ("real" if PTBXL_SAMPLES.is_dir() else "synthetic")
    opened = figures["cache open"]
    assert opened.unit == "s" and opened.target == "<= 0.1" and isinstance(opened.met, bool)
    assert opened.params["records"] == 300  # quick.open_records


def test_unknown_baseline_model_is_named(tmp_path: Path) -> None:
    report = _run(tmp_path, "load.baseline_model=lenet9")
    assert "load.baseline_model='lenet9'" in report.errors["load"]
