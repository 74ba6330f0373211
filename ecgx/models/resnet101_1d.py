"""ResNet101-1D: the bottleneck ResNet of the IMLE-Net repository's PyTorch comparison models.

Port of ``models/resnet101.py`` of likith012/IMLE-Net (spec A5, ``resnet101(num_classes=5)``).
Module names follow the original (``conv1``, ``bn1``, ``layer1..4.i.{conv1..3,bn1..3,
downsample.{0,1}}``, ``fc``) so that its state dicts load one-to-one (``load_original_state_dict``).

Shapes for the defaults (12 × 1000): stem conv k15 s2 → (64, 500) → max-pool → (64, 250); four
bottleneck stages [3, 4, 23, 3] (widths 64/128/256/512, expansion 4, strides 1/2/2/2) →
(2048, 32); global average pool → 2048 features → Linear → logits. 156,889,221 trainable
parameters at 12 leads and 5 classes. The stem and the projection shortcut are
:mod:`ecgx.models.layers`' (shared with the CPSC ResNet34); the bottleneck, with its wide kernels
and dropout, is this port's own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ecgx.models.base import ECGModel
from ecgx.models.layers import Add, downsample1d, resnet_stem1d
from ecgx.models.weights import checked_copy

__all__ = ["Bottleneck1d", "ResNet101_1d", "load_original_state_dict"]


class Bottleneck1d(nn.Module):
    """Conv k7 → BN → ReLU → Conv k11 (stride) → BN → ReLU → Dropout → Conv k7 → BN, plus the
    shortcut (identity, or the given 1×1 conv + BN ``downsample``); add → ReLU.

    Unlike torchvision's bottleneck, the original uses wide kernels (7/11/7, "same" padding) in
    all three convolutions, which is what makes this network so large (≈157 M parameters).
    """

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        dropout: float = 0.2,
        kernel_sizes: Sequence[int] = (7, 11, 7),
    ):
        super().__init__()
        k1, k2, k3 = (int(k) for k in kernel_sizes)
        out_channels = planes * self.expansion
        self.conv1 = nn.Conv1d(in_channels, planes, k1, padding=k1 // 2, bias=False)
        self.bn1 = nn.BatchNorm1d(planes)
        self.conv2 = nn.Conv1d(planes, planes, k2, stride=stride, padding=k2 // 2, bias=False)
        self.bn2 = nn.BatchNorm1d(planes)
        self.conv3 = nn.Conv1d(planes, out_channels, k3, padding=k3 // 2, bias=False)
        self.bn3 = nn.BatchNorm1d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.relu2 = nn.ReLU(inplace=True)  # one module per use (explainers keep state per module)
        self.relu3 = nn.ReLU(inplace=True)
        self.add = Add()  # the residual sum as a module (LRP gives it a rule)
        self.dropout = nn.Dropout(dropout)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.dropout(self.relu2(self.bn2(self.conv2(out))))
        out = self.bn3(self.conv3(out))
        return self.relu3(self.add(out, identity))


class ResNet101_1d(ECGModel):
    """ResNet101-1D for (batch, leads, samples) inputs; returns logits (batch, num_classes).

    ``forward_features`` returns the globally pooled 2048 features; ``forward_head`` is ``fc``.
    ``target_layer`` is the last bottleneck (``layer4.2`` by default), the last feature map with
    a time axis. Any input length that survives the five halvings works (global pooling).
    """

    head_modules = ("fc",)

    input_shape = (12, 1000)
    seed_num_classes = 5

    def __init__(
        self,
        in_channels: int = 12,
        num_classes: int = 5,
        layers: Sequence[int] = (3, 4, 23, 3),
        widths: Sequence[int] = (64, 128, 256, 512),
        stem_kernel_size: int = 15,
        kernel_sizes: Sequence[int] = (7, 11, 7),
        dropout: float = 0.2,
    ):
        super().__init__()
        layers = tuple(int(n) for n in layers)
        widths = tuple(int(w) for w in widths)
        kernel_sizes = tuple(int(k) for k in kernel_sizes)
        if len(layers) != 4 or len(widths) != 4 or min(layers) < 1:
            raise ValueError(f"ResNet101_1d: need four stages of >= 1 block, got {layers}")
        if len(kernel_sizes) != 3 or any(k % 2 == 0 for k in kernel_sizes):
            # The residual add needs length-preserving ("same") convolutions: odd kernels.
            raise ValueError(f"ResNet101_1d: kernel_sizes={kernel_sizes} must be three odd ints")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.conv1, self.bn1, self.relu, self.maxpool = resnet_stem1d(
            in_channels, widths[0], stem_kernel_size
        )
        self._channels = widths[0]
        self.layer1 = self._make_layer(widths[0], layers[0], 1, dropout, kernel_sizes)
        self.layer2 = self._make_layer(widths[1], layers[1], 2, dropout, kernel_sizes)
        self.layer3 = self._make_layer(widths[2], layers[2], 2, dropout, kernel_sizes)
        self.layer4 = self._make_layer(widths[3], layers[3], 2, dropout, kernel_sizes)
        self.avgpool = nn.AdaptiveAvgPool1d(1)
        self.num_features = self._channels
        self.fc = nn.Linear(self.num_features, num_classes)
        self.target_layer = f"layer4.{layers[3] - 1}"
        self._init_weights()

    def _make_layer(
        self, planes: int, blocks: int, stride: int, dropout: float, kernel_sizes: Sequence[int]
    ) -> nn.Sequential:
        out_channels = planes * Bottleneck1d.expansion
        downsample = downsample1d(self._channels, out_channels, stride)
        modules = [Bottleneck1d(self._channels, planes, stride, downsample, dropout, kernel_sizes)]
        self._channels = out_channels
        modules += [
            Bottleneck1d(out_channels, planes, 1, None, dropout, kernel_sizes)
            for _ in range(1, blocks)
        ]
        return nn.Sequential(*modules)

    def _init_weights(self) -> None:
        # The original's (torchvision-2-D-derived) rule: N(0, sqrt(2 / (k² · out))) with k the
        # 1-D kernel size squared as if it were a k×k kernel; BN weight 1, bias 0.
        for module in self.modules():
            if isinstance(module, nn.Conv1d):
                fan = module.kernel_size[0] * module.kernel_size[0] * module.out_channels
                nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan))
            elif isinstance(module, nn.BatchNorm1d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward_features(self, x: torch.Tensor, **extra: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"ResNet101_1d expects (batch, model.in_channels={self.in_channels}, samples) "
                f"inputs, got shape {tuple(x.shape)}"
            )
        out = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.avgpool(out).flatten(1)

    def forward_head(self, features: torch.Tensor, **extra: torch.Tensor) -> torch.Tensor:
        return self.fc(features)


def load_original_state_dict(model: ResNet101_1d, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Load a state dict of the original ``ResNet`` (IMLE-Net ``models/resnet101.py``).

    ecgx keeps the original's module names, so this is a checked copy: a ``module.`` prefix
    (``DataParallel`` checkpoints) is stripped, ``num_batches_tracked`` may be absent, and any
    unknown key, missing key or shape mismatch raises ``KeyError``/``ValueError`` naming the key
    before anything is copied. Values are cast to the model's dtype.
    """
    checked_copy(model, state_dict, hint="check in_channels and num_classes")
