"""EfficientNet-B0 and EfficientNet-B3 on chart images, as torchvision builds them (spec 2.4).

Tan & Le 2019 (V1) with torchvision's layout: ``features`` is [stem 3×3 s2 conv-BN-SiLU,
seven stages of MBConv blocks, 1×1 conv-BN-SiLU to 4× the last width]; global average →
``classifier`` = [dropout, Linear]. An MBConv block is [1×1 expand conv-BN-SiLU (absent at
expansion 1), k×k depthwise conv-BN-SiLU, squeeze-excitation (squeeze = input channels / 4,
SiLU, sigmoid), 1×1 project conv-BN], plus the identity with stochastic depth where shapes
allow; the stochastic-depth rate rises linearly to 0.2 over the blocks.

B0 (width 1.0, depth 1.0, dropout 0.2) has 5,288,548 parameters at 1000 classes and 1280
features; B3 (width 1.2, depth 1.4, dropout 0.3; the seed's images are 300 × 300) has
12,233,232 and 1536. Channel counts are rounded to multiples of 8 and depths rounded up,
as torchvision does. BatchNorm keeps PyTorch's defaults (eps 1e-5, momentum 0.1): torchvision
uses eps 1e-3 / momentum 0.01 only for B5-B7 and the V2 family, not for B0-B4.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from ecgx.models.image import ImageModel
from ecgx.models.layers import (
    ConvNormActivation,
    SqueezeExcitation,
    StochasticDepth,
    init_conv_norm,
    make_divisible,
)

__all__ = ["MBConv", "EfficientNet", "EfficientNetB0", "EfficientNetB3"]

#: (expansion, kernel, stride, in channels, out channels, blocks) of the B0 stages
B0_STAGES = (
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
)


class MBConv(nn.Module):
    """Mobile inverted bottleneck with squeeze-excitation (EfficientNet V1)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        expansion: float,
        kernel_size: int,
        stride: int,
        stochastic_depth: float,
        norm: Callable[[int], nn.Module] = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        self.use_res_connect = stride == 1 and in_channels == out_channels
        expanded = make_divisible(in_channels * expansion, 8)
        layers: list[nn.Module] = []
        if expanded != in_channels:
            layers.append(
                ConvNormActivation(in_channels, expanded, 1, norm=norm, activation=nn.SiLU)
            )
        layers.append(
            ConvNormActivation(
                expanded,
                expanded,
                kernel_size,
                stride=stride,
                groups=expanded,
                norm=norm,
                activation=nn.SiLU,
            )
        )
        layers.append(SqueezeExcitation(expanded, max(1, in_channels // 4), activation=nn.SiLU))
        layers.append(ConvNormActivation(expanded, out_channels, 1, norm=norm, activation=None))
        self.block = nn.Sequential(*layers)
        self.stochastic_depth = StochasticDepth(stochastic_depth)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        if self.use_res_connect:
            out = self.stochastic_depth(out) + x
        return out


class EfficientNet(ImageModel):
    """torchvision's EfficientNet (V1) for chart images; use :class:`EfficientNetB0` or
    :class:`EfficientNetB3`.

    ``forward_features`` gives the pooled 1280 (B0) / 1536 (B3) features; ``forward_head`` is
    ``classifier`` (dropout, Linear). ``target_layer`` is ``features`` (its output is the last
    1×1 conv's map).
    """

    target_layer = "features"
    head_prefix = "classifier.1"
    width_multiplier = 1.0
    depth_multiplier = 1.0

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 4,
        *,
        image_size: int | Sequence[int] = (224, 224),
        normalize: str | None = "imagenet",
        dropout: float = 0.2,
        stochastic_depth: float = 0.2,
    ) -> None:
        super().__init__(in_channels, num_classes, image_size, normalize)
        norm = nn.BatchNorm2d
        stages = [
            (
                expansion,
                kernel,
                stride,
                make_divisible(c_in * self.width_multiplier, 8),
                make_divisible(c_out * self.width_multiplier, 8),
                int(math.ceil(blocks * self.depth_multiplier)),
            )
            for expansion, kernel, stride, c_in, c_out, blocks in B0_STAGES
        ]
        layers: list[nn.Module] = [
            ConvNormActivation(3, stages[0][3], 3, stride=2, norm=norm, activation=nn.SiLU)
        ]
        total = sum(stage[5] for stage in stages)
        index = 0
        for expansion, kernel, stride, c_in, c_out, blocks in stages:
            stage: list[nn.Module] = []
            for block in range(blocks):
                # Only the first block of a stage changes width and resolution.
                stage.append(
                    MBConv(
                        c_in if block == 0 else c_out,
                        c_out,
                        expansion,
                        kernel,
                        stride if block == 0 else 1,
                        stochastic_depth * index / total,
                        norm,
                    )
                )
                index += 1
            layers.append(nn.Sequential(*stage))
        last_in = stages[-1][4]
        self.num_features = 4 * last_in
        layers.append(
            ConvNormActivation(last_in, self.num_features, 1, norm=norm, activation=nn.SiLU)
        )
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            # Not in place (torchvision's is): forward_head must not overwrite the caller's
            # feature tensor (explainers keep it).
            nn.Dropout(p=dropout),
            nn.Linear(self.num_features, num_classes),
        )
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's: Kaiming-normal (fan_out) convs, unit norms, and a uniform
        # ±1/sqrt(classes) classifier, all biases zero.
        init_conv_norm(self)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                bound = 1.0 / math.sqrt(module.out_features)
                nn.init.uniform_(module.weight, -bound, bound)
                nn.init.zeros_(module.bias)

    def backbone(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.avgpool(self.features(x)), 1)

    def forward_head(self, features: torch.Tensor, **extra: torch.Tensor) -> torch.Tensor:
        return self.classifier(features)


class EfficientNetB0(EfficientNet):
    """EfficientNet-B0: width 1.0, depth 1.0, dropout 0.2, 224 × 224, 1280 features."""

    width_multiplier = 1.0
    depth_multiplier = 1.0


class EfficientNetB3(EfficientNet):
    """EfficientNet-B3: width 1.2, depth 1.4, dropout 0.3, 300 × 300 (the seed's size),
    1536 features."""

    input_shape = (3, 300 * 300)
    width_multiplier = 1.2
    depth_multiplier = 1.4

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 4,
        *,
        image_size: int | Sequence[int] = (300, 300),
        normalize: str | None = "imagenet",
        dropout: float = 0.3,
        stochastic_depth: float = 0.2,
    ) -> None:
        super().__init__(
            in_channels,
            num_classes,
            image_size=image_size,
            normalize=normalize,
            dropout=dropout,
            stochastic_depth=stochastic_depth,
        )
