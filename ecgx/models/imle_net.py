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
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ecgx.models.base import ECGModel
from ecgx.models.weights import copy_keras_weights

__all__ = [
    "AdditiveAttention",
    "BeatEncoder",
    "BeatResidualBlock",
    "IMLENet",
    "KerasBiLSTM",
    "SameConv1d",
    "load_keras_weights",
]

# Keras BatchNormalization defaults: momentum 0.99 weights the *old* statistic, PyTorch's
# momentum weights the new batch, hence 1 - 0.99.
_BN_EPS = 1e-3
_BN_MOMENTUM = 0.01
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
    return _WindowBatchNorm(channels, eps=_BN_EPS, momentum=_BN_MOMENTUM)


def _same_length(length: int, stride: int) -> int:
    return -(-length // stride)


class SameConv1d(nn.Conv1d):
    """Conv1d with TensorFlow's ``padding="same"``: output length ceil(L / stride).

    TensorFlow pads total = max((out - 1)·stride + kernel - L, 0) and puts the odd element on
    the right (left = total // 2). PyTorch's ``padding="same"`` is symmetric and refuses
    strides, so the padding is applied explicitly; for IMLE-Net's kernel 8 this is 3 left and
    4 right, and a symmetric pad would shift every feature map by one sample.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0)

    def reset_parameters(self) -> None:
        # Keras defaults: glorot-uniform kernel (same fans as PyTorch's xavier for (out, in, k)),
        # zero bias.
        nn.init.xavier_uniform_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, L) → (N, out, ceil(L / stride)); (N, C, 1, L) inputs, best in channels-last
        memory, go through the 2-D kernel and come back as (N, out, 1, L')."""
        length = x.shape[-1]
        stride, kernel = self.stride[0], self.kernel_size[0]
        total = max((_same_length(length, stride) - 1) * stride + kernel - length, 0)
        left, right = total // 2, total - total // 2
        if x.dim() == 4:
            # oneDNN runs 2-D convolutions in NHWC without reordering the input to its blocked
            # layout and back, which for IMLE-Net's thousands of 13- to 50-sample windows costs
            # more than the arithmetic; the 1-D path has no such layout.
            if left != right:
                x = F.pad(x, (left, right))
                left = 0
            return F.conv2d(x, self.weight.unsqueeze(2), self.bias, (1, stride), (0, left))
        if total:
            x = F.pad(x, (left, right))
        return super().forward(x)


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A (N, C, L) view of channels-last memory (strides (L·C, 1, C)) unsqueezes to a
        # channels-last (N, C, 1, L) without a copy, and the result squeezes back the same way:
        # the block keeps its (N, C, L) interface (Grad-CAM, TCAV hooks) at no cost.
        x4 = x.unsqueeze(2)
        # In-place ReLUs: neither a convolution nor a sum needs its output for its backward,
        # and every avoided allocation here is one of up to 50 MB per training step.
        y = self.conv2(self.bn1(F.relu(self.conv1(x4), inplace=True)))
        identity = x4 if self.shortcut is None else self.shortcut(x4)
        return self.bn2(F.relu(identity + y, inplace=True)).squeeze(2)


class BeatEncoder(nn.Module):
    """Stem convolution + ReLU, then stages of residual blocks; every stage after the first
    starts with a stride-2 block. Maps (N, 1, beat_length) to (N, filters[-1], positions)."""

    def __init__(self, filters: Sequence[int], kernel_size: int = _KERNEL_SIZE):
        super().__init__()
        self.stem = SameConv1d(1, filters[0], kernel_size)
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
        stem = F.relu(self.stem(x), inplace=True).unsqueeze(2)
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


class KerasBiLSTM(nn.Module):
    """Bidirectional LSTM returning sequences (forward ⊕ backward), with Keras' parameters.

    Keras keeps one bias per direction where ``nn.LSTM`` keeps two (the trainable parameter
    count then differs by 4·units per direction), and cuDNN's ``nn.LSTM`` cannot backpropagate
    in eval mode, which gradient explainers need. So the recurrence is written out: the input
    projections of all steps and both directions are one batched product, and only the
    unavoidable recurrence over time steps runs as a loop, both directions at once.

    Parameters (direction 0 = forward, 1 = backward), gate blocks in the order i, f, c, o
    (Keras) = i, f, g, o (PyTorch): ``weight_ih`` (2, 4H, D), ``weight_hh`` (2, 4H, H),
    ``bias`` (2, 4H). Activations are tanh and sigmoid (Keras 2 defaults).
    """

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.weight_ih = nn.Parameter(torch.empty(2, 4 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(2, 4 * hidden_size, hidden_size))
        self.bias = nn.Parameter(torch.empty(2, 4 * hidden_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        hidden = self.hidden_size
        with torch.no_grad():
            for direction in range(2):
                nn.init.xavier_uniform_(self.weight_ih[direction])
                nn.init.orthogonal_(self.weight_hh[direction])
            # Keras' unit_forget_bias=True: start with the forget gate open.
            self.bias.zero_()
            self.bias[:, hidden : 2 * hidden] = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, T, input_size) → (N, T, 2·hidden_size)."""
        n, steps, _ = x.shape
        projected = torch.einsum("ntd,kgd->kntg", x, self.weight_ih) + self.bias[:, None, None]
        # The backward direction reads the sequence reversed; flipping its projections once lets
        # both directions share every step of the loop.
        projected = torch.stack((projected[0], projected[1].flip(1)))
        recurrent = self.weight_hh.transpose(1, 2)
        h = x.new_zeros(2, n, self.hidden_size)
        c = x.new_zeros(2, n, self.hidden_size)
        outputs = []
        for step in range(steps):
            gates = torch.baddbmm(projected[:, :, step], h, recurrent)
            i, f, g, o = gates.chunk(4, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outputs.append(h)
        sequence = torch.stack(outputs, dim=2)
        return torch.cat((sequence[0], sequence[1].flip(1)), dim=-1)


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
            self.positions = _same_length(self.positions, 2)

        self.beat_encoder = BeatEncoder(filters)
        self.beat_attention = AdditiveAttention(filters[-1], self.positions, attention_dim)
        self.rhythm_lstm = KerasBiLSTM(filters[-1], lstm_units)
        self.rhythm_attention = AdditiveAttention(2 * lstm_units, self.windows, attention_dim)
        self.channel_attention = AdditiveAttention(2 * lstm_units, in_channels, attention_dim)
        self.head = nn.Linear(2 * lstm_units, num_classes)
        nn.init.xavier_uniform_(self.head.weight)
        nn.init.zeros_(self.head.bias)
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

_Converter = Callable[[np.ndarray], np.ndarray]


def _identity(array: np.ndarray) -> np.ndarray:
    return array


def _conv_kernel(array: np.ndarray) -> np.ndarray:
    return array.transpose(2, 1, 0)


def _matrix(array: np.ndarray) -> np.ndarray:
    return array.T


def _column(array: np.ndarray) -> np.ndarray:
    return array.reshape(-1)


def _keras_layout(model: IMLENet) -> list[tuple[str, str, torch.Tensor, _Converter]]:
    """(Keras weight kind, ecgx name, target tensor, Keras→PyTorch converter) in Keras order."""
    entries: list[tuple[str, str, torch.Tensor, _Converter]] = []

    def conv(name: str, module: nn.Conv1d) -> None:
        entries.append(("kernel", f"{name}.weight", module.weight, _conv_kernel))
        entries.append(("bias", f"{name}.bias", module.bias, _identity))

    def batch_norm(name: str, module: nn.BatchNorm1d) -> None:
        for kind, attribute in (
            ("gamma", "weight"),
            ("beta", "bias"),
            ("moving_mean", "running_mean"),
            ("moving_variance", "running_var"),
        ):
            entries.append((kind, f"{name}.{attribute}", getattr(module, attribute), _identity))

    def attention(name: str, module: AdditiveAttention) -> None:
        entries.append(("att_weight", f"{name}.weight", module.weight, _identity))
        entries.append(("att_bias", f"{name}.bias", module.bias, _identity))
        entries.append(("Vatt", f"{name}.v", module.v, _column))

    conv("beat_encoder.stem", model.beat_encoder.stem)
    for index, block in enumerate(model.beat_encoder.blocks):
        prefix = f"beat_encoder.blocks.{index}"
        conv(f"{prefix}.conv1", block.conv1)
        batch_norm(f"{prefix}.bn1", block.bn1)
        if block.shortcut is not None:
            conv(f"{prefix}.shortcut", block.shortcut)
        conv(f"{prefix}.conv2", block.conv2)
        batch_norm(f"{prefix}.bn2", block.bn2)
    attention("beat_attention", model.beat_attention)
    lstm = model.rhythm_lstm
    for direction in range(2):
        entries.append(
            ("kernel", f"rhythm_lstm.weight_ih[{direction}]", lstm.weight_ih[direction], _matrix)
        )
        entries.append(
            (
                "recurrent_kernel",
                f"rhythm_lstm.weight_hh[{direction}]",
                lstm.weight_hh[direction],
                _matrix,
            )
        )
        entries.append(("bias", f"rhythm_lstm.bias[{direction}]", lstm.bias[direction], _identity))
    attention("rhythm_attention", model.rhythm_attention)
    attention("channel_attention", model.channel_attention)
    entries.append(("kernel", "head.weight", model.head.weight, _matrix))
    entries.append(("bias", "head.bias", model.head.bias, _identity))
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
