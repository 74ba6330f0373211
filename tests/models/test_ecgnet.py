"""ECGNet port: structure, state-dict loading and the original's reference logits."""

from __future__ import annotations

import pytest
import torch

from ecgx.models.base import count_parameters
from ecgx.models.ecgnet import ECGNet, ECGNetResBlock, load_original_state_dict
from tests.helpers.model_checks import parameters_without_gradient
from tests.helpers.reference_weights import original_weights_and_input


@pytest.fixture(scope="module")
def model() -> ECGNet:
    torch.manual_seed(0)
    return ECGNet().eval()


def test_trainable_parameters_match_original(model: ECGNet) -> None:
    assert count_parameters(model) == 1_031_949


def test_output_and_feature_shapes(model: ECGNet) -> None:
    x = torch.randn(2, 12, 1000)
    with torch.no_grad():
        features = model.forward_features(x)
        logits = model(x)
    assert features.shape == (2, 168)
    assert logits.shape == (2, 5)
    torch.testing.assert_close(model.forward_head(features), logits)


def test_gradients_reach_every_parameter() -> None:
    torch.manual_seed(1)
    net = ECGNet().train()
    logits = net(torch.randn(2, 12, 1000))
    no_grad = parameters_without_gradient(net, logits)
    assert not no_grad


def test_target_layer_is_last_residual_block(model: ECGNet) -> None:
    layer = model.get_target_layer()
    assert isinstance(layer, ECGNetResBlock)
    assert layer is model.block[-1]
    seen = []
    handle = layer.register_forward_hook(lambda _m, _i, out: seen.append(out.shape))
    with torch.no_grad():
        model(torch.randn(1, 12, 1000))
    handle.remove()
    assert seen == [(1, 64, 15)]


def test_wrong_input_shape_is_a_clear_error(model: ECGNet) -> None:
    with pytest.raises(ValueError, match=r"model\.input_length=1000"):
        model(torch.randn(1, 12, 900))


def test_other_lengths_size_the_head() -> None:
    net = ECGNet(in_channels=3, num_classes=2, input_length=2500).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 3, 2500)).shape == (1, 2)


def test_bad_state_dicts_name_the_key(model: ECGNet) -> None:
    good = {k: v for k, v in ECGNet().state_dict().items() if "num_batches_tracked" not in k}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(KeyError, match=r"unknown.*'fc\.extra'"):
        load_original_state_dict(model, {**good, "fc.extra": torch.zeros(1)})
    missing = dict(good)
    del missing["block.7.downsample.0.weight"]
    with pytest.raises(KeyError, match=r"missing.*'block\.7\.downsample\.0\.weight'"):
        load_original_state_dict(model, missing)
    with pytest.raises(ValueError, match=r"fc\.weight has shape \(3, 168\)"):
        load_original_state_dict(model, {**good, "fc.weight": torch.zeros(3, 168)})
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_data_parallel_prefix_is_accepted() -> None:
    source, target = ECGNet(), ECGNet()
    load_original_state_dict(target, {f"module.{k}": v for k, v in source.state_dict().items()})
    for (name, a), b in zip(source.state_dict().items(), target.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_reproduces_original_logits() -> None:
    state, x, entry = original_weights_and_input("ecgnet")
    expected = torch.tensor(entry["output_logits"], dtype=torch.float64)
    net = ECGNet().double().eval()
    load_original_state_dict(net, state)
    with torch.no_grad():
        logits = net(x)
    scale = expected.abs().max()
    assert (logits - expected).abs().max() <= 1e-10 * scale

    net32 = ECGNet().eval()
    load_original_state_dict(net32, state)
    with torch.no_grad():
        logits32 = net32(x.float()).double()
    assert (logits32 - expected).abs().max() <= 1e-5 * scale


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (cuDNN LSTM)")
def test_eval_mode_backward_on_cuda() -> None:
    # cuDNN's LSTM refuses backward in eval mode; explainers need it, the model falls back.
    net = ECGNet().cuda().eval()
    x = torch.randn(2, 12, 1000, device="cuda", requires_grad=True)
    net(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
