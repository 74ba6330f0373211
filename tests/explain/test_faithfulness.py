"""Faithfulness metrics: deletion / insertion curves, captum infidelity and max-sensitivity."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients, Saliency
from torch import nn

from ecgx.explain.faithfulness import (
    FaithfulnessCurves,
    deletion_insertion,
    infidelity,
    random_baseline_curves,
    sensitivity,
)
from ecgx.models.catalog import build

pytestmark = pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require gradients")


class Linear(nn.Module):
    """logits = (sum(w * x), -sum(w * x)): attributions w * x are exact (zero baseline)."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("w", w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = (x * self.w).sum(dim=(1, 2))
        return torch.stack([s, -s], dim=1)


class Counting(nn.Module):
    """Counts forward calls and remembers their batch sizes."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.shape[0])
        return self.model(x)


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_linear_model_exact_ranking_beats_chance_and_reverse_flips() -> None:
    g = _generator()
    # all contributions positive: removing them in any order lowers the logit at every step
    w = torch.rand(2, 10, generator=g) + 0.1
    x = torch.rand(4, 2, 10, generator=g) + 0.1
    model = Linear(w).eval()
    kw = {"steps": 20, "output": "logit"}
    best = deletion_insertion(model, x, 0, w * x, **kw)
    worst = deletion_insertion(model, x, 0, -w * x, **kw)
    chance = random_baseline_curves(model, x, 0, seed=1, repeats=5, **kw)

    assert (np.diff(best.deletion, axis=1) < 0).all()
    assert (np.diff(best.insertion, axis=1) > 0).all()
    assert best.deletion_auc < chance.deletion_auc < worst.deletion_auc
    assert worst.insertion_auc < chance.insertion_auc < best.insertion_auc
    assert best.deletion_auc < best.insertion_auc
    assert worst.deletion_auc > worst.insertion_auc
    # per record too, not only on average
    assert (best.deletion_aucs < chance.deletion_aucs).all()
    assert (best.insertion_aucs > chance.insertion_aucs).all()


@pytest.mark.parametrize("output", ["logit", "probability"])
def test_exact_ranking_bounds_every_other_ranking_pointwise(output: str) -> None:
    # Mixed signs: removing the most positive contributions first gives, at every step, the
    # lowest score any ranking can reach (the sigmoid is monotone, so probabilities too).
    g = _generator(2)
    w = torch.randn(2, 10, generator=g)
    x = torch.randn(3, 2, 10, generator=g)
    model = Linear(w).eval()
    kw = {"steps": 20, "output": output, "task": "multilabel"}
    best = deletion_insertion(model, x, 0, w * x, **kw)
    worst = deletion_insertion(model, x, 0, -w * x, **kw)
    for seed in range(3):
        other = random_baseline_curves(model, x, 0, seed=seed, **kw)
        assert (best.deletion <= other.deletion + 1e-6).all()
        assert (best.insertion >= other.insertion - 1e-6).all()
        assert (worst.deletion >= other.deletion - 1e-6).all()
        assert (worst.insertion <= other.insertion + 1e-6).all()
    assert best.deletion_auc < worst.deletion_auc
    assert best.insertion_auc > worst.insertion_auc


@pytest.mark.parametrize("task", ["multilabel", "multiclass"])
@pytest.mark.parametrize("baseline", ["zero", "mean", "tensor"])
def test_curve_endpoints_are_input_and_baseline_scores(task: str, baseline: str) -> None:
    g = _generator(3)
    model = build("xai_lenet", num_classes=3).eval()
    x = torch.randn(3, 12, 250, generator=g)
    target = torch.tensor([0, 2, 1])
    base_tensor = {
        "zero": torch.zeros_like(x),
        "mean": x.mean(-1, keepdim=True).expand_as(x),
        "tensor": torch.linspace(-0.5, 0.5, 12)[:, None].expand_as(x),
    }[baseline]
    spec = torch.linspace(-0.5, 0.5, 12)[:, None] if baseline == "tensor" else baseline
    attributions = torch.randn(x.shape, generator=g)
    curves = deletion_insertion(
        model, x, target, attributions, steps=7, baseline=spec, task=task, batch_size=20
    )

    def score(inputs: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            logits = model(inputs)
        p = logits.sigmoid() if task == "multilabel" else logits.softmax(-1)
        return p[torch.arange(3), target].numpy()

    assert curves.deletion.shape == curves.insertion.shape == (3, 8)
    # k / steps rounded to whole units (3000 per record here)
    np.testing.assert_allclose(curves.fractions, np.arange(8) / 7, atol=0.5 / 3000)
    assert curves.fractions[0] == 0.0 and curves.fractions[-1] == 1.0
    np.testing.assert_allclose(curves.deletion[:, 0], score(x), atol=1e-5)
    np.testing.assert_allclose(curves.deletion[:, -1], score(base_tensor), atol=1e-5)
    np.testing.assert_allclose(curves.insertion[:, 0], score(base_tensor), atol=1e-5)
    np.testing.assert_allclose(curves.insertion[:, -1], score(x), atol=1e-5)


def test_segment_unit_ranks_windows_by_summed_attribution() -> None:
    # 2 leads x 12 samples, windows of 5: [0, 5), [5, 10), [10, 12) per lead, 6 units.
    x = torch.arange(1, 25, dtype=torch.float32).reshape(1, 2, 12) ** 1.5  # distinct sums
    model = Linear(torch.ones(2, 12)).eval()
    total = x.sum().item()
    a = torch.zeros_like(x)
    a[0, 0, 2] = 5.0  # window (0, 0): sum 5, but the largest single sample
    a[0, 1, 5:10] = 2.0  # window (1, 1): sum 10
    a[0, 1, 10:12] = 3.0  # window (1, 2), the short last one: sum 6
    kw = {"steps": 6, "output": "logit"}
    seg = deletion_insertion(model, x, 0, a, unit="segment", segment=5, **kw)
    removed = [0.0, x[0, 1, 5:10].sum(), x[0, 1, 10:12].sum(), x[0, 0, 0:5].sum()]
    np.testing.assert_allclose(seg.deletion[0, :4], total - np.cumsum(removed), rtol=1e-6)
    np.testing.assert_allclose(seg.insertion[0, :4], np.cumsum(removed), rtol=1e-6)
    # per sample the single 5.0 goes first instead
    per_sample = deletion_insertion(model, x, 0, a, steps=24, output="logit")
    assert per_sample.deletion[0, 1] == pytest.approx(total - x[0, 0, 2].item(), rel=1e-6)

    # one window holds all the attribution: it, and only it, goes at the first step
    b = torch.zeros_like(x)
    b[0, 0, 5:10] = torch.tensor([0.1, 0.3, 0.2, 0.5, 0.4])
    one = deletion_insertion(model, x, 0, b, unit="segment", segment=5, **kw)
    assert one.deletion[0, 1] == pytest.approx(total - x[0, 0, 5:10].sum().item(), rel=1e-6)
    assert one.insertion[0, 1] == pytest.approx(x[0, 0, 5:10].sum().item(), rel=1e-6)
    np.testing.assert_allclose(one.fractions, np.arange(7) / 6)


def test_forward_calls_are_batched_not_per_element() -> None:
    g = _generator(4)
    x = torch.randn(3, 2, 500, generator=g)  # 1000 elements per record
    model = Counting(Linear(torch.randn(2, 500, generator=g))).eval()
    deletion_insertion(model, x, 0, torch.randn(x.shape, generator=g), steps=10, batch_size=8)
    rows = 2 * 3 * 11  # deletion + insertion, 3 records, 11 steps
    assert len(model.batches) == math.ceil(rows / 8)
    assert sum(model.batches) == rows
    assert max(model.batches) <= 8
    model.batches.clear()
    random_baseline_curves(model, x, 0, steps=10, repeats=2, batch_size=1000)
    assert model.batches == [rows, rows]


def test_random_baseline_is_seeded() -> None:
    g = _generator(5)
    x = torch.randn(2, 2, 10, generator=g)
    model = Linear(torch.randn(2, 10, generator=g)).eval()
    a = random_baseline_curves(model, x, 0, seed=7, steps=10)
    b = random_baseline_curves(model, x, 0, seed=7, steps=10)
    c = random_baseline_curves(model, x, 0, seed=8, steps=10)
    np.testing.assert_array_equal(a.deletion, b.deletion)
    assert not np.array_equal(a.deletion, c.deletion)


def test_metrics_and_trapezoid_auc() -> None:
    curves = FaithfulnessCurves(
        fractions=np.array([0.0, 0.5, 1.0]),
        deletion=np.array([[1.0, 0.5, 0.0], [1.0, 0.0, 0.0]]),
        insertion=np.array([[0.0, 1.0, 1.0], [0.0, 0.5, 1.0]]),
    )
    np.testing.assert_allclose(curves.deletion_aucs, [0.5, 0.25])
    np.testing.assert_allclose(curves.insertion_aucs, [0.75, 0.5])
    metrics = curves.metrics("xai/ig/")
    assert metrics == pytest.approx(
        {
            "xai/ig/deletion_auc": 0.375,
            "xai/ig/insertion_auc": 0.625,
            "xai/ig/insertion_minus_deletion_auc": 0.25,
        }
    )
    assert all(isinstance(v, float) for v in metrics.values())


def test_infidelity_zero_for_exact_attributions_of_a_linear_model() -> None:
    g = _generator(6)
    w = torch.randn(2, 10, generator=g)
    x = torch.randn(4, 2, 10, generator=g)
    model = Linear(w).eval()
    # global attributions (factor in x - baseline): w * x is exact with a zero baseline
    exact = infidelity(model, w * x, x, 0, multiply_by_inputs=True)
    noise = infidelity(model, torch.randn(x.shape, generator=g), x, 0, multiply_by_inputs=True)
    assert exact.shape == (4,)
    assert (exact < 1e-9).all()
    assert (noise > 1e-4).all()
    # local attributions: the gradient w is exact, w * x is not
    local = infidelity(model, w.expand_as(x), x, 0, multiply_by_inputs=False)
    mismatched = infidelity(model, w * x, x, 0, multiply_by_inputs=False)
    assert (local < 1e-9).all()
    assert (mismatched > 1e-4).all()
    # explainers: the mode comes from captum's multiplies_by_inputs
    ig = infidelity(model, IntegratedGradients(model), x, 0)
    assert (ig < 1e-9).all()
    positive = Linear(w.abs()).eval()  # Saliency returns |gradient|
    assert (infidelity(positive, Saliency(positive), x, 0) < 1e-9).all()


def test_infidelity_is_seeded_and_needs_the_attribution_kind() -> None:
    g = _generator(7)
    x = torch.randn(2, 2, 10, generator=g)
    model = Linear(torch.randn(2, 10, generator=g)).eval()
    a = torch.randn(x.shape, generator=g)
    first = infidelity(model, a, x, 0, multiply_by_inputs=False, seed=3)
    np.testing.assert_array_equal(
        first, infidelity(model, a, x, 0, multiply_by_inputs=False, seed=3)
    )
    assert not np.array_equal(first, infidelity(model, a, x, 0, multiply_by_inputs=False, seed=4))
    with pytest.raises(ValueError, match="multiply_by_inputs"):
        infidelity(model, a, x, 0)
    # perturbations scale with each lead's std, so constant leads are not perturbed at all
    constant = torch.full_like(x, 0.3)
    for mode in (False, True):
        zero = infidelity(model, a, constant, 0, multiply_by_inputs=mode)
        assert (zero < 1e-10).all()


def test_sensitivity_zero_for_constant_gradient_positive_for_a_cnn() -> None:
    g = _generator(8)
    x = torch.randn(2, 2, 10, generator=g)
    linear = Linear(torch.randn(2, 10, generator=g)).eval()
    flat = sensitivity(linear, Saliency(linear), x, 0, n_perturb_samples=5)
    assert flat.shape == (2,)
    np.testing.assert_array_equal(flat, 0.0)

    cnn = build("xai_lenet", num_classes=3).eval()
    ecg = torch.randn(2, 12, 250, generator=g)
    values = sensitivity(cnn, Saliency(cnn), ecg, torch.tensor([0, 2]), n_perturb_samples=5)
    assert values.shape == (2,)
    assert (values > 1e-3).all()
    # a larger neighbourhood can only find larger changes (same seed, same noise directions)
    wider = sensitivity(
        cnn, Saliency(cnn), ecg, torch.tensor([0, 2]), radius=0.5, n_perturb_samples=5
    )
    assert (wider > values).all()
    # noise is relative to each lead's std: flat leads (e.g. zero-filled missing ones) stay flat
    constant = torch.full((1, 12, 250), 0.3)
    # (not exactly 0: captum explains the batch of 1 and of perturbed copies separately)
    assert (sensitivity(cnn, Saliency(cnn), constant, 0) < 1e-5).all()


def test_mismatched_shapes_are_refused() -> None:
    x = torch.zeros(2, 2, 10)
    model = Linear(torch.ones(2, 10)).eval()
    with pytest.raises(ValueError, match=r"\(2, 2, 9\).*\(2, 2, 10\)"):
        deletion_insertion(model, x, 0, torch.zeros(2, 2, 9))
    with pytest.raises(ValueError, match=r"\(1, 2, 10\).*\(2, 2, 10\)"):
        infidelity(model, torch.zeros(1, 2, 10), x, 0, multiply_by_inputs=False)
    with pytest.raises(ValueError, match="batch, leads, samples"):
        deletion_insertion(model, x[0], 0, x[0])
    with pytest.raises(ValueError, match="target"):
        deletion_insertion(model, x, torch.tensor([0, 1, 0]), x)
    with pytest.raises(ValueError, match="broadcast"):
        deletion_insertion(model, x, 0, x, baseline=torch.zeros(3, 10))


def test_train_mode_model_warns() -> None:
    x = torch.randn(1, 2, 10)
    model = Linear(torch.ones(2, 10)).train()
    with pytest.warns(UserWarning, match="eval"):
        deletion_insertion(model, x, 0, x, steps=2)
