"""Mousavi port: structure, the original's reshape quirk and the Keras reference vectors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ecgx.models.base import count_parameters
from ecgx.models.mousavi import Mousavi, load_keras_weights
from tests.helpers.model_checks import parameters_without_gradient
from tests.helpers.reference_weights import keras_reference as load_keras_reference
from tests.helpers.reference_weights import keras_weight_list

KERAS_REFERENCE = "mousavi_keras_reference.npz"


@pytest.fixture(scope="module")
def model() -> Mousavi:
    torch.manual_seed(0)
    return Mousavi().eval()


@pytest.fixture(scope="module")
def keras_reference() -> dict[str, np.ndarray]:
    return load_keras_reference(KERAS_REFERENCE)


def test_trainable_parameters_match_keras(model: Mousavi) -> None:
    # conv 800 + 4,160 + 16,512, BiLSTM 2·4·128·(1536 + 128 + 1), dense 655,488 + 645
    assert count_parameters(model) == 2_382_565


def test_output_feature_and_target_layer_shapes(model: Mousavi) -> None:
    x = torch.randn(2, 12, 1000)
    seen = []
    handle = model.get_target_layer().register_forward_hook(
        lambda _m, _i, out: seen.append(tuple(out.shape))
    )
    with torch.no_grad():
        features = model.forward_features(x)
        logits = model(x)
    handle.remove()
    assert features.shape == (2, 128)
    assert logits.shape == (2, 5)
    torch.testing.assert_close(model.forward_head(features), logits)
    # 20 beats per record; 50 positions → 25 → 12 after two floor-mode poolings
    assert seen[0] == (2 * 20, 128, 12)


def test_gradients_reach_every_parameter() -> None:
    torch.manual_seed(1)
    net = Mousavi().train()
    logits = net(torch.randn(2, 12, 1000))
    no_grad = parameters_without_gradient(net, logits)
    assert not no_grad


def test_beats_are_consecutive_lead_major_values(model: Mousavi) -> None:
    # The original's quirk: beat j of a record is its flat values j·600 … j·600 + 599 viewed as
    # (50 positions, 12 channels); beat 1 spans the end of lead I and the start of lead II.
    x = torch.arange(2 * 12 * 1000, dtype=torch.float32).view(2, 12, 1000)
    seen = []
    handle = model.beat_encoder.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    with torch.no_grad():
        model(x)
    handle.remove()
    beats = seen[0]
    assert beats.shape == (40, 12, 50)
    flat = x.reshape(-1)
    for row in (0, 1, 21):  # record 0 beats 0 and 1, record 1 beat 1
        expected = flat[row * 600 : (row + 1) * 600].view(50, 12).T
        assert torch.equal(beats[row], expected)
    # beat 1, position 33: channel 3 is lead I's last sample (999), channel 4 lead II's first
    assert beats[1, 3, 33] == 999 and beats[1, 4, 33] == 1000


def test_wrong_input_is_a_clear_error(model: Mousavi) -> None:
    with pytest.raises(ValueError, match=r"model\.input_length=1000.*got 950"):
        model(torch.randn(1, 12, 950))
    with pytest.raises(ValueError, match=r"model\.in_channels=12"):
        model(torch.randn(1, 8, 1000))
    with pytest.raises(ValueError, match=r"model\.input_length=1010.*model\.beat_length=50"):
        Mousavi(input_length=1010)


def test_other_configuration_builds_and_runs() -> None:
    net = Mousavi(in_channels=3, num_classes=2, input_length=500, beat_length=100, lstm_units=16)
    assert net.eval()(torch.randn(2, 3, 500)).shape == (2, 2)


def test_reproduces_keras_reference(keras_reference: dict[str, np.ndarray]) -> None:
    net = Mousavi()
    load_keras_weights(net, keras_reference)
    net.eval()
    x = torch.from_numpy(keras_reference["input"][..., 0])
    with torch.no_grad():
        got = torch.sigmoid(net(x)).numpy()
    np.testing.assert_allclose(got, keras_reference["output_sigmoid"], rtol=0, atol=1e-5)


def test_keras_weights_as_plain_list(keras_reference: dict[str, np.ndarray]) -> None:
    from_mapping, from_list = Mousavi(), Mousavi()
    load_keras_weights(from_mapping, keras_reference)
    load_keras_weights(from_list, keras_weight_list(keras_reference))
    for (name, a), b in zip(
        from_mapping.state_dict().items(), from_list.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name


def test_bad_keras_weights_are_rejected_before_copying(
    keras_reference: dict[str, np.ndarray],
) -> None:
    net = Mousavi()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    weights = keras_weight_list(keras_reference)
    with pytest.raises(ValueError, match="got 15 Keras weights.*needs 16"):
        load_keras_weights(net, weights[:-1])
    transposed = [*weights[:-2], weights[-2].T, weights[-1]]
    with pytest.raises(ValueError, match=r"Keras weight 14 has shape \(5, 128\).*head\.weight"):
        load_keras_weights(net, transposed)
    # the forward LSTM's kernel and recurrent kernel exchanged: caught by the names
    swapped = dict(keras_reference)
    swapped["w006:lstm/recurrent_kernel:0"] = swapped.pop(
        "w006:bidirectional_1/forward_lstm_1/lstm_cell/kernel:0"
    )
    with pytest.raises(ValueError, match=r"'recurrent_kernel', expected a 'kernel'"):
        load_keras_weights(net, swapped)
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key]), key
