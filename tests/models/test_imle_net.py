"""IMLE-Net port: structure, Keras-faithful numerics and the Keras reference vectors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ecgx.models.base import count_parameters
from ecgx.models.imle_net import (
    BeatResidualBlock,
    IMLENet,
    KerasBiLSTM,
    SameConv1d,
    load_keras_weights,
)
from tests.helpers.model_checks import parameters_without_gradient
from tests.helpers.reference_weights import keras_reference as load_keras_reference
from tests.helpers.reference_weights import keras_weight_list

KERAS_REFERENCE = "imle_keras_reference.npz"


@pytest.fixture(scope="module")
def model() -> IMLENet:
    torch.manual_seed(0)
    return IMLENet().eval()


@pytest.fixture(scope="module")
def keras_reference() -> dict[str, np.ndarray]:
    return load_keras_reference(KERAS_REFERENCE)


def test_trainable_parameters_match_keras(model: IMLENet) -> None:
    # 748,517 Keras weights minus 1,792 BN moving statistics (buffers here)
    assert count_parameters(model) == 746_725


def test_output_and_attention_shapes(model: IMLENet) -> None:
    x = torch.randn(2, 12, 1000)
    with torch.no_grad():
        logits, alphas = model.forward_with_attention(x)
        features = model.forward_features(x)
        assert torch.allclose(model(x), logits)
    assert logits.shape == (2, 5)
    assert features.shape == (2, 128)
    assert alphas["beat"].shape == (2, 12, 20, 13)
    assert alphas["rhythm"].shape == (2, 12, 20)
    assert alphas["channel"].shape == (2, 12)
    for alpha in alphas.values():
        torch.testing.assert_close(alpha.sum(-1), torch.ones(alpha.shape[:-1]))


def test_head_can_be_replaced_for_fine_tuning(model: IMLENet) -> None:
    tuned = IMLENet()
    tuned.load_state_dict(model.state_dict())
    tuned.head = nn.Linear(128, 3)
    assert tuned.eval()(torch.randn(1, 12, 1000)).shape == (1, 3)


def test_gradients_reach_every_parameter() -> None:
    torch.manual_seed(1)
    net = IMLENet().train()
    logits = net(torch.randn(2, 12, 1000))
    no_grad = parameters_without_gradient(net, logits)
    assert not no_grad


def test_target_layer_is_last_beat_block(model: IMLENet) -> None:
    layer = model.get_target_layer()
    assert isinstance(layer, BeatResidualBlock)
    assert layer is model.beat_encoder.blocks[-1]
    seen = []
    handle = layer.register_forward_hook(lambda _m, _i, out: seen.append(out.shape))
    with torch.no_grad():
        model(torch.randn(2, 12, 1000))
    handle.remove()
    assert seen == [(2 * 12 * 20, 128, 13)]


def test_wrong_input_length_is_a_clear_error(model: IMLENet) -> None:
    with pytest.raises(ValueError, match=r"model\.input_length=1000.*got 999"):
        model(torch.randn(1, 12, 999))
    with pytest.raises(ValueError, match=r"model\.in_channels=12"):
        model(torch.randn(1, 8, 1000))


def test_length_must_be_whole_windows() -> None:
    with pytest.raises(ValueError, match=r"input_length=1010.*beat_length=50"):
        IMLENet(input_length=1010)


def test_other_configuration_builds_and_runs() -> None:
    net = IMLENet(in_channels=3, num_classes=2, input_length=500, beat_length=100, filters=[16, 32])
    logits, alphas = net.eval().forward_with_attention(torch.randn(2, 3, 500))
    assert logits.shape == (2, 2)
    assert alphas["beat"].shape == (2, 3, 5, 50)


def test_same_padding_puts_the_odd_sample_on_the_right() -> None:
    # Kernel 8, stride 1: TensorFlow pads 3 left and 4 right. With a one-hot kernel the output
    # is the input shifted by (tap - 3).
    conv = SameConv1d(1, 2, 8).double()
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
        conv.weight[0, 0, 0] = 1.0  # first tap: out[t] = x[t - 3]
        conv.weight[1, 0, 7] = 1.0  # last tap: out[t] = x[t + 4]
    x = torch.arange(1, 51, dtype=torch.float64).view(1, 1, 50)
    out = conv(x)[0]
    assert out.shape == (2, 50)
    zeros = torch.zeros(4, dtype=torch.float64)
    torch.testing.assert_close(out[0], torch.cat((zeros[:3], x[0, 0, :47])))
    torch.testing.assert_close(out[1], torch.cat((x[0, 0, 4:], zeros)))


def test_strided_same_padding_lengths() -> None:
    x = torch.randn(3, 4, 50)
    assert SameConv1d(4, 4, 8, stride=2)(x).shape[-1] == 25
    assert SameConv1d(4, 4, 8, stride=2)(x[..., :25]).shape[-1] == 13
    assert SameConv1d(4, 4, 1, stride=2)(x[..., :25]).shape[-1] == 13


def test_keras_bilstm_equals_bidirectional_lstm_with_one_bias() -> None:
    torch.manual_seed(2)
    ours = KerasBiLSTM(6, 5).double()
    reference = nn.LSTM(6, 5, batch_first=True, bidirectional=True).double()
    with torch.no_grad():
        ours.bias.normal_()
        for direction, suffix in enumerate(("l0", "l0_reverse")):
            getattr(reference, f"weight_ih_{suffix}").copy_(ours.weight_ih[direction])
            getattr(reference, f"weight_hh_{suffix}").copy_(ours.weight_hh[direction])
            getattr(reference, f"bias_ih_{suffix}").copy_(ours.bias[direction])
            getattr(reference, f"bias_hh_{suffix}").zero_()
    x = torch.randn(4, 7, 6, dtype=torch.float64)
    torch.testing.assert_close(ours(x), reference(x)[0])
    assert count_parameters(ours) == 2 * 4 * 5 * (6 + 5 + 1)


def test_reproduces_keras_reference(keras_reference: dict[str, np.ndarray]) -> None:
    net = IMLENet()
    load_keras_weights(net, keras_reference)
    net.eval()
    x = torch.from_numpy(keras_reference["input"][..., 0])
    with torch.no_grad():
        logits, alphas = net.forward_with_attention(x)
    expected = {
        "output": keras_reference["output_sigmoid"],
        "beat": keras_reference["beat_att_alpha"].reshape(4, 12, 20, 13),
        "rhythm": keras_reference["rhythm_att_alpha"].reshape(4, 12, 20),
        "channel": keras_reference["channel_att_alpha"].reshape(4, 12),
    }
    got = {"output": torch.sigmoid(logits), **alphas}
    for key, value in expected.items():
        np.testing.assert_allclose(got[key].numpy(), value, rtol=0, atol=1e-5, err_msg=key)


def test_keras_weights_as_plain_list(keras_reference: dict[str, np.ndarray]) -> None:
    from_mapping, from_list = IMLENet(), IMLENet()
    load_keras_weights(from_mapping, keras_reference)
    load_keras_weights(from_list, keras_weight_list(keras_reference))
    for (name, a), b in zip(
        from_mapping.state_dict().items(), from_list.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name


def test_bad_keras_weights_are_rejected_before_copying(
    keras_reference: dict[str, np.ndarray],
) -> None:
    net = IMLENet()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    weights = keras_weight_list(keras_reference)
    with pytest.raises(ValueError, match="got 94 Keras weights.*needs 95"):
        load_keras_weights(net, weights[:-1])
    transposed = [*weights[:-2], weights[-2].T, weights[-1]]
    with pytest.raises(ValueError, match=r"Keras weight 93 has shape \(5, 128\).*head\.weight"):
        load_keras_weights(net, transposed)
    # gamma and beta of the first BatchNorm exchanged: same shapes, caught by the names
    renamed = {k: v for k, v in keras_reference.items() if not k.startswith(("w004", "w005"))}
    renamed["w004:batch_normalization/beta:0"] = keras_reference["w005:batch_normalization/beta:0"]
    renamed["w005:batch_normalization/gamma:0"] = keras_reference[
        "w004:batch_normalization/gamma:0"
    ]
    with pytest.raises(ValueError, match=r"'beta', expected a 'gamma'"):
        load_keras_weights(net, renamed)
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key]), key


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_eval_mode_backward_on_cuda() -> None:
    net = IMLENet().cuda().eval()
    x = torch.randn(2, 12, 1000, device="cuda", requires_grad=True)
    net(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
