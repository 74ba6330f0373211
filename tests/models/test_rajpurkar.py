"""Rajpurkar port: the Keras original's stored outputs (its reference vectors), structure, and
the Keras padding / pooling / BatchNorm numerics on small cases by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ecgx.models.base import count_parameters
from ecgx.models.imle_net import SameConv1d
from ecgx.models.rajpurkar import (
    Rajpurkar,
    RajpurkarBlock,
    _keras_layout,
    load_keras_weights,
    same_max_pool1d,
)
from tests.helpers.model_checks import parameters_without_gradient
from tests.helpers.reference_weights import keras_reference as load_keras_reference


@pytest.fixture(scope="module")
def model() -> Rajpurkar:
    torch.manual_seed(0)
    return Rajpurkar().eval()


def test_trainable_parameters_match_keras(model: Rajpurkar) -> None:
    assert count_parameters(model) == 10_475_877


def test_output_feature_and_target_layer_shapes(model: Rajpurkar) -> None:
    x = torch.randn(2, 12, 1000)
    seen = []
    handle = model.get_target_layer().register_forward_hook(
        lambda _m, _i, out: seen.append(tuple(out.shape))
    )
    with torch.no_grad():
        features = model.forward_features(x)
        logits = model(x)
    handle.remove()
    assert features.shape == (2, 1024)
    assert logits.shape == (2, 5)
    torch.testing.assert_close(model.forward_head(features), logits)
    assert seen[0] == (2, 256, 4)  # 1000 → 500 → 250 → 125 → 63 → 32 → 16 → 8 → 4


def test_block_layout_follows_the_original(model: Rajpurkar) -> None:
    blocks = list(model.blocks)
    assert len(blocks) == 16
    assert [b.stride for b in blocks] == [1, 2] * 8
    assert [i for i, b in enumerate(blocks) if b.extra_channels] == [4, 8, 12]
    assert [b.conv1.out_channels for b in blocks] == [32] * 4 + [64] * 4 + [128] * 4 + [256] * 4
    assert blocks[0].bn0 is None and all(b.bn0 is not None for b in blocks[1:])
    assert all(b.dropout.p == 0.2 for b in blocks)


def test_gradients_reach_every_parameter() -> None:
    torch.manual_seed(1)
    net = Rajpurkar().train()
    logits = net(torch.randn(2, 12, 1000))
    no_grad = parameters_without_gradient(net, logits)
    assert not no_grad


def test_wrong_input_is_a_clear_error(model: Rajpurkar) -> None:
    with pytest.raises(ValueError, match=r"model\.input_length=1000.*got 999"):
        model(torch.randn(1, 12, 999))
    with pytest.raises(ValueError, match=r"model\.in_channels=12"):
        model(torch.randn(1, 8, 1000))


def test_other_configuration_builds_and_runs() -> None:
    net = Rajpurkar(in_channels=3, num_classes=2, input_length=250, subsample_lengths=[1, 2, 1])
    assert net.final_length == 125
    assert net.eval()(torch.randn(2, 3, 250)).shape == (2, 2)


def _keras_same_conv(x: np.ndarray, kernel: np.ndarray, stride: int) -> np.ndarray:
    """One-channel Keras "same" convolution written out: out = ceil(L / s) samples,
    total = max((out - 1)·s + k - L, 0) zeros, ⌊total / 2⌋ of them on the left."""
    length, size = len(x), len(kernel)
    out = math.ceil(length / stride)
    total = max((out - 1) * stride + size - length, 0)
    padded = np.concatenate([np.zeros(total // 2), x, np.zeros(total - total // 2)])
    return np.array([padded[j * stride : j * stride + size] @ kernel for j in range(out)])


@pytest.mark.parametrize(("length", "stride"), [(11, 2), (10, 2), (12, 1), (5, 2)])
def test_k16_same_convolution_matches_the_keras_rule(length: int, stride: int) -> None:
    rng = np.random.default_rng(length + stride)
    x, kernel = rng.normal(size=length), rng.normal(size=16)
    conv = SameConv1d(1, 1, 16, stride=stride).double()
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(kernel).view(1, 1, 16))
        conv.bias.zero_()
    got = conv(torch.from_numpy(x).view(1, 1, -1))[0, 0].detach().numpy()
    np.testing.assert_allclose(got, _keras_same_conv(x, kernel, stride), rtol=0, atol=1e-12)


def test_k16_stride2_padding_by_hand() -> None:
    # L = 11, stride 2: 6 outputs, total = 5·2 + 16 - 11 = 15 → 7 left, 8 right. With only the
    # first tap set, out[j] = x[2j - 7] (0-based, zero where that is padding), j = 0..5:
    # [0, 0, 0, 0, x[1], x[3]] = [0, 0, 0, 0, 2, 4] for x = 1..11. A symmetric or right-heavy
    # padding would give different values.
    conv = SameConv1d(1, 1, 16, stride=2).double()
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
        conv.weight[0, 0, 0] = 1.0
    x = torch.arange(1, 12, dtype=torch.float64).view(1, 1, 11)
    assert conv(x)[0, 0].tolist() == [0, 0, 0, 0, 2, 4]
    # Last tap instead: out[j] = x[2j + 8] → x8, x10 then padding: [9, 11, 0, 0, 0, 0].
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 15] = 1.0
    assert conv(x)[0, 0].tolist() == [9, 11, 0, 0, 0, 0]
    # At L = 10 the total is 14 (7 on each side): the last tap still gives x[2j + 8], which
    # now leaves the signal after j = 0.
    assert conv(x[..., :10])[0, 0].tolist() == [9, 0, 0, 0, 0]


def test_same_max_pool_keeps_a_partial_last_window() -> None:
    # Keras pads the right of an odd length; padding never wins, even against negatives.
    x = torch.tensor([[[1.0, 5.0, 2.0, -3.0, -4.0]]])
    assert same_max_pool1d(x, 2)[0, 0].tolist() == [5.0, 2.0, -4.0]
    assert torch.equal(same_max_pool1d(x, 1), x)


def test_widening_block_shortcut_is_pool_then_zero_channels() -> None:
    block = RajpurkarBlock(2, 4, 16, stride=2, dropout=0.2, preactivate=True).eval()
    with torch.no_grad():
        block.conv2.weight.zero_()  # silences the body: out = shortcut
    x = torch.tensor([[[1.0, -2.0, 3.0, -4.0, 5.0], [-1.0, -6.0, 0.5, 2.0, -7.0]]])
    expected = torch.tensor([[[1.0, 3.0, 5.0], [-1.0, 2.0, -7.0], [0, 0, 0], [0, 0, 0]]])
    assert torch.equal(block(x), expected)


def test_batch_norm_is_keras_in_eval_and_in_training(model: Rajpurkar) -> None:
    keras_bn = model.blocks[1].bn0
    assert keras_bn.eps == 1e-3 and keras_bn.momentum == pytest.approx(0.01)
    bn = type(keras_bn)(3, eps=keras_bn.eps, momentum=keras_bn.momentum).double()
    gamma, beta = [2.0, 0.5, -1.0], [0.1, -0.2, 0.3]
    mean, var = [0.5, -1.0, 0.0], [4.0, 0.25, 1e-3]
    with torch.no_grad():
        bn.weight.copy_(torch.tensor(gamma))
        bn.bias.copy_(torch.tensor(beta))
        bn.running_mean.copy_(torch.tensor(mean))
        bn.running_var.copy_(torch.tensor(var))
    x = torch.tensor([[[1.0, 2.0], [0.0, -1.0], [0.1, -0.1]]], dtype=torch.float64)
    # gamma·(x - mean)/sqrt(var + 0.001) + beta, by hand: sqrt(4.001), sqrt(0.251), sqrt(0.002)
    expected = [
        [2.0 * 0.5 / 4.001**0.5 + 0.1, 2.0 * 1.5 / 4.001**0.5 + 0.1],
        [0.5 * 1.0 / 0.251**0.5 - 0.2, 0.0 - 0.2],
        [-1.0 * 0.1 / 0.002**0.5 + 0.3, -1.0 * -0.1 / 0.002**0.5 + 0.3],
    ]
    torch.testing.assert_close(bn.eval()(x)[0], torch.tensor(expected, dtype=torch.float64))
    # Training: running mean ← 0.99·old + 0.01·batch mean (Keras momentum 0.99).
    bn.train()(x)
    batch_mean = torch.tensor([1.5, -0.5, 0.0], dtype=torch.float64)
    torch.testing.assert_close(bn.running_mean, 0.99 * torch.tensor(mean) + 0.01 * batch_mean)


def test_he_normal_initialisation() -> None:
    torch.manual_seed(3)
    # the last block's second convolution: 256·256·16 weights, fan_in 4096
    conv = RajpurkarBlock(256, 256, 16, stride=1, dropout=0.2, preactivate=True).conv2
    std = math.sqrt(2 / 4096)
    assert conv.weight.std().item() == pytest.approx(std, rel=0.02)
    assert conv.weight.abs().max().item() <= 2 * std / 0.87962566103423978 + 1e-7
    assert not conv.bias.any()


def _as_keras(net: Rajpurkar) -> dict[str, np.ndarray]:
    """The model's weights as a numbered Keras mapping (inverting each layout converter)."""
    weights = {}
    for index, (kind, _, tensor, _) in enumerate(_keras_layout(net)):
        array = tensor.detach().numpy()
        if array.ndim == 3:
            array = array.transpose(2, 1, 0)  # (out, in, k) → Keras (k, in, out)
        elif array.ndim == 2:
            array = array.T
        weights[f"w{index:03d}:layer_{index}/{kind}:0"] = array
    return weights


