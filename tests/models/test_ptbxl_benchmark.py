"""PTB-XL benchmark ports (xresnet1d101, inception1d, resnet1d_wang): structure, state-dict
loading and the originals' reference logits."""

from __future__ import annotations

import pytest
import torch

from ecgx.models.base import ECGModel, count_parameters
from ecgx.models.ptbxl_benchmark import (
    Inception1d,
    ResNet1dWang,
    XResNet1d101,
    load_original_state_dict,
)
from tests.helpers.model_checks import parameters_without_gradient
from tests.helpers.reference_weights import original_weights_and_input

# (class, reference key, trainable parameters at 71 classes, pooled features, last map at 250)
MODELS = {
    "xresnet1d101": (XResNet1d101, "ptbxl_xresnet1d101", 1_880_775, 512, (256, 8)),
    "inception1d": (Inception1d, "ptbxl_inception1d", 516_167, 256, (128, 250)),
    "resnet1d_wang": (ResNet1dWang, "ptbxl_resnet1d_wang", 481_863, 256, (128, 63)),
}
NAMES = sorted(MODELS)


@pytest.fixture(scope="module")
def models() -> dict[str, ECGModel]:
    torch.manual_seed(0)
    return {name: MODELS[name][0](num_classes=71).eval() for name in NAMES}


@pytest.mark.parametrize("name", NAMES)
def test_seed_configuration_and_parameter_count(name: str, models: dict[str, ECGModel]) -> None:
    model = models[name]
    assert model.input_shape == (12, 250)
    assert model.seed_num_classes == 71
    assert count_parameters(model) == MODELS[name][2]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("samples", [250, 1000])
def test_output_and_feature_shapes(name: str, samples: int, models: dict[str, ECGModel]) -> None:
    model = models[name]
    batch = 2 if samples == 250 else 1  # one 10 s record is enough, and keeps this fast
    x = torch.randn(batch, 12, samples)
    with torch.no_grad():
        features = model.forward_features(x)
        logits = model(x)
    assert features.shape == (batch, MODELS[name][3])
    assert logits.shape == (batch, 71)
    torch.testing.assert_close(model.forward_head(features), logits)


@pytest.mark.parametrize("name", NAMES)
def test_target_layer_is_last_feature_map(name: str, models: dict[str, ECGModel]) -> None:
    model = models[name]
    seen = []
    handle = model.get_target_layer().register_forward_hook(
        lambda _m, _i, out: seen.append(out.shape)
    )
    with torch.no_grad():
        model(torch.randn(1, 12, 250))
    handle.remove()
    assert seen == [(1, *MODELS[name][4])]


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_parameter(name: str) -> None:
    torch.manual_seed(1)
    net = MODELS[name][0](in_channels=3, num_classes=4).train()
    logits = net(torch.randn(4, 3, 250))
    no_grad = parameters_without_gradient(net, logits)
    assert not no_grad


@pytest.mark.parametrize("name", NAMES)
def test_reproduces_original_logits(name: str) -> None:
    cls, key, *_ = MODELS[name]
    state, x, entry = original_weights_and_input(key)
    expected = torch.tensor(entry["output_logits"], dtype=torch.float64)
    net = cls(num_classes=71).double().eval()
    load_original_state_dict(net, state)
    with torch.no_grad():
        logits = net(x)
    scale = expected.abs().max()
    assert (logits - expected).abs().max() <= 1e-10 * scale

    net32 = cls(num_classes=71).eval()
    load_original_state_dict(net32, state)
    with torch.no_grad():
        logits32 = net32(x.float()).double()
    assert (logits32 - expected).abs().max() <= 1e-5 * scale


def test_xresnet_convpath_alias_wins_over_convs() -> None:
    # The original registers each block's convs twice; torch loads convpath.0 last.
    state, _, _ = original_weights_and_input("ptbxl_xresnet1d101")
    net = XResNet1d101(num_classes=71).double()
    reordered = dict(sorted(state.items(), key=lambda item: ".convpath." not in item[0]))
    load_original_state_dict(net, reordered)
    torch.testing.assert_close(
        net.stages[0][0].convs[1][0].weight, state["4.0.convpath.0.1.0.weight"], rtol=0, atol=0
    )


def _wang_original_names(model: ResNet1dWang) -> dict[str, torch.Tensor]:
    """The model's state dict under the original's names (no reference folder needed)."""
    renamed = {}
    for key, value in model.state_dict().items():
        top, rest = key.split(".", 1)
        if top == "stem":
            renamed[rest] = value
        elif top == "stages":
            index, tail = rest.split(".", 1)
            renamed[f"{int(index) + 3}.{tail}"] = value
        else:
            index, tail = rest.split(".", 1)
            renamed[f"6.{int(index) + 2}.{tail}"] = value
    return renamed


def test_original_names_round_trip() -> None:
    torch.manual_seed(2)
    source, target = ResNet1dWang(num_classes=71), ResNet1dWang(num_classes=71)
    load_original_state_dict(target, _wang_original_names(source))
    for (name, a), b in zip(source.state_dict().items(), target.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_bad_state_dicts_name_the_key() -> None:
    model = ResNet1dWang(num_classes=71)
    state = _wang_original_names(ResNet1dWang(num_classes=71))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(KeyError, match=r"unknown.*'6\.9\.weight'"):
        load_original_state_dict(model, {**state, "6.9.weight": torch.zeros(1)})
    missing = dict(state)
    del missing["4.0.downsample.0.weight"]
    with pytest.raises(KeyError, match=r"missing.*'stages\.1\.0\.downsample\.0\.weight'"):
        load_original_state_dict(model, missing)
    with pytest.raises(ValueError, match=r"6\.8\.weight has shape \(3, 128\)"):
        load_original_state_dict(model, {**state, "6.8.weight": torch.zeros(3, 128)})
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_data_parallel_prefix_is_accepted() -> None:
    torch.manual_seed(3)
    source, target = ResNet1dWang(num_classes=71), ResNet1dWang(num_classes=71)
    state = _wang_original_names(source)
    load_original_state_dict(target, {f"module.{k}": v for k, v in state.items()})
    for (name, a), b in zip(source.state_dict().items(), target.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_invalid_arguments_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="depth=4"):
        Inception1d(depth=4)
    with pytest.raises(ValueError, match="layers="):
        XResNet1d101(layers=(3, 4), block_widths=(64, 64, 64))
    with pytest.raises(ValueError, match="layers="):
        ResNet1dWang(layers=(1, 0, 1))
