"""A compact 1D ResNet: ecgx's default model, sized to train on a 2-core CPU in minutes.

Not a port of a seed model. Residual basic blocks (He et al. 2016) with a stride-2 stem and a
stride-2 first block per stage, and the average+max pooled head of the CPSC seed's ResNet34.
About 0.4 M parameters; at 12 × 1000 inputs it trains several hundred records/s on 2 cores.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ecgx.models.base import ECGModel
from ecgx.models.layers import Add, downsample1d


class BasicBlock1d(nn.Module):
    """The computation of :class:`ecgx.models.layers.BasicBlock1d`, under its own names
    (``body.i``, ``shortcut``, ``act``): checkpoints of the default model use them, and it
    builds its shortcut after the body, so seeded initialisations differ from the shared one."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, dropout: float):
        super().__init__()
        pad = kernel_size // 2
        self.body = nn.Sequential(
            nn.Conv1d(c_in, c_out, kernel_size, stride, pad, bias=False),
            nn.BatchNorm1d(c_out),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Conv1d(c_out, c_out, kernel_size, 1, pad, bias=False),
            nn.BatchNorm1d(c_out),
        )
        shortcut = downsample1d(c_in, c_out, stride)
        self.shortcut: nn.Module = nn.Identity() if shortcut is None else shortcut
        self.act = nn.ReLU(inplace=True)
        self.add = Add()  # the residual sum as a module (LRP gives it a rule)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.add(self.body(x), self.shortcut(x)))


class CompactResNet1d(ECGModel):
    """Stem (conv k15 s2) -> stages of basic blocks (each halves the length) -> avg+max -> linear.

    Args:
        in_channels: leads.
        num_classes: outputs (logits).
        widths: channels per stage; one stride-2 block each, plus ``blocks_per_stage - 1``.
    """

    target_layer = "stages"

    def __init__(
        self,
        in_channels: int = 12,
        num_classes: int = 5,
        widths: Sequence[int] = (32, 64, 128, 128),
        blocks_per_stage: int = 1,
        kernel_size: int = 7,
        stem_width: int = 32,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv1d(in_channels, stem_width, 15, 2, 7, bias=False),
            nn.BatchNorm1d(stem_width),
            nn.ReLU(inplace=True),
        )
        blocks: list[nn.Module] = []
        c = stem_width
        for width in widths:
            for b in range(blocks_per_stage):
                blocks.append(BasicBlock1d(c, width, kernel_size, 2 if b == 0 else 1, dropout))
                c = width
        self.stages = nn.Sequential(*blocks)
        # Pooling as modules (not h.mean / h.amax): LRP redistributes relevance by each layer's
        # rule, and a functional mean would spread it evenly instead of by contribution.
        self.avg_pool = nn.AdaptiveAvgPool1d(1)
        self.max_pool = nn.AdaptiveMaxPool1d(1)
        self.num_features = 2 * c
        self.head = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor, **extra: torch.Tensor) -> torch.Tensor:
        h = self.stages(self.stem(x))
        return torch.cat([self.avg_pool(h).flatten(1), self.max_pool(h).flatten(1)], dim=1)

    def forward_head(self, features: torch.Tensor, **extra: torch.Tensor) -> torch.Tensor:
        return self.head(features)
