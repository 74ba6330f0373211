"""IMLE-Net: beat, rhythm and channel attention over 12-lead ECGs, ported from TensorFlow/Keras.

Port of ``models/IMLENet.py`` of likith012/IMLE-Net (Reddy et al., IEEE SMC 2021; spec A4).
Every lead is cut into consecutive, non-overlapping windows ("beats", no R-peak detection); a
residual CNN shared by all windows and leads encodes each window, additive attention pools the
window's positions, a BiLSTM plus attention pools the windows of a lead, and a last attention
pools the leads. A linear layer on that context gives the logits (the original ends in a sigmoid).

The numerics follow Keras so that trained Keras weights load and give the same outputs:
"same" padding is asymmetric for even kernels, BatchNorm uses eps 1e-3 (and Keras' momentum
0.99, i.e. PyTorch 0.01), ReLU comes *before* BatchNorm, the LSTM has a single bias vector per
direction, and the attention bias has one row per position. Initialisation follows Keras too
(glorot-uniform kernels, zero biases, orthogonal recurrent kernels, forget-gate bias 1,
attention weights from N(0, 0.05²)).

``SameConv1d`` and ``KerasBiLSTM``, which the Mousavi and Rajpurkar ports use too, live in
:mod:`ecgx.models.layers` and are re-exported here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ecgx.models.base import ECGModel
from ecgx.models.layers import (
    KERAS_BN_EPS,
    KERAS_BN_MOMENTUM,
    Add,
    KerasBiLSTM,
    SameConv1d,
    init_keras_default,
    same_length,
)
from ecgx.models.weights import (
    KerasSlot,
    copy_keras_weights,
    keras_batch_norm_slots,
    keras_bilstm_slots,
    keras_conv_slots,
    keras_dense_slots,
)

__all__ = [
    "AdditiveAttention",
    "BeatEncoder",
    "BeatResidualBlock",
    "IMLENet",
    "KerasBiLSTM",
    "SameConv1d",
    "load_keras_weights",
]

# Keras' "normal" initializer (RandomNormal) used by the original attention layer.
_ATTENTION_INIT_STD = 0.05
# Fixed by the original config (kernel_size, num_blocks_list entries).
_KERNEL_SIZE = 8
_BLOCKS_PER_STAGE = 2


class _WindowBatchNorm(nn.BatchNorm1d):
    """BatchNorm1d that also takes the beat encoder's (N, C, 1, L) channels-last maps.

    The statistics are per channel over every other axis either way, so the numbers are those
    of BatchNorm1d on (N, C, L); only the rank check is relaxed.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() not in (2, 3, 4):
            raise ValueError(f"expected 2D, 3D or 4D input (got {input.dim()}D input)")


def _keras_batch_norm(channels: int) -> nn.BatchNorm1d:
    return _WindowBatchNorm(channels, eps=KERAS_BN_EPS, momentum=KERAS_BN_MOMENTUM)


