"""ResNet-18 and ResNet-50 on chart images, as torchvision builds them (vision seed, spec 2.4).

He et al. 2016 with torchvision's choices: stem conv 7×7 s2 (64) → BN → ReLU → max-pool 3×3
s2; four stages (64/128/256/512 base widths, strides 1/2/2/2) of BasicBlocks (ResNet-18,
2-2-2-2) or Bottlenecks (ResNet-50, 3-4-6-3, expansion 4, stride on the 3×3 conv: "v1.5");
projection shortcuts (1×1 conv + BN) where shape changes; global average → ``fc``.
11,689,512 / 25,557,032 parameters at 1000 classes. The seed used ImageNet V1 weights for
ResNet-18 and V2 for ResNet-50 (the same architecture; only the training recipe differs).

Module names are torchvision's (``conv1``, ``bn1``, ``layer1..4.i.{conv1,bn1,...,downsample.0/1}``,
``fc``): :func:`ecgx.models.image.load_torchvision_weights` loads its state dicts directly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ecgx.models.image import ImageModel
from ecgx.models.layers import Add, init_conv_norm

__all__ = ["BasicBlock", "Bottleneck", "ResNet2d", "ResNet18", "ResNet50"]


class BasicBlock(nn.Module):
    """3×3 conv (stride) → BN → ReLU → 3×3 conv → BN, plus the shortcut; add → ReLU."""

    expansion = 1

    def __init__(
        self, in_channels: int, channels: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.relu2 = nn.ReLU(inplace=True)  # one module per use (explainers keep state per module)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.add = Add()  # the residual sum as a module (LRP gives it a rule)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(self.add(out, identity))


class Bottleneck(nn.Module):
    """1×1 conv (reduce) → BN → ReLU → 3×3 conv (stride) → BN → ReLU → 1×1 conv (×4) → BN, plus
    the shortcut; add → ReLU. The stride sits on the 3×3 conv, as in torchvision."""

    expansion = 4

    def __init__(
        self, in_channels: int, channels: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        out_channels = channels * self.expansion
        self.conv1 = nn.Conv2d(in_channels, channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv3 = nn.Conv2d(channels, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.relu2 = nn.ReLU(inplace=True)  # one module per use (explainers keep state per module)
        self.relu3 = nn.ReLU(inplace=True)
        self.add = Add()  # the residual sum as a module (LRP gives it a rule)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu3(self.add(out, identity))


class ResNet2d(ImageModel):
    """torchvision's ResNet for chart images; use :class:`ResNet18` or :class:`ResNet50`.

    ``forward_features`` gives the pooled 512 (ResNet-18) or 2048 (ResNet-50) features;
    ``forward_head`` is dropout (0 by default: torchvision has none) then ``fc``.
    ``target_layer`` is ``layer4``, the last spatial map.
    """

    target_layer = "layer4"
    head_prefix = "fc"
    block: type[BasicBlock] | type[Bottleneck] = BasicBlock
    layers: tuple[int, int, int, int] = (2, 2, 2, 2)

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 4,
        *,
        image_size: int | Sequence[int] = (224, 224),
        normalize: str | None = "imagenet",
        dropout: float = 0.0,
    ) -> None:
        super().__init__(in_channels, num_classes, image_size, normalize)
        self._channels = 64
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, self.layers[0], 1)
        self.layer2 = self._make_layer(128, self.layers[1], 2)
        self.layer3 = self._make_layer(256, self.layers[2], 2)
        self.layer4 = self._make_layer(512, self.layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.num_features = self._channels
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.num_features, num_classes)
        # torchvision's: Kaiming-normal (fan_out) convs, BN weight 1 / bias 0, fc left default.
        init_conv_norm(self)

    def _make_layer(self, channels: int, blocks: int, stride: int) -> nn.Sequential:
        out_channels = channels * self.block.expansion
        downsample = None
        if stride != 1 or self._channels != out_channels:
            downsample = nn.Sequential(
                nn.Conv2d(self._channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        modules = [self.block(self._channels, channels, stride, downsample)]
        self._channels = out_channels
        modules += [self.block(out_channels, channels) for _ in range(1, blocks)]
        return nn.Sequential(*modules)

    def backbone(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward_head(self, features: torch.Tensor, **extra: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(features))


class ResNet18(ResNet2d):
    """ResNet-18: BasicBlocks 2-2-2-2, 512 features."""

    block = BasicBlock
    layers = (2, 2, 2, 2)


class ResNet50(ResNet2d):
    """ResNet-50: Bottlenecks 3-4-6-3, 2048 features."""

    block = Bottleneck
    layers = (3, 4, 6, 3)
