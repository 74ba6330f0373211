"""MobileNetV3-Small and -Large on chart images, as torchvision builds them (spec 2.4).

Howard et al. 2019 with torchvision's layout: ``features`` is [stem 3×3 s2 conv-BN-hardswish
(16), the inverted-residual blocks of the table below, 1×1 conv-BN-hardswish to 6× the last
width]; global average → ``classifier`` = [Linear → 1024 (Small) / 1280 (Large), hardswish,
dropout 0.2, Linear → classes]. A block is [1×1 expand conv-BN-act (absent when the expanded
width equals the input's), k×k depthwise conv-BN-act, optional squeeze-excitation (squeeze =
expanded/4 rounded to 8, ReLU, hard sigmoid), 1×1 project conv-BN], plus the identity when
shapes allow; act is ReLU or hardswish per block. BatchNorm eps 1e-3, momentum 0.01.

Small: 2,542,856 parameters at 1000 classes; Large: 5,483,032. Names are torchvision's
(``features.i.block.j``, ``classifier.{0,3}``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch import nn

from ecgx.models.image import ImageModel
from ecgx.models.layers import (
    ConvNormActivation,
    SqueezeExcitation,
    init_conv_norm,
    make_divisible,
)

__all__ = ["InvertedResidual", "MobileNetV3", "MobileNetV3Large", "MobileNetV3Small"]

#: (in, kernel, expanded, out, squeeze-excitation, hardswish, stride) per block
LARGE_BLOCKS = (
    (16, 3, 16, 16, False, False, 1),
    (16, 3, 64, 24, False, False, 2),
    (24, 3, 72, 24, False, False, 1),
    (24, 5, 72, 40, True, False, 2),
    (40, 5, 120, 40, True, False, 1),
    (40, 5, 120, 40, True, False, 1),
    (40, 3, 240, 80, False, True, 2),
    (80, 3, 200, 80, False, True, 1),
    (80, 3, 184, 80, False, True, 1),
    (80, 3, 184, 80, False, True, 1),
    (80, 3, 480, 112, True, True, 1),
    (112, 3, 672, 112, True, True, 1),
    (112, 5, 672, 160, True, True, 2),
    (160, 5, 960, 160, True, True, 1),
    (160, 5, 960, 160, True, True, 1),
)
SMALL_BLOCKS = (
    (16, 3, 16, 16, True, False, 2),
    (16, 3, 72, 24, False, False, 2),
    (24, 3, 88, 24, False, False, 1),
    (24, 5, 96, 40, True, True, 2),
    (40, 5, 240, 40, True, True, 1),
    (40, 5, 240, 40, True, True, 1),
    (40, 5, 120, 48, True, True, 1),
    (48, 5, 144, 48, True, True, 1),
    (48, 5, 288, 96, True, True, 2),
    (96, 5, 576, 96, True, True, 1),
    (96, 5, 576, 96, True, True, 1),
)


class InvertedResidual(nn.Module):
    """MobileNetV3 block (no stochastic depth, unlike EfficientNet's MBConv)."""

    def __init__(
        self,
        in_channels: int,
        kernel_size: int,
        expanded: int,
        out_channels: int,
        use_se: bool,
        use_hardswish: bool,
        stride: int,
        norm: Callable[[int], nn.Module],
    ) -> None:
        super().__init__()
        self.use_res_connect = stride == 1 and in_channels == out_channels
        activation = nn.Hardswish if use_hardswish else nn.ReLU
        layers: list[nn.Module] = []
        if expanded != in_channels:
            layers.append(
                ConvNormActivation(in_channels, expanded, 1, norm=norm, activation=activation)
            )
        layers.append(
            ConvNormActivation(
                expanded,
                expanded,
                kernel_size,
                stride=stride,
                groups=expanded,
                norm=norm,
                activation=activation,
            )
        )
        if use_se:
            squeeze = make_divisible(expanded // 4, 8)
            layers.append(SqueezeExcitation(expanded, squeeze, gate=nn.Hardsigmoid))
        layers.append(ConvNormActivation(expanded, out_channels, 1, norm=norm, activation=None))
        self.block = nn.Sequential(*layers)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return out + x if self.use_res_connect else out


class MobileNetV3(ImageModel):
    """torchvision's MobileNetV3 for chart images; use :class:`MobileNetV3Small` or
    :class:`MobileNetV3Large`.

    ``forward_features`` gives the 1024 (Small) / 1280 (Large) vector after the first classifier
    Linear and hardswish, the input of the last Linear; ``forward_head`` is dropout then
    ``classifier.3``. ``target_layer`` is ``features`` (its output is the last 1×1 conv's map).
    """

    target_layer = "features"
    head_prefix = "classifier.3"
    blocks: tuple[tuple, ...] = LARGE_BLOCKS
    last_channel = 1280

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 4,
        *,
        image_size: int | Sequence[int] = (224, 224),
        normalize: str | None = "imagenet",
        dropout: float = 0.2,
    ) -> None:
        super().__init__(in_channels, num_classes, image_size, normalize)
        norm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)
        layers: list[nn.Module] = [
            ConvNormActivation(
                3, self.blocks[0][0], 3, stride=2, norm=norm, activation=nn.Hardswish
            )
        ]
        layers += [InvertedResidual(*spec, norm=norm) for spec in self.blocks]
        last_in = self.blocks[-1][3]
        layers.append(
            ConvNormActivation(last_in, 6 * last_in, 1, norm=norm, activation=nn.Hardswish)
        )
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.num_features = self.last_channel
        self.classifier = nn.Sequential(
            nn.Linear(6 * last_in, self.last_channel),
            nn.Hardswish(inplace=True),
            # Not in place (torchvision's is): forward_head must not overwrite the caller's
            # feature tensor (explainers keep it).
            nn.Dropout(p=dropout),
            nn.Linear(self.last_channel, num_classes),
        )
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's: Kaiming-normal (fan_out) convs, unit norms, N(0, 0.01) linears,
        # all biases zero.
        init_conv_norm(self)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.01)
                nn.init.zeros_(module.bias)

    def backbone(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.avgpool(self.features(x)), 1)
        return self.classifier[1](self.classifier[0](x))

    def forward_head(self, features: torch.Tensor, **extra: torch.Tensor) -> torch.Tensor:
        return self.classifier[3](self.classifier[2](features))


class MobileNetV3Small(MobileNetV3):
    """MobileNetV3-Small: 11 blocks, 576 → 1024 features."""

    blocks = SMALL_BLOCKS
    last_channel = 1024


class MobileNetV3Large(MobileNetV3):
    """MobileNetV3-Large: 15 blocks, 960 → 1280 features."""

    blocks = LARGE_BLOCKS
    last_channel = 1280
