"""XAI4ECG LeNet / ResNet / XResNet1d50 ports: structure, explainer hooks, original logits."""

from __future__ import annotations

import re
from functools import cache

import pytest
import torch
from torch import nn

from ecgx.models.base import ECGModel, count_parameters
from ecgx.models.xai4ecg import (
    XAILeNet,
    XAIResNet,
    XAIXResNet1d50,
    _xresnet_head_name,
    _xresnet_original,
    load_original_state_dict,
)
from tests.helpers.model_checks import parameters_without_gradient
from tests.helpers.reference_weights import original_weights_and_input, torch_original

# (class, torch_originals.json key, trainable parameters at 5 classes,
#  target-layer output shape at 12 × 250 for batch 1)
MODELS = [
    (XAILeNet, "xai_lenet", 70_949, (1, 128, 5)),
    (XAIResNet, "xai_resnet", 3_680_645, (1, 512, 8)),
    (XAIXResNet1d50, "xai_xresnet", 896_517, (1, 256, 8)),
]
IDS = [cls.__name__ for cls, *_ in MODELS]


def _build(cls: type[ECGModel], seed: int = 0) -> ECGModel:
    torch.manual_seed(seed)
    return cls().eval()


@cache
def _shared(cls: type[ECGModel]) -> ECGModel:
    """One eval-mode instance per class for the read-only tests (keeps the file fast)."""
    return _build(cls)


@pytest.mark.parametrize(("cls", "key", "count", "shape"), MODELS, ids=IDS)
def test_trainable_parameters_match_original(cls, key, count, shape) -> None:
    model = _shared(cls)
    assert count_parameters(model) == count
    assert model.input_shape == (12, 250)
    assert model.seed_num_classes == 5


@pytest.mark.parametrize(("cls", "key", "count", "shape"), MODELS, ids=IDS)
@pytest.mark.parametrize("samples", [250, 1000])
def test_output_shapes(cls, key, count, shape, samples: int) -> None:
    # 250 is the training crop; the notebooks run the same weights on full 1000-sample records.
    model = _shared(cls)
    x = torch.randn(1, 12, samples)
    with torch.no_grad():
        features = model.forward_features(x)
        logits = model(x)
    assert features.shape == (1, model.num_features)
    assert logits.shape == (1, 5)
    torch.testing.assert_close(model.forward_head(features), logits)


@pytest.mark.parametrize(("cls", "key", "count", "shape"), MODELS, ids=IDS)
def test_batch_of_one_keeps_its_batch_axis(cls, key, count, shape) -> None:
    # The original ECGResNet squeezed (1, 5) down to (5,).
    with torch.no_grad():
        assert _shared(cls)(torch.randn(1, 12, 250)).shape == (1, 5)


@pytest.mark.parametrize(("cls", "key", "count", "shape"), MODELS, ids=IDS)
def test_gradients_reach_every_parameter(cls, key, count, shape) -> None:
    model = _build(cls, seed=1).train()
    if isinstance(model, XAIXResNet1d50):
        # The zero-initialised last BN of each branch blocks the gradient to the branch's first
        # two convolutions at initialisation (by design); give it a trained-like value.
        for module in model.modules():
            if isinstance(module, nn.BatchNorm1d):
                nn.init.ones_(module.weight)
    logits = model(torch.randn(4, 12, 250))
    no_grad = parameters_without_gradient(model, logits)
    assert not no_grad


def test_xresnet_branches_start_as_identity() -> None:
    model = _build(XAIXResNet1d50)
    last_bns = [block.convs[2].bn for layer in (model.layer1, model.layer4) for block in layer]
    assert all(not bn.weight.any() for bn in last_bns)


