"""Rajpurkar et al.'s 34-layer pre-activation residual CNN, ported from the Keras of IMLE-Net.

Port of ``models/rajpurkar.py`` of likith012/IMLE-Net (after Rajpurkar et al., "Cardiologist-
level arrhythmia detection", 2017; spec A5), used there as a comparison model. A k16 stem
convolution is followed by 16 pre-activation residual blocks; every other block halves the
length, every fourth doubles the width, and a dense layer on the flattened final map gives the
logits (the original ends in a sigmoid).

The numerics follow Keras so that trained Keras weights load and give the same outputs: "same"
padding is asymmetric for the even kernel 16 (7 left and 8 right at stride 1, and at stride 2
it depends on the parity of the length), "same" max pooling on the shortcut keeps a last,
partial window on odd lengths, BatchNorm uses eps 1e-3 and Keras' momentum 0.99 (PyTorch
0.01), convolutions start from he_normal (Keras' truncated normal) with zero biases.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ecgx.models.base import ECGModel
from ecgx.models.layers import (
    Add,
    SameConv1d,
    init_keras_default,
    keras_batch_norm1d,
    same_length,
)
from ecgx.models.weights import (
    KerasSlot,
    copy_keras_weights,
    keras_batch_norm_slots,
    keras_conv_slots,
    keras_dense_slots,
)

__all__ = ["Rajpurkar", "RajpurkarBlock", "load_keras_weights"]

# The standard deviation of a standard normal truncated to [-2, 2]; Keras' he_normal divides
# by it so that the truncated draw keeps the variance 2 / fan_in.
_TRUNCATED_STD = 0.87962566103423978
# The original config: stride 2 at every odd block, 16 blocks.
_SUBSAMPLE_LENGTHS = (1, 2) * 8


def _he_normal_conv(
    in_channels: int, out_channels: int, kernel_size: int, stride: int = 1
) -> SameConv1d:
    """A Keras-"same" convolution initialised like Keras' he_normal (fan_in = in·k), bias 0."""
    conv = SameConv1d(in_channels, out_channels, kernel_size, stride=stride)
    std = math.sqrt(2.0 / (in_channels * kernel_size)) / _TRUNCATED_STD
    nn.init.trunc_normal_(conv.weight, std=std, a=-2 * std, b=2 * std)
    nn.init.zeros_(conv.bias)
    return conv


def same_max_pool1d(x: torch.Tensor, size: int) -> torch.Tensor:
    """Keras ``MaxPooling1D(pool_size=size, padding="same")`` (stride = size).

    Keras pads total = max((ceil(L/size) - 1)·size + size - L, 0) with the odd element on the
    right, and padded positions never win the max. With stride = pool size the left padding is
    always 0, so this is PyTorch's ceil mode: a last, partial window on the right.
    """
    if size == 1:
        return x
    return F.max_pool1d(x, size, stride=size, ceil_mode=True)


class MaxPoolShortcut(nn.Module):
    """The block's shortcut: "same" max-pool by the stride, then zero channels appended when
    the block widens. A module (no weights) so LRP treats it as one layer: the block's input
    also feeds a convolution, and relevance routed back through a functional pool would be
    scaled by that input a second time."""

    lrp_rule = "epsilon"

    def __init__(self, stride: int, extra_channels: int) -> None:
        super().__init__()
        self.stride, self.extra_channels = stride, extra_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = same_max_pool1d(x, self.stride)
        if self.extra_channels:
            # The original concatenates zeros_like(shortcut): new channels carry no identity.
            shortcut = F.pad(shortcut, (0, 0, 0, self.extra_channels))
        return shortcut


