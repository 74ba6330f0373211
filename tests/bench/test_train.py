"""``ecgx bench suite=train`` in quick mode: its figures, their baselines and its config errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from ecgx.bench import train
from ecgx.bench.core import Context, Report
from ecgx.commands.bench import compose_bench
from ecgx.errors import ConfigValueError
from ecgx.models.catalog import build


def _ctx(tmp_path: Path) -> Context:
    return Context(quick=True, repeats=1, device="cpu", workdir=tmp_path, threads=1)


def _run(tmp_path: Path, *overrides: str) -> Report:
    cfg = compose_bench(["quick=true", *overrides])
    report = Report({})
    report.add(train.run(cfg.train, _ctx(tmp_path)))
    return report


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory: pytest.TempPathFactory) -> Report:
    return _run(tmp_path_factory.mktemp("bench"))


def test_every_quick_model_has_speed_and_fraction_of_peak(quick_report: Report) -> None:
    peak = quick_report.get("train", train.PEAK)
    models = compose_bench([]).train.quick.models
    for name in models:
        for mode in ("train", "inference"):
            speed = quick_report.get("train", f"{name} {mode}")
            gflops = quick_report.get("train", f"{name} {mode} GFLOP/s")
            assert speed.unit == "samples/s" and gflops.ratio_to == train.PEAK
            assert gflops.ratio == pytest.approx(gflops.median / peak.median)
            # achieved GFLOP/s is the speed times the counted FLOPs of one sample
            flops = gflops.params["flops_per_sample"]
            assert gflops.median == pytest.approx(speed.median * flops / 1e9)
            assert "GFLOP/sample" in speed.note
    for fig in quick_report.figures:
        assert fig.values and all(math.isfinite(v) and v > 0 for v in fig.values), fig.name
    # the seeds' published numbers are notes, not baselines
    assert "published, not measured here: 320" in quick_report.get("train", "mousavi train").note


def test_flops_are_counted_on_the_model_that_is_timed() -> None:
    from ecgx.models.catalog import cost

    model = build("xai_lenet")
    batch = train._batch(model, 4, multiclass=False, device="cpu")
    forward, step = train.count_flops(model, batch)
    assert forward == pytest.approx(cost("xai_lenet").flops, rel=1e-6)
    assert step == 3 * forward


def test_bf16_and_failed_compile_figures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("inductor is not here\nsecond line")

    monkeypatch.setattr(torch, "compile", broken)
    report = _run(tmp_path, "train.models=[xai_lenet]", "train.bf16=true", "train.compile=true")
    half = report.get("train", "xai_lenet train bf16")
    assert half.ratio_to == "xai_lenet train" and half.ratio > 0
    assert "max |Δ probability|" in half.note
    assert report.get("train", train.PEAK_BF16).median > 0
    compiled = report.get("train", "xai_lenet inference compiled")
    assert compiled.values == [] and compiled.note.endswith("RuntimeError: inductor is not here")


def test_chart_models_train_single_label() -> None:
    cfg = compose_bench([]).train
    assert "resnet18_2d" in cfg.multiclass and "imle_net" not in cfg.multiclass
    model = build("mobilenetv3_small")
    batch = train._batch(model, 2, multiclass=True, device="cpu")
    assert batch.target.shape == (2,) and isinstance(batch.loss, torch.nn.CrossEntropyLoss)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.models=[xai_lenet,no_such_net]", "train.models: unknown model 'no_such_net'"),
        ("train.models=[classical_lr]", "'classical_lr' is a scikit-learn baseline"),
        ("train.bf16=[imle_nett]", "train.bf16: unknown model 'imle_nett'"),
        ("train.batch_size=0", "train.batch_size=0"),
    ],
)
def test_bad_config_is_named(tmp_path: Path, override: str, message: str) -> None:
    ctx = Context(quick=False, repeats=1, device="cpu", workdir=tmp_path, threads=1)
    with pytest.raises(ConfigValueError, match=message):
        train.settings(compose_bench([override]).train, ctx)


def test_timed_stops_at_the_budget() -> None:
    calls = []

    def slow() -> None:
        calls.append(1)
        torch.ones(1)
        import time

        time.sleep(0.02)

    seconds = train.timed(slow, repeats=50, budget_s=0.05)
    assert 1 <= len(seconds) < 5 and len(calls) == len(seconds) + 1
