"""Loading an original's weights into an ecgx port: the checks every mapping shares, and the
Keras weight order of the layers the Keras ports have in common."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ecgx.models.layers import KerasBiLSTM


def strip_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str = "module.") -> dict:
    """Drop a prefix every key carries (``module.``: checkpoints saved from DataParallel)."""
    entries = dict(state_dict)
    if entries and all(key.startswith(prefix) for key in entries):
        entries = {key[len(prefix) :]: value for key, value in entries.items()}
    return entries


def checked_copy(model: nn.Module, state_dict: Mapping[str, torch.Tensor], hint: str = "") -> None:
    """Copy ``state_dict`` (already under the model's own names) into ``model``, all or nothing.

    ``num_batches_tracked`` may be absent; any unknown key, missing key or shape mismatch raises
    ``KeyError``/``ValueError`` naming the key before anything is copied (``hint`` says which
    settings to check). Values are cast to the model's dtype.
    """
    name = type(model).__name__
    entries = strip_prefix(state_dict)
    own = model.state_dict()
    unknown = [key for key in entries if key not in own]
    if unknown:
        raise KeyError(f"load_original_state_dict: unknown key(s) for {name}: {unknown}")
    missing = [key for key in own if key not in entries and not key.endswith("num_batches_tracked")]
    if missing:
        raise KeyError(f"load_original_state_dict: missing key(s) for {name}: {missing}")
    for key, value in entries.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise ValueError(
                f"load_original_state_dict: {key} has shape {tuple(value.shape)}, {name} expects "
                f"{tuple(own[key].shape)}{f' ({hint})' if hint else ''}"
            )
    model.load_state_dict({**own, **entries}, strict=True)


# "w007:conv1d_3/kernel:0" -> (7, "conv1d_3/kernel:0"): the key form of the reference npz files
_KERAS_KEY = re.compile(r"^w(\d+):(.*)$")

#: one Keras weight's destination: (Keras kind such as "kernel", ecgx name, tensor, converter)
KerasSlot = tuple[str, str, torch.Tensor, Callable[[np.ndarray], np.ndarray]]


def _keep(array: np.ndarray) -> np.ndarray:
    return array


def _conv_kernel(array: np.ndarray) -> np.ndarray:
    # Keras Conv1D kernel (k, in, out) → PyTorch (out, in, k)
    return array.transpose(2, 1, 0)


def _matrix(array: np.ndarray) -> np.ndarray:
    # Keras Dense / LSTM kernels (in, out) → PyTorch (out, in)
    return array.T


def keras_conv_slots(name: str, conv: nn.Conv1d) -> list[KerasSlot]:
    """A Keras Conv1D's kernel and bias, in Keras order, for ``conv`` (ecgx name ``name``)."""
    return [
        ("kernel", f"{name}.weight", conv.weight, _conv_kernel),
        ("bias", f"{name}.bias", conv.bias, _keep),
    ]


def keras_batch_norm_slots(name: str, norm: nn.BatchNorm1d) -> list[KerasSlot]:
    """A Keras BatchNormalization's gamma, beta, moving mean and variance, in Keras order."""
    return [
        (kind, f"{name}.{attribute}", getattr(norm, attribute), _keep)
        for kind, attribute in (
            ("gamma", "weight"),
            ("beta", "bias"),
            ("moving_mean", "running_mean"),
            ("moving_variance", "running_var"),
        )
    ]


def keras_dense_slots(name: str, linear: nn.Linear) -> list[KerasSlot]:
    """A Keras Dense layer's kernel and bias, in Keras order."""
    return [
        ("kernel", f"{name}.weight", linear.weight, _matrix),
        ("bias", f"{name}.bias", linear.bias, _keep),
    ]


def keras_bilstm_slots(name: str, lstm: KerasBiLSTM) -> list[KerasSlot]:
    """A Keras ``Bidirectional(LSTM)``: forward then backward kernel, recurrent kernel, bias.
    Keras' gate blocks (i, f, c, o) are PyTorch's (i, f, g, o), so no reordering."""
    slots: list[KerasSlot] = []
    for direction in range(2):
        slots += [
            ("kernel", f"{name}.weight_ih[{direction}]", lstm.weight_ih[direction], _matrix),
            (
                "recurrent_kernel",
                f"{name}.weight_hh[{direction}]",
                lstm.weight_hh[direction],
                _matrix,
            ),
            ("bias", f"{name}.bias[{direction}]", lstm.bias[direction], _keep),
        ]
    return slots


def keras_arrays(
    weights: Sequence[np.ndarray] | Mapping[str, np.ndarray],
) -> list[tuple[str | None, np.ndarray]]:
    """(Keras name or None, array) in Keras weight order, from ``model.get_weights()`` or a
    mapping (``wNNN:<name>`` keys in NNN order; other keys such as ``input`` ignored)."""
    if not isinstance(weights, Mapping):
        return [(None, np.asarray(array)) for array in weights]
    numbered = []
    for key in weights:
        match = _KERAS_KEY.match(key)
        if match:
            numbered.append((int(match.group(1)), match.group(2), key))
    if numbered:
        numbered.sort()
        return [(name, np.asarray(weights[key])) for _, name, key in numbered]
    return [(key, np.asarray(array)) for key, array in weights.items()]


def copy_keras_weights(
    label: str,
    layout: Sequence[KerasSlot],
    weights: Sequence[np.ndarray] | Mapping[str, np.ndarray],
) -> None:
    """Copy Keras weights into the slots of ``layout``, all or nothing.

    Count, shapes and (where names are given) the weight kind are checked before anything is
    copied; a mismatch raises ``ValueError`` naming the Keras index and the ecgx parameter.
    """
    arrays = keras_arrays(weights)
    if len(arrays) != len(layout):
        raise ValueError(
            f"load_keras_weights: got {len(arrays)} Keras weights, this {label} needs "
            f"{len(layout)}: were both models built with the same settings?"
        )
    converted = []
    for index, ((kind, target_name, target, convert), (name, array)) in enumerate(
        zip(layout, arrays, strict=True)
    ):
        where = f"Keras weight {index}" + (f" ({name!r})" if name else "")
        if name is not None:
            found = name.split(":")[0].rsplit("/", 1)[-1]
            if found != kind:
                raise ValueError(
                    f"load_keras_weights: {where} is a {found!r}, expected a {kind!r} for "
                    f"{target_name}: the weights are not in {label}'s Keras order"
                )
        value = convert(array)
        if tuple(value.shape) != tuple(target.shape):
            raise ValueError(
                f"load_keras_weights: {where} has shape {tuple(array.shape)}, which does not fit "
                f"{target_name} of shape {tuple(target.shape)} (Keras layout shown before "
                f"conversion)"
            )
        converted.append((target, value))
    with torch.no_grad():
        for target, value in converted:
            target.copy_(torch.as_tensor(np.ascontiguousarray(value), dtype=target.dtype))
