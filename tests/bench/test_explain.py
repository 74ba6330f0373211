"""``ecgx bench suite=explain`` in quick mode: figures against their floors, counts, errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from ecgx.bench import explain
from ecgx.bench.core import Context, Report
from ecgx.commands.bench import compose_bench
from ecgx.errors import ConfigValueError
from ecgx.models.catalog import build


def _ctx(tmp_path: Path, quick: bool = True) -> Context:
    return Context(quick=quick, repeats=1, device="cpu", workdir=tmp_path, threads=1)


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory: pytest.TempPathFactory) -> Report:
    cfg = compose_bench(["quick=true"])
    report = Report({})
    report.add(explain.run(cfg.explain, _ctx(tmp_path_factory.mktemp("bench"))))
    return report


def test_every_method_is_timed_against_its_own_floor(quick_report: Report) -> None:
    quick = compose_bench([]).explain.quick
    model = quick.models.default
    assert quick_report.get("explain", f"{model} forward+backward").unit == "s/record"
    for name in quick.methods:
        fig = quick_report.get("explain", name)
        floor = quick_report.get("explain", f"{name} floor")
        assert fig.ratio_to == floor.name and fig.target == "<= 1.2"
        assert fig.ratio == pytest.approx(fig.median / floor.median)
        assert fig.params["model"] == model
    assert quick_report.get("explain", "occlusion_leads").params["records"] == 2
    # the floor counts what captum really ran: 8 steps x 4 records, one call
    ig_floor = quick_report.get("explain", "integrated_gradients floor")
    assert ig_floor.params == {"evaluations": 8, "calls": 1, "rows": 32}
    single = quick_report.get("explain", "integrated_gradients batch 1")
    batched = quick_report.get("explain", "integrated_gradients batch 4")
    assert batched.ratio_to == single.name and single.unit == batched.unit == "records/s"
    for fig in quick_report.figures:
        assert fig.values and all(math.isfinite(v) and v > 0 for v in fig.values), fig.name


def test_evaluation_counts_come_from_the_explainer_config() -> None:
    model = build("compact_resnet").eval()
    x = torch.zeros(1, 12, 1000)
    counts = {
        name: explain.evaluations(explain.build_method(name, model), x)
        for name in ("saliency", "integrated_gradients", "gradient_shap", "occlusion",
                     "occlusion_leads", "guided_grad_cam", "deeplift")
    }  # fmt: skip
    assert counts == {
        "saliency": (1, True),
        "integrated_gradients": (50, True),
        "gradient_shap": (50, True),
        "occlusion": (12 * 39 + 1, False),  # 39 windows of 50 samples, 25 apart, on each lead
        "occlusion_leads": (13, False),
        "guided_grad_cam": (2, True),
        "deeplift": (2, True),
    }
    tuned = explain.build_method("integrated_gradients", model, {"n_steps": 7})
    assert explain.evaluations(tuned, x) == (7, True)
    shap = explain.build_method("deeplift_shap", model)
    shap.set_background(torch.zeros(5, 12, 1000))
    assert explain.evaluations(shap, x) == (10, True)


def test_observed_calls_see_captum_batching() -> None:
    model = build("xai_lenet").eval()
    method = explain.build_method("integrated_gradients", model, {"n_steps": 6,
                                  "internal_batch_size": 9})  # fmt: skip
    x = torch.randn(3, 12, 250)
    calls = explain._observed_calls(lambda: method.attribute(x, 0))
    assert calls == [9, 9]  # 3 steps of 3 records per call


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("explain.methods=[saliency,shapley]", "explain.methods: unknown explainer 'shapley'"),
        ("explain.batching=[occlusionn]", "explain.batching: unknown explainer 'occlusionn'"),
        ("explain.models.default=ecgnett", "explain.models.default: unknown model 'ecgnett'"),
        ("+explain.models.lrpp=xai_lenet", "explain.models: unknown explainer 'lrpp'"),
    ],
)
def test_bad_config_is_named(tmp_path: Path, override: str, message: str) -> None:
    with pytest.raises(ConfigValueError, match=message):
        explain.settings(compose_bench([override]).explain, _ctx(tmp_path, quick=False))
