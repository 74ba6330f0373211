"""Every attribution method: shapes, completeness, sanity, support, and a known answer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ecgx.errors import ConfigValueError
from ecgx.explain import methods as M
from ecgx.models.catalog import build, model_names

ALL = [M.Saliency, M.InputXGradient, M.IntegratedGradients, M.DeepLift, M.GradientShap,
       M.DeepLiftShap, M.Occlusion, M.GuidedBackprop, M.GradCAM, M.GuidedGradCAM]  # fmt: skip


def _input(model: nn.Module, batch: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    leads, samples = model.input_shape
    if leads != 12:  # chart models: a small picture is enough to exercise the layers
        return torch.rand(batch, leads, 64 * 64, generator=g)
    length = {"ecgnet": 1000, "imle_net": 1000, "mousavi": 1000, "rajpurkar": 1000}
    return torch.randn(batch, leads, length.get(type(model).__module__.split(".")[-1], 250),
                       generator=g)  # fmt: skip


def _model(name: str, **kw: object) -> nn.Module:
    torch.manual_seed(0)
    model = build(name, num_classes=3, **kw).eval()
    if model.input_shape[0] != 12:
        model = build(name, num_classes=3, image_size=(64, 64)).eval()
    return model


@pytest.mark.parametrize("method", ALL, ids=lambda m: m.__name__)
@pytest.mark.parametrize("name", ["compact_resnet", "xai_lenet"])
def test_every_method_gives_a_finite_informative_map(name: str, method: type) -> None:
    model = _model(name)
    x = _input(model)
    explainer = method(model)
    explainer.set_background(_input(model, batch=4, seed=1))
    a = explainer.attribute(x, torch.tensor([0, 1, 2]))
    assert a.shape == x.shape
    assert torch.isfinite(a).all()
    assert a.std() > 0  # not constant
    if method is M.GradCAM:
        assert (a >= 0).all()  # ReLU'd class activation map


@pytest.mark.parametrize("name", model_names())
def test_saliency_and_grad_cam_work_on_every_model(name: str) -> None:
    """Grad-CAM finds every model's declared target layer; saliency reaches every input."""
    model = _model(name)
    x = _input(model, batch=2)
    a = M.Saliency(model).attribute(x, 1)
    assert a.shape == x.shape and torch.isfinite(a).all() and a.abs().sum() > 0
    # Grad-CAM keeps positive evidence only; an untrained model may have none for a class.
    cams = [M.GradCAM(model).attribute(x, c) for c in range(3)]
    assert all(c.shape == x.shape and torch.isfinite(c).all() for c in cams)
    assert sum(float(c.sum()) for c in cams) > 0


#: every 1D model LRP supports: feed-forward, residual (Add modules) and concatenating ones
LRP_MODELS = ["compact_resnet", "inception1d", "rajpurkar", "resnet101_1d", "resnet1d_wang",
              "resnet34_cpsc", "xai_lenet", "xai_resnet", "xai_xresnet1d50", "xresnet1d101"]  # fmt: skip
#: what LRP refuses, and the layer named as the reason (a real limit of captum's rules)
LRP_REFUSED = {"ecgnet": "LSTM", "imle_net": "AdditiveAttention", "mousavi": "KerasBiLSTM",
               "seresnet18": "Sigmoid", "resnet18_2d": "functional sub",
               # state-space kernels convolve by FFT; the transformer's attention and norms
               "s4": "S4DKernel", "s4_cpc": "S4DKernel", "patch_transformer": "LayerNorm"}  # fmt: skip


