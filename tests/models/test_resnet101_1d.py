"""ResNet101-1D port: structure, state-dict loading and the original's reference logits."""

from __future__ import annotations

import pytest
import torch

from ecgx.models.base import count_parameters
from ecgx.models.resnet101_1d import Bottleneck1d, ResNet101_1d, load_original_state_dict
from tests.helpers.model_checks import parameters_without_gradient
from tests.helpers.reference_weights import original_weights_and_input


@pytest.fixture(scope="module")
def model() -> ResNet101_1d:
    torch.manual_seed(0)
    return ResNet101_1d().eval()


def test_trainable_parameters_match_original(model: ResNet101_1d) -> None:
    assert count_parameters(model) == 156_889_221
    assert model.input_shape == (12, 1000) and model.seed_num_classes == 5


def test_output_feature_and_target_layer_shapes(model: ResNet101_1d) -> None:
    # One forward pass checks all three: the full network is slow on a small CPU.
    layer = model.get_target_layer()
    assert isinstance(layer, Bottleneck1d) and layer is model.layer4[-1]
    seen = []
    handle = layer.register_forward_hook(lambda _m, _i, out: seen.append(out.shape))
    with torch.no_grad():
        features = model.forward_features(torch.randn(1, 12, 1000))
    handle.remove()
    assert seen == [(1, 2048, 32)]
    assert features.shape == (1, 2048)
    with torch.no_grad():
        assert model.forward_head(features).shape == (1, 5)


def test_gradients_reach_every_parameter() -> None:
    # A shallow configuration of the same blocks and a short input keep this fast; the full
    # network differs only in the number of repeated blocks.
    torch.manual_seed(1)
    net = ResNet101_1d(in_channels=3, num_classes=2, layers=(2, 2, 2, 2)).train()
    logits = net(torch.randn(2, 3, 128))
    no_grad = parameters_without_gradient(net, logits)
    assert not no_grad


def test_wrong_leads_is_a_clear_error(model: ResNet101_1d) -> None:
    with pytest.raises(ValueError, match=r"model\.in_channels=12"):
        model(torch.randn(1, 8, 1000))


def test_bad_state_dicts_name_the_key() -> None:
    small = ResNet101_1d(layers=(1, 1, 2, 1))
    good = {k: v for k, v in small.state_dict().items() if "num_batches_tracked" not in k}
    before = {k: v.clone() for k, v in small.state_dict().items()}
    with pytest.raises(KeyError, match=r"unknown.*'fc\.extra'"):
        load_original_state_dict(small, {**good, "fc.extra": torch.zeros(1)})
    missing = dict(good)
    del missing["layer3.1.conv2.weight"]
    with pytest.raises(KeyError, match=r"missing.*'layer3\.1\.conv2\.weight'"):
        load_original_state_dict(small, missing)
    with pytest.raises(ValueError, match=r"fc\.weight has shape \(3, 2048\)"):
        load_original_state_dict(small, {**good, "fc.weight": torch.zeros(3, 2048)})
    for key, value in small.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_data_parallel_prefix_is_accepted() -> None:
    source, target = ResNet101_1d(layers=(1, 1, 1, 1)), ResNet101_1d(layers=(1, 1, 1, 1))
    load_original_state_dict(target, {f"module.{k}": v for k, v in source.state_dict().items()})
    for (name, a), b in zip(source.state_dict().items(), target.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_reproduces_original_logits() -> None:
    state, x, entry = original_weights_and_input("imle_resnet101")
    expected = torch.tensor(entry["output_logits"], dtype=torch.float64)
    net = ResNet101_1d().double().eval()
    # Same names in the same order: the port's state_dict() mirrors the original's.
    assert list(state) == [k for k in net.state_dict() if "num_batches_tracked" not in k]
    load_original_state_dict(net, state)
    with torch.no_grad():
        logits = net(x)
    assert (logits - expected).abs().max() <= 1e-10 * expected.abs().max()
