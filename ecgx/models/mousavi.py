"""Mousavi et al.'s CNN + BiLSTM "beat" model, ported from the Keras of the IMLE-Net repository.

Port of ``models/mousavi.py`` of likith012/IMLE-Net (after Mousavi & Afghah, ICASSP 2019; spec
A5), used there as a comparison model. Every record is cut into 20 "beats" of 600 values; a CNN
shared by all beats encodes each one, a BiLSTM runs over the 20 encodings, and two dense layers
give the logits (the original ends in a sigmoid).

The reshape quirk of the original is kept on purpose: the Keras code builds a lead-last
(time, leads) view with a Permute, then overwrites it with a reshape of the *raw* input, so a
"beat" is 600 consecutive values of the lead-major record (12 leads × 1000 samples) viewed as
50 × 12. Beat 0 therefore holds lead I's samples 0–599 and beat 1 holds lead I's samples 600–999
followed by lead II's samples 0–199, and the 12 "channels" of a beat are every 12th sample, not
leads. Trained Keras weights only reproduce the original's outputs with exactly this layout.

Numerics follow Keras: "same" padding (the kernel-2 convolutions pad one sample on the right),
floor-mode max pooling, an LSTM with one bias per direction, glorot-uniform kernels and zero
biases.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ecgx.models.base import ECGModel
from ecgx.models.layers import KerasBiLSTM, SameConv1d, init_keras_default
from ecgx.models.weights import (
    KerasSlot,
    copy_keras_weights,
    keras_bilstm_slots,
    keras_conv_slots,
    keras_dense_slots,
)

__all__ = ["Mousavi", "load_keras_weights"]


class Mousavi(ECGModel):
    """Mousavi's model for (batch, leads, samples) inputs; returns logits (batch, num_classes).

    ``forward_features`` returns the 128 ReLU units of the penultimate dense layer (the layer
    the original fine-tunes from) and ``forward_head`` the last linear layer ``head``.

    ``target_layer`` is the beat encoder (the last feature map with a time axis). It sees
    beats, not records: its output is (batch·windows, filters[-1], positions), rows ordered
    record, then beat; and because of the reshape quirk its time axis does not map onto one
    lead (see the module docstring).
    """

    target_layer = "beat_encoder"

    def __init__(
        self,
        in_channels: int = 12,
        num_classes: int = 5,
        input_length: int = 1000,
        beat_length: int = 50,
        filters: Sequence[int] = (32, 64, 128),
        kernel_size: int = 2,
        pool_size: int = 2,
        lstm_units: int = 128,
        dense_units: int = 128,
    ):
        super().__init__()
        filters = tuple(int(f) for f in filters)
        if not filters:
            raise ValueError("Mousavi needs at least one entry in filters")
        if beat_length <= 0 or input_length % beat_length != 0:
            # A record holds leads·input_length values and a beat leads·beat_length, so beats
            # only tile records (never straddle two) when the lengths divide.
            raise ValueError(
                f"Mousavi cuts each record into whole beats: model.input_length={input_length} "
                f"must be a positive multiple of model.beat_length={beat_length}"
            )
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.input_length = input_length
        self.beat_length = beat_length
        self.windows = input_length // beat_length

        # Conv → ReLU, with a max pool between consecutive convolutions (none after the last).
        layers: list[nn.Module] = []
        channels, positions = in_channels, beat_length
        for index, width in enumerate(filters):
            if index:
                layers.append(nn.MaxPool1d(pool_size))
                positions //= pool_size  # Keras "valid" pooling drops the odd sample
            layers += [SameConv1d(channels, width, kernel_size), nn.ReLU()]
            channels = width
        if positions < 1:
            raise ValueError(
                f"model.beat_length={beat_length} is too short for {len(filters) - 1} poolings "
                f"of size {pool_size}"
            )
        self.positions = positions
        self.beat_encoder = nn.Sequential(*layers)
        self.rhythm_lstm = KerasBiLSTM(positions * channels, lstm_units)
        self.dense = nn.Linear(self.windows * 2 * lstm_units, dense_units)
        # A module, not F.relu: DeepLift / guided backprop override activation modules only.
        self.dense_relu = nn.ReLU()
        self.head = nn.Linear(dense_units, num_classes)
        # Keras Dense defaults, drawn once both layers exist (that order fixes seeded weights).
        for linear in (self.dense, self.head):
            init_keras_default(linear)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 3:
            raise ValueError(
                f"Mousavi expects (batch, leads, samples) inputs, got shape {tuple(x.shape)}"
            )
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"Mousavi was built for model.in_channels={self.in_channels} leads (the first "
                f"convolution reads that many values per beat position), got {x.shape[1]}"
            )
        if x.shape[2] != self.input_length:
            raise ValueError(
                f"Mousavi was built for inputs of model.input_length={self.input_length} samples "
                f"({self.windows} beats of model.beat_length={self.beat_length}; the dense layer "
                f"is sized to them), got {x.shape[2]}: crop/resample the signal or build the "
                f"model with input_length={x.shape[2]} (a multiple of beat_length)"
            )

    def encode_beats(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, leads, samples) → beat encodings (batch, windows, positions·filters[-1])."""
        self._check_input(x)
        batch = x.shape[0]
        # The original's quirk (module docstring): a row-major view of the lead-major record as
        # (beats, beat_length, leads), channel-last like Keras, then channel-first for Conv1d.
        beats = x.reshape(batch * self.windows, self.beat_length, self.in_channels)
        encoded = self.beat_encoder(beats.transpose(1, 2))
        # Keras flattens its channel-last map position by position, channels fastest.
        return encoded.transpose(1, 2).reshape(batch, self.windows, -1)

    def layer_map_to_input(self, layer_map: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Beat-encoder maps (B·windows, 1, T') back onto (B, leads, samples) through the
        quirk's view: position t of beat w covers values (w·beat_length + t)·leads + c of the
        flattened lead-major record, c = 0..leads−1."""
        batch, leads, samples = x.shape
        up = F.interpolate(layer_map, size=self.beat_length, mode="linear", align_corners=False)
        flat = up.reshape(batch, self.windows * self.beat_length, 1).expand(-1, -1, leads)
        return flat.reshape(batch, leads, samples)

    def forward_features(self, x: torch.Tensor, **extra: torch.Tensor) -> torch.Tensor:
        rhythm = self.rhythm_lstm(self.encode_beats(x))
        # Flatten step by step, forward then backward units within a step (Keras' layout).
        return self.dense_relu(self.dense(rhythm.reshape(rhythm.shape[0], -1)))

    def forward_head(self, features: torch.Tensor, **extra: torch.Tensor) -> torch.Tensor:
        return self.head(features)


# --------------------------------------------------------------------------- Keras weights


def _keras_layout(model: Mousavi) -> list[KerasSlot]:
    """(Keras weight kind, ecgx name, target tensor, Keras→PyTorch converter) in Keras order."""
    entries: list[KerasSlot] = []
    for index, module in enumerate(model.beat_encoder):
        if isinstance(module, nn.Conv1d):
            entries += keras_conv_slots(f"beat_encoder.{index}", module)
    entries += keras_bilstm_slots("rhythm_lstm", model.rhythm_lstm)
    entries += keras_dense_slots("dense", model.dense)
    entries += keras_dense_slots("head", model.head)
    return entries


def load_keras_weights(
    model: Mousavi, weights: Sequence[np.ndarray] | Mapping[str, np.ndarray]
) -> None:
    """Copy the weights of the original Keras model (``model.get_weights()``) into ``model``.

    ``weights`` is the list in Keras' weight order, or a mapping: keys ``wNNN:<keras name>`` (as
    in ``mousavi_keras_reference.npz``; other keys such as ``input`` are ignored, so an
    ``np.load`` of that file can be passed as is) are taken in NNN order; a mapping without such
    keys is taken in its own order, keyed by Keras weight names.

    Keras order → ecgx:

    - the three ``conv1d`` kernels (k, in, out) and biases → ``beat_encoder.0``, ``.3``, ``.6``
      weight (kernel transposed (2, 1, 0)) and bias;
    - ``forward_lstm`` kernel (D, 4H), recurrent_kernel (H, 4H), bias (4H) → ``rhythm_lstm``
      weight_ih[0] (kernelᵀ), weight_hh[0] (recurrent_kernelᵀ), bias[0]; ``backward_lstm``
      likewise → index 1 (Keras' gate blocks i, f, c, o are PyTorch's i, f, g, o);
    - ``dense_1`` kernel (windows·2H, 128), bias → ``dense``; ``dense_2`` → ``head`` (kernelsᵀ).

    Count, shapes and (where names are given) the weight kind are checked before anything is
    copied; a mismatch raises ``ValueError`` naming the Keras index and the ecgx parameter.
    """
    copy_keras_weights("Mousavi", _keras_layout(model), weights)