class BeatResidualBlock(nn.Module):
    """Keras IMLE-Net residual block, with ReLU *before* BatchNorm as in the original.

    y = conv2(BN1(ReLU(conv1(x)))); out = BN2(ReLU(shortcut(x) + y)). When downsampling,
    conv1 has stride 2 and the shortcut is a strided 1×1 convolution with bias and no BN.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, downsample: bool):
        super().__init__()
        if not downsample and in_channels != out_channels:
            raise ValueError(
                f"an identity shortcut needs in_channels == out_channels "
                f"(got {in_channels} and {out_channels})"
            )
        stride = 2 if downsample else 1
        self.conv1 = SameConv1d(in_channels, out_channels, kernel_size, stride=stride)
        self.bn1 = _keras_batch_norm(out_channels)
        self.conv2 = SameConv1d(out_channels, out_channels, kernel_size)
        self.shortcut = SameConv1d(in_channels, out_channels, 1, stride=2) if downsample else None
        self.bn2 = _keras_batch_norm(out_channels)
        # ReLUs as modules, one per use: DeepLift and guided backprop override the backward of
        # activation modules (a functional call is invisible to them).
        self.relu1 = nn.ReLU(inplace=True)
        self.relu2 = nn.ReLU(inplace=True)
        self.add = Add()  # the residual sum as a module (LRP gives it a rule)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A (N, C, L) view of channels-last memory (strides (L·C, 1, C)) unsqueezes to a
        # channels-last (N, C, 1, L) without a copy, and the result squeezes back the same way:
        # the block keeps its (N, C, L) interface (Grad-CAM, TCAV hooks) at no cost.
        x4 = x.unsqueeze(2)
        # In-place ReLUs: neither a convolution nor a sum needs its output for its backward,
        # and every avoided allocation here is one of up to 50 MB per training step.
        y = self.conv2(self.bn1(self.relu1(self.conv1(x4))))
        identity = x4 if self.shortcut is None else self.shortcut(x4)
        return self.bn2(self.relu2(self.add(identity, y))).squeeze(2)


class BeatEncoder(nn.Module):
    """Stem convolution + ReLU, then stages of residual blocks; every stage after the first
    starts with a stride-2 block. Maps (N, 1, beat_length) to (N, filters[-1], positions)."""

    def __init__(self, filters: Sequence[int], kernel_size: int = _KERNEL_SIZE):
        super().__init__()
        self.stem = SameConv1d(1, filters[0], kernel_size)
        self.stem_relu = nn.ReLU(inplace=True)  # a module: see BeatResidualBlock
        blocks = []
        channels = filters[0]
        for stage, width in enumerate(filters):
            for index in range(_BLOCKS_PER_STAGE):
                blocks.append(
                    BeatResidualBlock(channels, width, kernel_size, stage > 0 and index == 0)
                )
                channels = width
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, L) → (N, filters[-1], L'), the output in channels-last memory (its
        ``transpose(1, 2)`` is contiguous)."""
        stem = self.stem_relu(self.stem(x)).unsqueeze(2)
        stem = stem.contiguous(memory_format=torch.channels_last)
        return self.blocks(stem.squeeze(2))


