"""SE-ResNet18 port: structure, demographics, windowed evaluation and the reference logits."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ecgx.models.base import count_parameters
from ecgx.models.seresnet18 import (
    SEBasicBlock1d,
    SEResNet18,
    load_original_state_dict,
    sliding_windows,
)
from tests.helpers.model_checks import parameters_without_gradient
from tests.helpers.reference_weights import original_weights_and_input


@pytest.fixture(scope="module")
def model() -> SEResNet18:
    torch.manual_seed(0)
    return SEResNet18().eval()


def test_trainable_parameters_match_original(model: SEResNet18) -> None:
    assert count_parameters(model) == 8_837_060
    assert model.input_shape == (12, 4096) and model.seed_num_classes == 24
    assert model.extra_inputs == ("demographics",)


def test_output_and_feature_shapes(model: SEResNet18) -> None:
    x, demo = torch.randn(2, 12, 4096), torch.rand(2, 5)
    with torch.no_grad():
        features = model.forward_features(x)
        logits = model(x, demographics=demo)
    assert features.shape == (2, 512)
    assert logits.shape == (2, 24)
    torch.testing.assert_close(model.forward_head(features, demographics=demo), logits)


def test_works_without_demographics(model: SEResNet18) -> None:
    x = torch.randn(2, 12, 2048)
    with torch.no_grad():
        plain = model(x)
        zeros = model(x, demographics=torch.zeros(2, 5))
        other = model(x, demographics=torch.ones(2, 5))
    torch.testing.assert_close(plain, zeros)
    assert not torch.allclose(plain, other)


def test_bad_demographics_shape_is_a_clear_error(model: SEResNet18) -> None:
    with pytest.raises(ValueError, match=r"demographics_dim=5"):
        model(torch.randn(2, 12, 1024), demographics=torch.zeros(2, 3))


def test_target_layer_is_last_block(model: SEResNet18) -> None:
    layer = model.get_target_layer()
    assert isinstance(layer, SEBasicBlock1d) and layer is model.layer4[-1]
    seen = []
    handle = layer.register_forward_hook(lambda _m, _i, out: seen.append(out.shape))
    with torch.no_grad():
        model(torch.randn(1, 12, 4096))
    handle.remove()
    assert seen == [(1, 512, 128)]


def test_gradients_reach_every_parameter() -> None:
    torch.manual_seed(1)
    net = SEResNet18().train()
    logits = net(torch.randn(2, 12, 512), demographics=torch.rand(2, 5))
    no_grad = parameters_without_gradient(net, logits)
    assert not no_grad


def test_sliding_windows_follow_the_original() -> None:
    # P = ceil((L - 4096) / 3840) + 1, stride = int((L - 4096) / (P - 1)); window 0 is whole.
    assert sliding_windows(4096) == [(0, 4096)]
    assert sliding_windows(3000) == [(0, 3000)]
    assert sliding_windows(5000) == [(0, 5000), (904, 5000)]
    assert sliding_windows(10000) == [(0, 10000), (2952, 7048), (5904, 10000)]
    with pytest.raises(ValueError):
        sliding_windows(5000, window=256, overlap=256)


def test_forward_windows_averages_sigmoids(model: SEResNet18) -> None:
    torch.manual_seed(2)
    x, demo = torch.randn(1, 12, 10000), torch.rand(1, 5)
    with torch.no_grad():
        averaged = model.forward_windows(x, demographics=demo)
        by_hand = sum(
            torch.sigmoid(model(x[..., a:b], demographics=demo)) for a, b in sliding_windows(10000)
        )
        short = model.forward_windows(x[..., :3000])
        padded = torch.sigmoid(model(nn.functional.pad(x[..., :3000], (0, 1096))))
    torch.testing.assert_close(averaged, by_hand / 3)
    torch.testing.assert_close(short, padded)


def test_bad_state_dicts_name_the_key(model: SEResNet18) -> None:
    good = {k: v for k, v in SEResNet18().state_dict().items() if "num_batches_tracked" not in k}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(KeyError, match=r"unknown.*'fc2\.weight'"):
        load_original_state_dict(model, {**good, "fc2.weight": torch.zeros(1)})
    missing = dict(good)
    del missing["layer3.1.se.fc.2.weight"]
    with pytest.raises(KeyError, match=r"missing.*'layer3\.1\.se\.fc\.2\.weight'"):
        load_original_state_dict(model, missing)
    with pytest.raises(ValueError, match=r"fc1\.weight has shape \(10, 3\)"):
        load_original_state_dict(model, {**good, "fc1.weight": torch.zeros(10, 3)})
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_data_parallel_prefix_is_accepted() -> None:
    source, target = SEResNet18(), SEResNet18()
    load_original_state_dict(target, {f"module.{k}": v for k, v in source.state_dict().items()})
    for (name, a), b in zip(source.state_dict().items(), target.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_reproduces_original_logits() -> None:
    state, x, entry = original_weights_and_input("seresnet18_ag")
    expected = torch.tensor(entry["output_logits"], dtype=torch.float64)
    demo = torch.tensor(entry["extra_input"], dtype=torch.float64)
    net = SEResNet18().double().eval()
    assert list(state) == [k for k in net.state_dict() if "num_batches_tracked" not in k]
    load_original_state_dict(net, state)
    with torch.no_grad():
        logits = net(x, demographics=demo)
    scale = expected.abs().max()
    assert (logits - expected).abs().max() <= 1e-10 * scale

    net32 = SEResNet18().eval()
    load_original_state_dict(net32, state)
    with torch.no_grad():
        logits32 = net32(x.float(), demographics=demo.float()).double()
    assert (logits32 - expected).abs().max() <= 1e-5 * scale
