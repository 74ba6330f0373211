"""Building blocks several model families share, in the spirit of timm's ``layers``.

A block lives here only when the families compute exactly the same thing with it and register
the same module names (the ports load their originals' state dicts by those names). Each model
file still holds what is particular to its source; near-misses stay there, with the reason.

- 1-D torchvision-style ResNets (CPSC ResNet34, SE-ResNet18, IMLE-Net's ResNet101, the PTB-XL
  benchmark's and XAI4ECG's ResNets, the compact default): conv-BN(-ReLU), the projection
  shortcut, the conv1/bn1/relu/maxpool stem, the basic block with an optional SE module.
- Keras ports (IMLE-Net, Mousavi, Rajpurkar): TensorFlow "same" convolution, Keras' default
  initialisation and BatchNorm settings, the bidirectional LSTM with Keras' parameters.
- 2-D torchvision backbones (EfficientNet, MobileNetV3, ConvNeXt, ResNet): conv-norm-activation,
  squeeze-excitation, stochastic depth, channel rounding.
- ``init_conv_norm``: torchvision's Kaiming-normal (fan_out) initialisation, 1-D and 2-D.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "KERAS_BN_EPS",
    "KERAS_BN_MOMENTUM",
    "BasicBlock1d",
    "ConvNormActivation",
    "KerasBiLSTM",
    "SEModule1d",
    "SameConv1d",
    "SqueezeExcitation",
    "StochasticDepth",
    "conv_bn1d",
    "downsample1d",
    "init_conv_norm",
    "init_keras_default",
    "keras_batch_norm1d",
    "make_divisible",
    "resnet_stem1d",
    "same_length",
]


def init_conv_norm(model: nn.Module) -> None:
    """torchvision's ResNet/MobileNetV3/EfficientNet initialisation, which the 1-D SE-ResNet
    copies: Kaiming-normal (fan_out, ReLU gain) conv weights, unit norm weights, every conv and
    norm bias zero. Linear layers differ between families, so each initialises those itself."""
    for module in model.modules():
        if isinstance(module, nn.Conv1d | nn.Conv2d):
            # ReLU's gain; torchvision's MobileNetV3/EfficientNet leave torch's default,
            # leaky_relu with slope 0, which is the same gain.
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d | nn.GroupNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


# ------------------------------------------------------------------------------ 1-D ResNets


def conv_bn1d(
    in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, relu: bool = False
) -> nn.Sequential:
    """Conv1d (no bias, "same" padding (k − 1) // 2 for odd k) → BatchNorm1d (→ ReLU), indexed
    ``0``/``1``(/``2``) as fastai's ConvLayer and torchvision's ``downsample`` are."""
    layers: list[nn.Module] = [
        nn.Conv1d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=(kernel_size - 1) // 2,
            bias=False,
        ),
        nn.BatchNorm1d(out_channels),
    ]
    if relu:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def downsample1d(in_channels: int, out_channels: int, stride: int) -> nn.Sequential | None:
    """torchvision's projection shortcut: 1×1 conv (stride) → BN where the block changes the
    length or the width; None where the identity fits."""
    if stride == 1 and in_channels == out_channels:
        return None
    return conv_bn1d(in_channels, out_channels, 1, stride=stride)


def resnet_stem1d(
    in_channels: int, width: int, kernel_size: int
) -> tuple[nn.Conv1d, nn.BatchNorm1d, nn.ReLU, nn.MaxPool1d]:
    """torchvision's ResNet stem in 1-D: conv k (stride 2, no bias) → BN → ReLU → max-pool 3/2.

    Returned as separate modules, not a Sequential: the ports assign them to ``conv1``, ``bn1``,
    ``relu``, ``maxpool`` on the model itself, where their originals' state dicts put them.
    """
    conv = nn.Conv1d(
        in_channels, width, kernel_size, stride=2, padding=kernel_size // 2, bias=False
    )
    return (
        conv,
        nn.BatchNorm1d(width),
        nn.ReLU(inplace=True),
        nn.MaxPool1d(kernel_size=3, stride=2, padding=1),
    )


class SEModule1d(nn.Module):
    """Squeeze-and-excitation over channels: global average over time → Linear(C → C/r, no bias)
    → ReLU → Linear(→ C, no bias) → sigmoid, which rescales each channel."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool1d(1)
        # ``fc`` as a Sequential keeps SE-ResNet18's original state-dict names (se.fc.0 / .2).
        self.fc = nn.Sequential(
            nn.Linear(channels, channels // reduction, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(channels // reduction, channels, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.fc(self.avg_pool(x).flatten(1))
        return x * weights.unsqueeze(-1)


class BasicBlock1d(nn.Module):
    """Conv k (stride) → BN → ReLU → Dropout → Conv k → BN (→ SE), plus the shortcut (identity,
    or the given ``downsample``); add → ReLU.

    The block of the CPSC 2018 ResNet34 and, with ``se_reduction``, of the PhysioNet 2020
    SE-ResNet18; the dropout inside the block is those originals' addition to torchvision's
    BasicBlock. ``downsample`` is built by the caller, before the block, as the originals do,
    so seeded initialisations match theirs.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        kernel_size: int = 7,
        dropout: float = 0.2,
        se_reduction: int | None = None,
    ):
        super().__init__()
        padding = kernel_size // 2
        self.conv1 = nn.Conv1d(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False
        )
        self.bn1 = nn.BatchNorm1d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.relu2 = nn.ReLU(inplace=True)  # one module per use (explainers keep state per module)
        self.add = Add()  # the residual sum as a module (LRP gives it a rule)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv1d(out_channels, out_channels, kernel_size, padding=padding, bias=False)
        self.bn2 = nn.BatchNorm1d(out_channels)
        # Registered before ``downsample`` so state_dict() lists keys in SE-ResNet18's order.
        self.se = SEModule1d(out_channels, se_reduction) if se_reduction is not None else None
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.dropout(self.relu(self.bn1(self.conv1(x))))
        out = self.bn2(self.conv2(out))
        if self.se is not None:
            out = self.se(out)
        return self.relu2(self.add(out, identity))


# ------------------------------------------------------------------------------ Keras ports

# Keras BatchNormalization defaults: momentum 0.99 weights the *old* statistic, PyTorch's
# momentum weights the new batch, hence 1 - 0.99.
KERAS_BN_EPS = 1e-3
KERAS_BN_MOMENTUM = 0.01


def keras_batch_norm1d(channels: int) -> nn.BatchNorm1d:
    """BatchNorm1d with Keras' eps and momentum."""
    return nn.BatchNorm1d(channels, eps=KERAS_BN_EPS, momentum=KERAS_BN_MOMENTUM)


def init_keras_default(module: nn.Linear | nn.Conv1d) -> None:
    """Keras' Dense/Conv1D defaults: glorot-uniform kernel, zero bias. PyTorch's xavier uses
    the same fans for its (out, in[, k]) layout as Keras for (in, out) / (k, in, out)."""
    nn.init.xavier_uniform_(module.weight)
    if module.bias is not None:
        nn.init.zeros_(module.bias)


def same_length(length: int, stride: int) -> int:
    """Output length of a TensorFlow "same" convolution or pooling: ceil(length / stride)."""
    # Not -(-length // stride): traced into ONNX, whose integer Div truncates instead of
    # flooring, a negative numerator gives floor + 1 (a length one short, ecgx export).
    return (length + stride - 1) // stride


class Add(nn.Module):
    """A residual sum as a module (no weights). Relevance propagation (LRP) needs every
    operation that mixes values to be a module it can give a rule: a bare ``a + b`` would hand
    the sum's whole relevance to both terms, doubling it at every block."""

    #: LRP's epsilon rule is exact for it: relevance split between the terms by their share
    lrp_rule = "epsilon"

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b


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
        init_keras_default(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, L) → (N, out, ceil(L / stride)); (N, C, 1, L) inputs, best in channels-last
        memory, go through the 2-D kernel and come back as (N, out, 1, L')."""
        length = x.shape[-1]
        stride, kernel = self.stride[0], self.kernel_size[0]
        total = max((same_length(length, stride) - 1) * stride + kernel - length, 0)
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


# --------------------------------------------------------------------------- 2-D backbones


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of ``divisor`` (MobileNet/EfficientNet rule): to the
    nearest multiple, at least ``divisor``, and never more than 10 % below ``value``."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class ConvNormActivation(nn.Sequential):
    """Conv2d ("same" padding for odd kernels) → norm → activation, as a Sequential so that the
    state-dict names are ``0.weight`` (conv) and ``1.*`` (norm), torchvision's layout. The conv
    has a bias only when there is no norm layer after it."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        dilation: int = 1,
        norm: Callable[[int], nn.Module] | None = nn.BatchNorm2d,
        activation: Callable[[], nn.Module] | None = nn.ReLU,
    ) -> None:
        padding = (kernel_size - 1) // 2 * dilation
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=padding,
                dilation=dilation,
                groups=groups,
                bias=norm is None,
            )
        ]
        if norm is not None:
            layers.append(norm(out_channels))
        if activation is not None:
            layers.append(activation())
        super().__init__(*layers)
        self.out_channels = out_channels


class SqueezeExcitation(nn.Module):
    """Channel gating: global average → 1×1 conv ``fc1`` → activation → 1×1 conv ``fc2`` →
    gate (sigmoid, or hard sigmoid in MobileNetV3) → rescale the input's channels."""

    def __init__(
        self,
        channels: int,
        squeeze_channels: int,
        activation: Callable[[], nn.Module] = nn.ReLU,
        gate: Callable[[], nn.Module] = nn.Sigmoid,
    ) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, channels, 1)
        self.activation = activation()
        self.scale_activation = gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.fc2(self.activation(self.fc1(self.avgpool(x))))
        return x * self.scale_activation(scale)


class StochasticDepth(nn.Module):
    """Drop a residual branch per sample with probability ``p`` while training ("row" mode),
    scaling the kept ones by 1/(1 − p) so that the expectation matches evaluation."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"StochasticDepth: p={p} must be in [0, 1]")
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        survival = 1.0 - self.p
        keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(survival)
        if survival > 0.0:
            keep.div_(survival)
        return x * keep

    def extra_repr(self) -> str:
        return f"p={self.p}"