@pytest.mark.parametrize(("cls", "key", "count", "shape"), MODELS, ids=IDS)
def test_target_layer_has_a_time_axis_and_a_gradient(cls, key, count, shape) -> None:
    # What Grad-CAM and TCAV need: a module found by a plain dotted name, run once per forward,
    # whose output is (batch, channels, time) and carries a gradient back from the logits.
    model = _build(cls)
    assert "sequential" not in model.target_layer and "features.4" not in model.target_layer
    layer = model.get_target_layer()
    assert layer is model.get_submodule(model.target_layer)
    seen: list[torch.Tensor] = []

    def keep(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        output.retain_grad()
        seen.append(output)

    handle = layer.register_forward_hook(keep)
    try:
        model(torch.randn(1, 12, 250))[0, 0].backward()
    finally:
        handle.remove()
    assert len(seen) == 1
    assert tuple(seen[0].shape) == shape
    assert seen[0].grad is not None and seen[0].grad.abs().sum() > 0


@pytest.mark.parametrize(("cls", "key", "count", "shape"), MODELS, ids=IDS)
def test_every_module_runs_at_most_once(cls, key, count, shape) -> None:
    # TCAV hooks every layer (the seed: all 16 LeNet modules); a module reused inside a forward
    # (torchvision's shared ReLU) would hand it several activations.
    model = _shared(cls)
    calls: dict[str, int] = {}
    handles = [
        module.register_forward_hook(lambda *_a, n=name: calls.__setitem__(n, calls.get(n, 0) + 1))
        for name, module in model.named_modules()
        if name
    ]
    with torch.no_grad():
        model(torch.randn(1, 12, 250))
    for handle in handles:
        handle.remove()
    assert max(calls.values()) == 1


@pytest.mark.parametrize(("cls", "key", "count", "shape"), MODELS, ids=IDS)
def test_reproduces_original_logits(cls, key, count, shape) -> None:
    state, x, entry = original_weights_and_input(key)
    expected = torch.tensor(entry["output_logits"], dtype=torch.float64)
    scale = expected.abs().max()
    model = cls().double().eval()
    load_original_state_dict(model, state)
    with torch.no_grad():
        logits = model(x)
    assert (logits - expected).abs().max() <= 1e-10 * scale

    model32 = cls().eval()
    load_original_state_dict(model32, state)
    with torch.no_grad():
        logits32 = model32(x.float()).double()
    assert (logits32 - expected).abs().max() <= 1e-5 * scale


def test_xresnet_names_round_trip() -> None:
    # Error messages name the original's key; every original name maps and maps back.
    for name, _shape in torch_original("xai_xresnet")["state_dict"]:
        ours = _xresnet_head_name(name)
        assert ours is not None, name
        assert _xresnet_original(ours) == name.replace("convpath.0.", "convs."), name


def _original_state(key: str) -> dict[str, torch.Tensor]:
    return original_weights_and_input(key)[0]


BAD = [
    (XAILeNet, "xai_lenet", "sequential.13.weight", "sequential.13.weight", (3, 128)),
    (XAIResNet, "xai_resnet", "layer3.2.conv2.weight", "fc.weight", (3, 512)),
    (
        XAIXResNet1d50,
        "xai_xresnet",
        "features.4.0.idpath.0.0.weight",
        "features.5.1.convs.1.0.weight",
        (64, 64, 3),
    ),
]


@pytest.mark.parametrize(("cls", "key", "missing", "reshaped", "bad_shape"), BAD, ids=IDS)
def test_bad_state_dicts_name_the_key(cls, key, missing, reshaped, bad_shape) -> None:
    good = _original_state(key)
    model = _build(cls)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(KeyError, match=r"unknown.*'head\.extra'"):
        load_original_state_dict(model, {**good, "head.extra": torch.zeros(1)})
    partial = dict(good)
    del partial[missing]
    with pytest.raises(KeyError, match=rf"missing.*'{re.escape(missing)}'"):
        load_original_state_dict(model, partial)
    with pytest.raises(ValueError, match=re.escape(f"{reshaped} has shape {bad_shape}")):
        load_original_state_dict(model, {**good, reshaped: torch.zeros(bad_shape)})
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_wrong_model_type_is_refused() -> None:
    with pytest.raises(TypeError, match="XAILeNet"):
        load_original_state_dict(nn.Linear(1, 1), {})  # type: ignore[arg-type]


def test_lightning_and_data_parallel_prefixes_are_accepted() -> None:
    state = _original_state("xai_lenet")
    for prefix in ("module.", "model."):
        model = XAILeNet().double()
        load_original_state_dict(model, {prefix + k: v for k, v in state.items()})
        assert torch.equal(model.fc2.bias, state["sequential.15.bias"])
