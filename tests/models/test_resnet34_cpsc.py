"""CPSC ResNet34-1D port: structure, state-dict loading and the original's reference logits."""

from __future__ import annotations

import pytest
import torch

from ecgx.models.base import count_parameters
from ecgx.models.resnet34_cpsc import BasicBlock1d, ResNet34CPSC, load_original_state_dict
from tests.helpers.model_checks import parameters_without_gradient
from tests.helpers.reference_weights import original_weights_and_input


@pytest.fixture(scope="module")
def model() -> ResNet34CPSC:
    torch.manual_seed(0)
    return ResNet34CPSC().eval()


def test_trainable_parameters_match_original(model: ResNet34CPSC) -> None:
    assert count_parameters(model) == 16_610_185
    assert model.input_shape == (12, 15000) and model.seed_num_classes == 9


def test_lead_subsets_only_resize_the_stem() -> None:
    # The study trains on lead subsets: only conv1's 64 × leads × 15 weights change.
    assert count_parameters(ResNet34CPSC(in_channels=1)) == 16_610_185 - 11 * 64 * 15


def test_output_and_feature_shapes(model: ResNet34CPSC) -> None:
    x = torch.randn(2, 12, 3000)
    with torch.no_grad():
        features = model.forward_features(x)
        logits = model(x)
    assert features.shape == (2, 1024)
    assert logits.shape == (2, 9)
    torch.testing.assert_close(model.forward_head(features), logits)


def test_target_layer_is_last_block(model: ResNet34CPSC) -> None:
    layer = model.get_target_layer()
    assert isinstance(layer, BasicBlock1d) and layer is model.layer4[-1]
    seen = []
    handle = layer.register_forward_hook(lambda _m, _i, out: seen.append(out.shape))
    with torch.no_grad():
        model(torch.randn(1, 12, 15000))
    handle.remove()
    assert seen == [(1, 512, 469)]


def test_gradients_reach_every_parameter() -> None:
    torch.manual_seed(1)
    net = ResNet34CPSC().train()
    logits = net(torch.randn(2, 12, 512))
    no_grad = parameters_without_gradient(net, logits)
    assert not no_grad


def test_wrong_leads_is_a_clear_error(model: ResNet34CPSC) -> None:
    with pytest.raises(ValueError, match=r"model\.in_channels=12"):
        model(torch.randn(1, 2, 1000))


def test_bad_state_dicts_name_the_key(model: ResNet34CPSC) -> None:
    good = {k: v for k, v in ResNet34CPSC().state_dict().items() if "num_batches_tracked" not in k}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(KeyError, match=r"unknown.*'fc\.extra'"):
        load_original_state_dict(model, {**good, "fc.extra": torch.zeros(1)})
    missing = dict(good)
    del missing["layer2.0.downsample.1.running_var"]
    with pytest.raises(KeyError, match=r"missing.*'layer2\.0\.downsample\.1\.running_var'"):
        load_original_state_dict(model, missing)
    with pytest.raises(ValueError, match=r"fc\.weight has shape \(9, 512\)"):
        load_original_state_dict(model, {**good, "fc.weight": torch.zeros(9, 512)})
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_data_parallel_prefix_is_accepted() -> None:
    source, target = ResNet34CPSC(), ResNet34CPSC()
    load_original_state_dict(target, {f"module.{k}": v for k, v in source.state_dict().items()})
    for (name, a), b in zip(source.state_dict().items(), target.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_reproduces_original_logits() -> None:
    state, x, entry = original_weights_and_input("cpsc_resnet34_5000")
    expected = torch.tensor(entry["output_logits"], dtype=torch.float64)
    net = ResNet34CPSC().double().eval()
    assert list(state) == [k for k in net.state_dict() if "num_batches_tracked" not in k]
    load_original_state_dict(net, state)
    with torch.no_grad():
        logits = net(x)
    scale = expected.abs().max()
    assert (logits - expected).abs().max() <= 1e-10 * scale

    net32 = ResNet34CPSC().eval()
    load_original_state_dict(net32, state)
    with torch.no_grad():
        logits32 = net32(x.float()).double()
    assert (logits32 - expected).abs().max() <= 1e-5 * scale
