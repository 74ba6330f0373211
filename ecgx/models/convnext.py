"""ConvNeXt-Tiny and ConvNeXt-Base on chart images, as torchvision builds them (spec 2.4).

Liu et al. 2022 with torchvision's layout: ``features`` is [stem, stage 1, downsample, stage 2,
downsample, stage 3, downsample, stage 4]; the stem is a 4×4 stride-4 conv + channels-last
LayerNorm, each downsample a LayerNorm + 2×2 stride-2 conv. A block is depthwise 7×7 conv →
LayerNorm → Linear (×4) → GELU → Linear (÷4), scaled per channel by ``layer_scale`` (initial
1e-6), dropped per sample by stochastic depth (rate rising linearly from 0 at the first block
to the model's rate at the last), plus the identity. Head: global average → LayerNorm →
flatten → Linear. LayerNorm eps 1e-6 throughout.

Tiny: widths 96/192/384/768, blocks 3-3-9-3, stochastic depth 0.1 (28,589,128 parameters at
1000 classes). Base: 128/256/512/1024, 3-3-27-3, stochastic depth 0.5 (torchvision's default
for Base; 88,591,464 parameters). Names are torchvision's (``features.i.j.block.k``,
``features.i.j.layer_scale``, ``classifier.{0,2}``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ecgx.models.image import ImageModel
from ecgx.models.layers import StochasticDepth

__all__ = ["CNBlock", "ConvNeXt", "ConvNeXtBase", "ConvNeXtTiny", "LayerNorm2d"]

LAYER_NORM_EPS = 1e-6


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a (batch, C, H, W) map (normalised per pixel)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class Permute(nn.Module):
    """Reorder dimensions; a module so the block's Sequential indices match torchvision's."""

    def __init__(self, dims: Sequence[int]) -> None:
        super().__init__()
        self.dims = tuple(dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(*self.dims)


class CNBlock(nn.Module):
    """ConvNeXt block: the residual branch is computed channels-last so that the LayerNorm and
    the two pointwise layers are plain ``nn.LayerNorm`` / ``nn.Linear`` (torchvision's names)."""

    def __init__(self, dim: int, layer_scale: float, stochastic_depth: float) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim, bias=True),
            Permute((0, 2, 3, 1)),
            nn.LayerNorm(dim, eps=LAYER_NORM_EPS),
            nn.Linear(dim, 4 * dim, bias=True),
            nn.GELU(),
            nn.Linear(4 * dim, dim, bias=True),
            Permute((0, 3, 1, 2)),
        )
        self.layer_scale = nn.Parameter(torch.full((dim, 1, 1), float(layer_scale)))
        self.stochastic_depth = StochasticDepth(stochastic_depth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.stochastic_depth(self.layer_scale * self.block(x))


class ConvNeXt(ImageModel):
    """torchvision's ConvNeXt for chart images; use :class:`ConvNeXtTiny` or
    :class:`ConvNeXtBase`.

    ``forward_features`` gives the pooled, LayerNorm-ed feature vector (768 / 1024), the input of
    the last Linear; ``forward_head`` is dropout (0 by default: torchvision has none) then
    ``classifier.2``. ``target_layer`` is ``features`` (its output is stage 4's map).
    """

    target_layer = "features"
    head_prefix = "classifier.2"
    widths: tuple[int, ...] = (96, 192, 384, 768)
    depths: tuple[int, ...] = (3, 3, 9, 3)
    default_stochastic_depth = 0.1

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 4,
        *,
        image_size: int | Sequence[int] = (224, 224),
        normalize: str | None = "imagenet",
        dropout: float = 0.0,
        stochastic_depth: float | None = None,
        layer_scale: float = 1e-6,
    ) -> None:
        super().__init__(in_channels, num_classes, image_size, normalize)
        if stochastic_depth is None:
            stochastic_depth = self.default_stochastic_depth
        self.stochastic_depth = float(stochastic_depth)
        widths, depths = self.widths, self.depths
        stem = nn.Sequential(
            nn.Conv2d(3, widths[0], kernel_size=4, stride=4, bias=True),
            LayerNorm2d(widths[0], eps=LAYER_NORM_EPS),
        )
        layers: list[nn.Module] = [stem]
        total = sum(depths)
        index = 0
        for stage, (width, depth) in enumerate(zip(widths, depths, strict=True)):
            blocks = []
            for _ in range(depth):
                # Linear in the block's position over the whole network: 0 first, rate last.
                rate = self.stochastic_depth * index / (total - 1.0) if total > 1 else 0.0
                blocks.append(CNBlock(width, layer_scale, rate))
                index += 1
            layers.append(nn.Sequential(*blocks))
            if stage + 1 < len(widths):
                layers.append(
                    nn.Sequential(
                        LayerNorm2d(width, eps=LAYER_NORM_EPS),
                        nn.Conv2d(width, widths[stage + 1], kernel_size=2, stride=2),
                    )
                )
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.num_features = widths[-1]
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Sequential(
            LayerNorm2d(widths[-1], eps=LAYER_NORM_EPS),
            nn.Flatten(1),
            nn.Linear(widths[-1], num_classes),
        )
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's: truncated normal (std 0.02) for convs and linears, zero biases.
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def backbone(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier[1](self.classifier[0](x))

    def forward_head(self, features: torch.Tensor, **extra: torch.Tensor) -> torch.Tensor:
        return self.classifier[2](self.dropout(features))


class ConvNeXtTiny(ConvNeXt):
    """ConvNeXt-T: 96/192/384/768 × 3-3-9-3, stochastic depth 0.1, 768 features."""

    widths = (96, 192, 384, 768)
    depths = (3, 3, 9, 3)
    default_stochastic_depth = 0.1


class ConvNeXtBase(ConvNeXt):
    """ConvNeXt-B: 128/256/512/1024 × 3-3-27-3, stochastic depth 0.5, 1024 features."""

    widths = (128, 256, 512, 1024)
    depths = (3, 3, 27, 3)
    default_stochastic_depth = 0.5