def test_reproduces_keras_reference() -> None:
    # The IMLE-Net repository's build_rajpurkar (Keras 2), every BN statistic and bias moved off
    # its default: a port that drops or mis-pads anything misses by 1e-3 or more.
    reference = load_keras_reference("rajpurkar_keras_reference.npz")
    net = Rajpurkar()
    load_keras_weights(net, reference)
    net.eval()
    x = torch.from_numpy(reference["input"][..., 0])
    with torch.no_grad():
        got = torch.sigmoid(net(x)).numpy()
    np.testing.assert_allclose(got, reference["output_sigmoid"], rtol=0, atol=1e-5)


def test_keras_layout_of_the_seed_model(model: Rajpurkar) -> None:
    # stem conv 2 + BN 4, per block BN 4 (not block 0) + 2 × conv 2 + BN 4, final BN 4, dense 2
    layout = _keras_layout(model)
    assert len(layout) == 6 + 16 * 8 + 15 * 4 + 4 + 2 == 200
    # block 0 (conv1, bn1, conv2), then block 1 opens with its pre-activation BN
    block0_then_bn0 = ["kernel", "bias", *GAMMA_TO_VAR, "kernel", "bias", *GAMMA_TO_VAR]
    assert [kind for kind, *_ in layout[6:18]] == block0_then_bn0
    assert [name for _, name, *_ in layout[14:16]] == ["blocks.1.bn0.weight", "blocks.1.bn0.bias"]