class RajpurkarBlock(nn.Module):
    """One pre-activation residual block of the original.

    body = [BN → ReLU, left out in the first block, which follows the stem's BN → ReLU] →
    Conv(k, stride) → BN → ReLU → Dropout → Conv(k); shortcut = "same" MaxPool(stride), with
    zero channels appended when the block widens; out = shortcut + body (no activation).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        dropout: float,
        preactivate: bool,
    ):
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(
                f"the zero-padded shortcut can only widen: in_channels={in_channels} > "
                f"out_channels={out_channels}"
            )
        self.stride = stride
        self.extra_channels = out_channels - in_channels
        self.bn0 = keras_batch_norm1d(in_channels) if preactivate else None
        self.conv1 = _he_normal_conv(in_channels, out_channels, kernel_size, stride)
        self.bn1 = keras_batch_norm1d(out_channels)
        # ReLUs as modules, one per use: DeepLift and guided backprop override the backward of
        # activation modules (a functional call is invisible to them).
        self.relu0 = nn.ReLU() if preactivate else None
        self.relu1 = nn.ReLU()
        self.add = Add()  # the residual sum as a module (LRP gives it a rule)
        self.shortcut = MaxPoolShortcut(stride, self.extra_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _he_normal_conv(out_channels, out_channels, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.shortcut(x)
        y = x if self.bn0 is None else self.relu0(self.bn0(x))
        y = self.conv1(y)
        y = self.conv2(self.dropout(self.relu1(self.bn1(y))))
        return self.add(shortcut, y)


class Rajpurkar(ECGModel):
    """Rajpurkar's residual CNN for (batch, leads, samples); returns logits (batch, classes).

    ``forward_features`` returns the flattened final map (final_length·channels = 1024 at the
    seed shape) and ``forward_head`` the dense layer ``head`` on it. ``target_layer`` is
    ``final_relu``, the post-activation final map (batch, channels, final_length).
    """

    target_layer = "final_relu"

    def __init__(
        self,
        in_channels: int = 12,
        num_classes: int = 5,
        input_length: int = 1000,
        subsample_lengths: Sequence[int] = _SUBSAMPLE_LENGTHS,
        kernel_size: int = 16,
        start_filters: int = 32,
        increase_channels_at: int = 4,
        dropout: float = 0.2,
    ):
        super().__init__()
        strides = tuple(int(s) for s in subsample_lengths)
        if not strides or min(strides) < 1:
            raise ValueError(f"subsample_lengths must be positive strides, got {strides}")
        if input_length < 1:
            raise ValueError(f"model.input_length must be positive, got {input_length}")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.input_length = input_length

        self.stem = _he_normal_conv(in_channels, start_filters, kernel_size)
        self.stem_bn = keras_batch_norm1d(start_filters)
        self.stem_relu = nn.ReLU()
        blocks = []
        channels, length = start_filters, input_length
        for index, stride in enumerate(strides):
            # Width start·2^⌊i / increase_at⌋, so the width doubles exactly where the original
            # zero-pads the shortcut (index % increase_at == 0, index > 0).
            width = start_filters * 2 ** (index // increase_channels_at)
            blocks.append(
                RajpurkarBlock(channels, width, kernel_size, stride, dropout, preactivate=index > 0)
            )
            channels = width
            length = same_length(length, stride)
        self.blocks = nn.Sequential(*blocks)
        self.final_bn = keras_batch_norm1d(channels)
        self.final_relu = nn.ReLU()
        self.final_length = length
        self.head = nn.Linear(length * channels, num_classes)
        init_keras_default(self.head)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 3:
            raise ValueError(
                f"Rajpurkar expects (batch, leads, samples) inputs, got shape {tuple(x.shape)}"
            )
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"Rajpurkar was built for model.in_channels={self.in_channels} leads, "
                f"got {x.shape[1]}"
            )
        if x.shape[2] != self.input_length:
            raise ValueError(
                f"Rajpurkar was built for inputs of model.input_length={self.input_length} "
                f"samples (the dense head reads the flattened {self.final_length}-step final "
                f"map), got {x.shape[2]}: crop/resample the signal or build the model with "
                f"input_length={x.shape[2]}"
            )

    def forward_features(self, x: torch.Tensor, **extra: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        y = self.blocks(self.stem_relu(self.stem_bn(self.stem(x))))
        y = self.final_relu(self.final_bn(y))
        # Keras flattens its channel-last map step by step, channels fastest.
        return y.transpose(1, 2).reshape(y.shape[0], -1)

    def forward_head(self, features: torch.Tensor, **extra: torch.Tensor) -> torch.Tensor:
        return self.head(features)


# --------------------------------------------------------------------------- Keras weights


def _keras_layout(model: Rajpurkar) -> list[KerasSlot]:
    """(Keras weight kind, ecgx name, target tensor, Keras→PyTorch converter) in Keras order."""
    entries = keras_conv_slots("stem", model.stem)
    entries += keras_batch_norm_slots("stem_bn", model.stem_bn)
    for index, block in enumerate(model.blocks):
        prefix = f"blocks.{index}"
        if block.bn0 is not None:
            entries += keras_batch_norm_slots(f"{prefix}.bn0", block.bn0)
        entries += keras_conv_slots(f"{prefix}.conv1", block.conv1)
        entries += keras_batch_norm_slots(f"{prefix}.bn1", block.bn1)
        entries += keras_conv_slots(f"{prefix}.conv2", block.conv2)
    entries += keras_batch_norm_slots("final_bn", model.final_bn)
    entries += keras_dense_slots("head", model.head)
    return entries


def load_keras_weights(
    model: Rajpurkar, weights: Sequence[np.ndarray] | Mapping[str, np.ndarray]
) -> None:
    """Copy the weights of the original Keras model (``model.get_weights()``) into ``model``.

    ``weights`` is the list in Keras' weight order, or a mapping: keys ``wNNN:<keras name>`` are
    taken in NNN order (other keys are ignored); a mapping without such keys is taken in its own
    order, keyed by Keras weight names.

    Keras order → ecgx (the shortcut's pooling and zero padding hold no weights, so the weighted
    layers form one chain and Keras lists them in that order):

    - stem ``conv1d`` kernel (k, in, out), bias → ``stem`` weight (kernel transposed (2, 1, 0)),
      bias; ``batch_normalization`` gamma, beta, moving_mean, moving_variance → ``stem_bn``
      weight, bias, running_mean, running_var;
    - per block ``blocks.i``: BatchNormalization → ``bn0`` (not in block 0); conv → ``conv1``;
      BatchNormalization → ``bn1``; conv → ``conv2``;
    - the last BatchNormalization → ``final_bn``; ``dense`` kernel (1024, classes), bias →
      ``head`` weight (kernelᵀ), bias.

    Count, shapes and (where names are given) the weight kind are checked before anything is
    copied; a mismatch raises ``ValueError`` naming the Keras index and the ecgx parameter.
    """
    copy_keras_weights("Rajpurkar", _keras_layout(model), weights)