@pytest.mark.parametrize("name", LRP_MODELS)
def test_lrp_conserves_relevance(name: str) -> None:
    """Relevance sums to the logit within 1e-6 relative: exact conservation holds for the
    epsilon rule when no bias absorbs relevance, so biases and BatchNorm shifts are zeroed
    (the network is then positively homogeneous) and ε is tiny, in float64."""
    model = _model(name).double()
    for module in model.modules():
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
            module.running_mean.zero_()
    x = _input(model, batch=2).double()
    a = M.LRP(model, epsilon=1e-12).attribute(x, 1)
    with torch.no_grad():
        logit = model(x)[:, 1]
    assert a.shape == x.shape and a.std() > 0
    np.testing.assert_allclose(a.sum((1, 2)).numpy(), logit.numpy(), rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("name", sorted(LRP_REFUSED))
def test_lrp_refuses_layers_it_has_no_rule_for(name: str) -> None:
    model = _model(name)
    with pytest.raises(M.UnsupportedModelError, match=type(model).__name__) as err:
        M.LRP(model).attribute(_input(model, batch=1), 0)
    assert LRP_REFUSED[name] in str(err.value)


def test_lrp_with_biases_tracks_the_logit() -> None:
    model = _model("xai_lenet")
    x = _input(model)
    a = M.LRP(model, epsilon=1e-9).attribute(x, 1)
    # The epsilon rule conserves relevance up to the biases it absorbs: sum ≈ logit.
    logit = model(x)[:, 1].detach()
    assert torch.corrcoef(torch.stack([a.sum((1, 2)), logit]))[0, 1] > 0.9


def test_modified_backward_methods_refuse_functional_relus() -> None:
    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv1d(12, 4, 5)
            self.relu = nn.ReLU()
            self.fc = nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.relu(nn.functional.relu(self.conv(x)) - 0.1)
            return self.fc(h.mean(-1))

    model = Functional().eval()
    x = torch.randn(2, 12, 50)
    assert M.relu_usage(model, x)["functional"] == 1
    for method in (M.DeepLift, M.GuidedBackprop, M.GuidedGradCAM):
        with pytest.raises(M.UnsupportedModelError, match="Functional"):
            method(model).attribute(x, 0)


@pytest.mark.parametrize("name", ["ecgnet", "imle_net", "mousavi", "rajpurkar", "resnet101_1d",
                                  "resnet1d_wang", "resnet34_cpsc", "seresnet18"])  # fmt: skip
def test_every_model_applies_each_relu_module_once(name: str) -> None:
    """The models that used functional or shared ReLUs now give each use its own module."""
    model = _model(name)
    assert M.relu_usage(model, _input(model, batch=1)) == {"functional": 0, "reused": 0}


def test_attention_is_imle_net_only_and_normalised() -> None:
    model = _model("imle_net")
    x = _input(model, batch=2)
    a = M.Attention(model).attribute(x, 0)
    assert a.shape == x.shape
    assert torch.allclose(a.amin((1, 2)), torch.zeros(2)) and torch.allclose(
        a.amax((1, 2)), torch.ones(2)
    )
    with pytest.raises(M.UnsupportedModelError, match="imle_net"):
        M.Attention(_model("xai_lenet")).attribute(_input(_model("xai_lenet")), 0)


def test_background_methods_need_a_background() -> None:
    model = _model("xai_lenet")
    with pytest.raises(ConfigValueError, match="background"):
        M.GradientShap(model).attribute(_input(model), 0)


def test_integrated_gradients_is_complete() -> None:
    """Sum of attributions = F(x) − F(baseline) (IG's completeness axiom), in float64."""
    model = _model("compact_resnet").double()
    x = _input(model).double()
    ig = M.IntegratedGradients(model, n_steps=300)
    a = ig.attribute(x, 2)
    with torch.no_grad():
        gap = model(x)[:, 2] - model(torch.zeros_like(x))[:, 2]
    np.testing.assert_allclose(a.sum((1, 2)).numpy(), gap.numpy(), rtol=1e-3, atol=1e-6)


def test_deeplift_sums_to_delta() -> None:
    model = _model("xai_lenet").double()
    x = _input(model).double()
    a = M.DeepLift(model).attribute(x, 1)
    with torch.no_grad():
        gap = model(x)[:, 1] - model(torch.zeros_like(x))[:, 1]
    np.testing.assert_allclose(a.sum((1, 2)).numpy(), gap.numpy(), rtol=1e-4, atol=1e-6)


def test_occlusion_of_whole_leads_is_constant_within_a_lead() -> None:
    model = _model("xai_lenet")
    a = M.Occlusion(model, mode="lead").attribute(_input(model), 0)
    assert torch.allclose(a, a[:, :, :1].expand_as(a))
    with pytest.raises(ConfigValueError, match="occlusion mode"):
        M.Occlusion(model, mode="beats")


# -- a model trained on a class defined by a known segment in known leads --------------------

LEADS_ON, WINDOW = (6, 7, 8), slice(120, 150)  # V1–V3, samples 120..149 of 250


def _known_segment_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = 0.3 * torch.randn(n, 12, 250, generator=g)
    y = torch.randint(0, 2, (n,), generator=g)
    bump = torch.hann_window(30, periodic=False) * 1.5
    for lead in LEADS_ON:
        x[y == 1, lead, WINDOW] += bump
    return x, y


@pytest.fixture(scope="module")
def trained_lenet() -> nn.Module:
    torch.manual_seed(0)
    model = build("xai_lenet", num_classes=2)
    x, y = _known_segment_data(256, 0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(60):
        batch = slice((step * 32) % 256, (step * 32) % 256 + 32)
        loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    xt, yt = _known_segment_data(64, 1)
    with torch.no_grad():
        assert (model(xt).argmax(1) == yt).float().mean() > 0.95  # it learned the bump
    return model


def test_saliency_finds_the_segment_that_defines_the_class(trained_lenet) -> None:
    x, y = _known_segment_data(32, 2)
    x = x[y == 1]
    a = M.Saliency(trained_lenet, abs=True).attribute(x, 1)
    inside = torch.zeros(12, 250, dtype=torch.bool)
    for lead in LEADS_ON:
        inside[lead, WINDOW] = True
    density_in = a[:, inside].mean()
    density_out = a[:, ~inside].mean()
    assert density_in > 3 * density_out


def test_attributions_change_when_the_weights_are_randomised(trained_lenet) -> None:
    """Adebayo et al.'s model-randomisation check: an explanation that survives randomising
    the weights explains the input, not the model."""
    import copy

    x, _ = _known_segment_data(16, 3)
    trained = M.Saliency(trained_lenet, abs=True).attribute(x, 1)
    randomised = copy.deepcopy(trained_lenet)
    torch.manual_seed(123)
    for module in randomised.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    shuffled = M.Saliency(randomised.eval(), abs=True).attribute(x, 1)
    r = torch.corrcoef(torch.stack([trained.flatten(), shuffled.flatten()]))[0, 1]
    assert r < 0.5


CHEAP = {
    M.IntegratedGradients: {"n_steps": 4},
    M.GradientShap: {"n_samples": 2},
    M.Occlusion: {"mode": "lead"},
}


def _matrix_models() -> list[str]:
    # Every 1D model, and one chart backbone (the 2D families share the ImageModel code path
    # and run saliency and Grad-CAM in the test above).
    chart = {"resnet50_2d", "convnext_tiny", "convnext_base", "efficientnet_b0",
             "efficientnet_b3", "mobilenetv3_small", "mobilenetv3_large"}  # fmt: skip
    return [n for n in model_names() if n not in chart]


def _real_limit(name: str, method: type) -> bool:
    """The refusals the support matrix keeps: a method's rules do not exist for a layer."""
    if method is M.Attention:
        return name != "imle_net"  # IMLE-Net's own attention maps
    return method is M.LRP and name in LRP_REFUSED


@pytest.mark.slow
@pytest.mark.parametrize("name", _matrix_models())
def test_every_method_on_every_model_runs_or_is_refused_by_name(name: str) -> None:
    """The support matrix of the README: a method gives a finite map shaped like the input, or
    (only where its rules have no counterpart in the model) refuses it by name."""
    model = _model(name)
    x = _input(model, batch=1)
    for method in [*ALL, M.LRP, M.Attention]:
        explainer = method(model, **CHEAP.get(method, {}))
        explainer.set_background(_input(model, batch=2, seed=1))
        explainer.batch_size = 1
        try:
            a = explainer.attribute(x, 0)
        except M.UnsupportedModelError as err:
            assert _real_limit(name, method), f"{method.__name__} refused {name}: {err}"
            assert type(model).__name__ in str(err) or "imle_net" in str(err), str(err)
            continue
        assert not _real_limit(name, method), f"{method.__name__} ran on {name}"
        assert a.shape == x.shape and torch.isfinite(a).all(), method.__name__