GAMMA_TO_VAR = ["gamma", "beta", "moving_mean", "moving_variance"]
# A short model that still has every kind of block: plain, strided, pre-activated, widening.
SMALL = {"input_length": 64, "subsample_lengths": [1, 2, 1, 2, 1]}


def test_keras_weight_round_trip_and_rejections() -> None:
    torch.manual_seed(4)
    source = Rajpurkar(**SMALL)
    with torch.no_grad():
        for buffer in source.buffers():
            if buffer.is_floating_point():
                buffer.uniform_(0.5, 1.5)  # non-trivial moving statistics
    keras = _as_keras(source)
    assert len(keras) == 6 + 5 * 8 + 4 * 4 + 4 + 2
    target = Rajpurkar(**SMALL)
    load_keras_weights(target, keras)
    x = torch.randn(2, 12, 64)
    with torch.no_grad():
        torch.testing.assert_close(target.eval()(x), source.eval()(x), rtol=0, atol=0)

    fresh = Rajpurkar(**SMALL)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    arrays = list(keras.values())
    with pytest.raises(ValueError, match="got 67 Keras weights.*needs 68"):
        load_keras_weights(fresh, arrays[:-1])
    with pytest.raises(ValueError, match=r"Keras weight 66 has shape \(5, 1024\).*head\.weight"):
        load_keras_weights(fresh, [*arrays[:-2], arrays[-2].T, arrays[-1]])
    renamed = dict(keras)
    renamed["w002:layer_2/beta:0"] = renamed.pop("w002:layer_2/gamma:0")
    with pytest.raises(ValueError, match=r"'beta', expected a 'gamma' for stem_bn\.weight"):
        load_keras_weights(fresh, renamed)
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, before[key]), key