class AdditiveAttention(nn.Module):
    """Feed-forward attention with a bias row per position (the IMLE-Net ``attention`` layer).

    For h of shape (N, T, D): e_t = vᵀ tanh(Wᵀ h_t + b_t), α = softmax_t(e), c = Σ_t α_t h_t.
    ``W`` is (D, attention_dim), ``b`` is (T, attention_dim) — so T is fixed at construction —
    and ``v`` is (attention_dim,). ``forward`` returns ``(c, α)`` with shapes (N, D) and (N, T).
    """

    def __init__(self, input_dim: int, steps: int, attention_dim: int = 64):
        super().__init__()
        self.steps = steps
        self.weight = nn.Parameter(torch.empty(input_dim, attention_dim))
        self.bias = nn.Parameter(torch.empty(steps, attention_dim))
        self.v = nn.Parameter(torch.empty(attention_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, std=_ATTENTION_INIT_STD)
        nn.init.zeros_(self.bias)
        nn.init.normal_(self.v, std=_ATTENTION_INIT_STD)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if h.dim() != 3 or h.shape[1] != self.steps:
            raise ValueError(
                f"AdditiveAttention expects (N, {self.steps}, D) inputs: its bias has one row "
                f"per position; got shape {tuple(h.shape)}"
            )
        scores = torch.tanh(h @ self.weight + self.bias) @ self.v
        alpha = torch.softmax(scores, dim=1)
        context = torch.bmm(alpha.unsqueeze(1), h).squeeze(1)
        return context, alpha


class IMLENet(ECGModel):
    """IMLE-Net for (batch, leads, samples) inputs; returns logits (batch, num_classes).

    ``forward_features`` returns the channel-attention context (batch, 2·lstm_units) and
    ``forward_head`` the final linear layer ``head`` (swap it for the MI fine-tune).
    ``forward_with_attention`` also returns the softmax weights of the three levels.

    ``target_layer`` is the last residual block of the beat encoder. Note that it sees windows,
    not records: its output is (batch·leads·windows, filters[-1], positions), rows ordered
    record, then lead, then window — reshape to (batch, leads, windows, ...) to map it back.
    """

    def __init__(
        self,
        in_channels: int = 12,
        num_classes: int = 5,
        input_length: int = 1000,
        beat_length: int = 50,
        filters: Sequence[int] = (32, 64, 128),
        attention_dim: int = 64,
        lstm_units: int = 64,
    ):
        super().__init__()
        filters = tuple(int(f) for f in filters)
        if not filters:
            raise ValueError("IMLENet needs at least one entry in filters")
        if beat_length <= 0 or input_length % beat_length != 0:
            raise ValueError(
                f"IMLENet cuts each lead into whole windows: input_length={input_length} must be "
                f"a positive multiple of beat_length={beat_length}"
            )
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.input_length = input_length
        self.beat_length = beat_length
        self.windows = input_length // beat_length
        self.positions = beat_length
        for _ in filters[1:]:
            self.positions = same_length(self.positions, 2)

        self.beat_encoder = BeatEncoder(filters)
        self.beat_attention = AdditiveAttention(filters[-1], self.positions, attention_dim)
        self.rhythm_lstm = KerasBiLSTM(filters[-1], lstm_units)
        self.rhythm_attention = AdditiveAttention(2 * lstm_units, self.windows, attention_dim)
        self.channel_attention = AdditiveAttention(2 * lstm_units, in_channels, attention_dim)
        self.head = nn.Linear(2 * lstm_units, num_classes)
        init_keras_default(self.head)
        self.target_layer = f"beat_encoder.blocks.{len(self.beat_encoder.blocks) - 1}"

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 3:
            raise ValueError(
                f"IMLENet expects (batch, leads, samples) inputs, got shape {tuple(x.shape)}"
            )
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"IMLENet was built for model.in_channels={self.in_channels} leads (the channel "
                f"attention has one bias row per lead), got {x.shape[1]}"
            )
        if x.shape[2] != self.input_length:
            raise ValueError(
                f"IMLENet was built for inputs of model.input_length={self.input_length} samples "
                f"(cut into {self.windows} windows of model.beat_length={self.beat_length}), "
                f"got {x.shape[2]}: crop/resample the signal or build the model with "
                f"input_length={x.shape[2]} (a multiple of beat_length)"
            )

    def _encode(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        self._check_input(x)
        batch, leads, _ = x.shape
        # Row-major reshape: windows are consecutive within a lead, leads consecutive within a
        # record, so every window of the batch goes through the encoder in one pass.
        beats = x.reshape(batch * leads * self.windows, 1, self.beat_length)
        encoded = self.beat_encoder(beats).transpose(1, 2)
        beat_context, beat_alpha = self.beat_attention(encoded)
        rhythm = self.rhythm_lstm(beat_context.reshape(batch * leads, self.windows, -1))
        rhythm_context, rhythm_alpha = self.rhythm_attention(rhythm)
        channel_context, channel_alpha = self.channel_attention(
            rhythm_context.reshape(batch, leads, -1)
        )
        alphas = {
            "beat": beat_alpha.reshape(batch, leads, self.windows, self.positions),
            "rhythm": rhythm_alpha.reshape(batch, leads, self.windows),
            "channel": channel_alpha,
        }
        return channel_context, alphas

    def forward_features(self, x: torch.Tensor, **extra: torch.Tensor) -> torch.Tensor:
        return self._encode(x)[0]

    def forward_head(self, features: torch.Tensor, **extra: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def layer_map_to_input(self, layer_map: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Beat-encoder maps (B·leads·windows, 1, T') back onto (B, leads, samples)."""
        batch, leads, samples = x.shape
        up = F.interpolate(layer_map, size=self.beat_length, mode="linear", align_corners=False)
        return up.reshape(batch, leads, samples)

    def forward_with_attention(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits and the attention weights: ``beat`` (B, leads, windows, positions),
        ``rhythm`` (B, leads, windows), ``channel`` (B, leads); each sums to 1 on its last axis."""
        features, alphas = self._encode(x)
        return self.forward_head(features), alphas


# --------------------------------------------------------------------------- Keras weights


def _identity(array: np.ndarray) -> np.ndarray:
    return array


def _column(array: np.ndarray) -> np.ndarray:
    return array.reshape(-1)


def _attention_slots(name: str, module: AdditiveAttention) -> list[KerasSlot]:
    return [
        ("att_weight", f"{name}.weight", module.weight, _identity),
        ("att_bias", f"{name}.bias", module.bias, _identity),
        ("Vatt", f"{name}.v", module.v, _column),
    ]


def _keras_layout(model: IMLENet) -> list[KerasSlot]:
    """(Keras weight kind, ecgx name, target tensor, Keras→PyTorch converter) in Keras order."""
    entries = keras_conv_slots("beat_encoder.stem", model.beat_encoder.stem)
    for index, block in enumerate(model.beat_encoder.blocks):
        prefix = f"beat_encoder.blocks.{index}"
        entries += keras_conv_slots(f"{prefix}.conv1", block.conv1)
        entries += keras_batch_norm_slots(f"{prefix}.bn1", block.bn1)
        if block.shortcut is not None:
            entries += keras_conv_slots(f"{prefix}.shortcut", block.shortcut)
        entries += keras_conv_slots(f"{prefix}.conv2", block.conv2)
        entries += keras_batch_norm_slots(f"{prefix}.bn2", block.bn2)
    entries += _attention_slots("beat_attention", model.beat_attention)
    entries += keras_bilstm_slots("rhythm_lstm", model.rhythm_lstm)
    entries += _attention_slots("rhythm_attention", model.rhythm_attention)
    entries += _attention_slots("channel_attention", model.channel_attention)
    entries += keras_dense_slots("head", model.head)
    return entries


def load_keras_weights(
    model: IMLENet, weights: Sequence[np.ndarray] | Mapping[str, np.ndarray]
) -> None:
    """Copy the weights of the original Keras IMLE-Net (``model.get_weights()``) into ``model``.

    ``weights`` is either the list in Keras' weight order, or a mapping: keys ``wNNN:<keras
    name>`` (as in ``imle_keras_reference.npz``; other keys such as ``input`` are ignored, so an
    ``np.load`` of that file can be passed as is) are taken in NNN order; a mapping without such
    keys is taken in its own order, keyed by Keras weight names.

    Keras order → ecgx (Keras layouts: Conv1D kernel (k, in, out), Dense kernel (in, out)):

    - ``conv1d`` kernel, bias → ``beat_encoder.stem`` weight (kernel transposed (2, 1, 0)), bias;
    - per residual block ``beat_encoder.blocks.i``, in order: conv kernel, bias → ``conv1``;
      BatchNormalization gamma, beta, moving_mean, moving_variance → ``bn1`` weight, bias,
      running_mean, running_var; in downsampling blocks only, the 1×1 conv kernel, bias →
      ``shortcut`` (Keras lists it before the second conv); conv kernel, bias → ``conv2``;
      BatchNormalization (4 arrays) → ``bn2``;
    - ``beat_att`` att_weight (D, 64), att_bias (T, 64), Vatt (64, 1) → ``beat_attention``
      weight, bias, v (flattened);
    - ``forward_lstm`` kernel (D, 4H), recurrent_kernel (H, 4H), bias (4H) →
      ``rhythm_lstm`` weight_ih[0] (kernelᵀ), weight_hh[0] (recurrent_kernelᵀ), bias[0];
      ``backward_lstm`` likewise → index 1;
    - ``rhythm_att``, ``channel_att`` (3 arrays each) → ``rhythm_attention``,
      ``channel_attention``;
    - ``dense`` kernel (D, classes), bias → ``head`` weight (kernelᵀ), bias.

    The LSTM gate blocks (Keras i, f, c, o) line up with ecgx's (i, f, g, o) without
    reordering. Everything is checked (count, shapes and, where names are given, the weight
    kind such as ``gamma`` or ``kernel``) before anything is copied; a mismatch raises
    ``ValueError`` naming the Keras index and the ecgx parameter.
    """
    copy_keras_weights("IMLE-Net", _keras_layout(model), weights)
