"""ResNet34-1D of the CPSC 2018 study: BasicBlocks with dropout and an avg+max pooled head.

Port of the ``resnet34`` of the CPSC 2018 repository's ``resnet.py`` (spec B3). Module names follow
the original (``conv1``, ``bn1``, ``layer1..4.i.{conv1,bn1,conv2,bn2,downsample.{0,1}}``,
``fc``) so that its state dicts load one-to-one (``load_original_state_dict``).

Shapes as trained (12 × 15000): stem conv k15 s2 → (64, 7500) → max-pool → (64, 3750); stages
[3, 4, 6, 3] of BasicBlocks (64/128/256/512 channels, strides 1/2/2/2) → (512, 469); the
concatenation of global average and global max pooling → 1024 features → Linear → logits.
16,610,185 trainable parameters at 12 leads and 9 classes. The lead count is a config choice
(the study trains on lead subsets), so ``in_channels`` only sizes the stem.

The block (``BasicBlock1d``: torchvision's with a dropout after the first ReLU), the stem and the
projection shortcut are :mod:`ecgx.models.layers`', shared with SE-ResNet18 and ResNet101-1D.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ecgx.models.base import ECGModel
from ecgx.models.layers import BasicBlock1d, downsample1d, resnet_stem1d
from ecgx.models.weights import checked_copy

__all__ = ["BasicBlock1d", "ResNet34CPSC", "load_original_state_dict"]


class ResNet34CPSC(ECGModel):
    """CPSC ResNet34-1D for (batch, leads, samples) inputs; returns logits (batch, num_classes).

    ``forward_features`` returns the concatenated [average, max] pooled features (batch, 1024);
    ``forward_head`` is ``fc``. ``target_layer`` is the last BasicBlock (``layer4.2``), the last
    feature map with a time axis. Global pooling makes any sufficiently long input work (the
    reference vectors use 5000 samples; the study trains on 15000).
    """

    head_modules = ("fc",)

    input_shape = (12, 15000)
    seed_num_classes = 9

    def __init__(
        self,
        in_channels: int = 12,
        num_classes: int = 9,
        layers: Sequence[int] = (3, 4, 6, 3),
        widths: Sequence[int] = (64, 128, 256, 512),
        stem_kernel_size: int = 15,
        kernel_size: int = 7,
        dropout: float = 0.2,
    ):
        super().__init__()
        layers = tuple(int(n) for n in layers)
        widths = tuple(int(w) for w in widths)
        if len(layers) != 4 or len(widths) != 4 or min(layers) < 1:
            raise ValueError(f"ResNet34CPSC: need four stages of >= 1 block, got {layers}")
        if kernel_size % 2 == 0:
            # The residual add needs length-preserving ("same") convolutions: an odd kernel.
            raise ValueError(f"ResNet34CPSC: kernel_size={kernel_size} must be odd")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.conv1, self.bn1, self.relu, self.maxpool = resnet_stem1d(
            in_channels, widths[0], stem_kernel_size
        )
        self._channels = widths[0]
        strides = (1, 2, 2, 2)
        self.layer1 = self._make_layer(widths[0], layers[0], strides[0], kernel_size, dropout)
        self.layer2 = self._make_layer(widths[1], layers[1], strides[1], kernel_size, dropout)
        self.layer3 = self._make_layer(widths[2], layers[2], strides[2], kernel_size, dropout)
        self.layer4 = self._make_layer(widths[3], layers[3], strides[3], kernel_size, dropout)
        self.avgpool = nn.AdaptiveAvgPool1d(1)
        self.maxpool_head = nn.AdaptiveMaxPool1d(1)
        self.num_features = 2 * self._channels
        self.fc = nn.Linear(self.num_features, num_classes)
        self.target_layer = f"layer4.{layers[3] - 1}"

    def _make_layer(
        self, channels: int, blocks: int, stride: int, kernel_size: int, dropout: float
    ) -> nn.Sequential:
        downsample = downsample1d(self._channels, channels, stride)
        modules = [BasicBlock1d(self._channels, channels, stride, downsample, kernel_size, dropout)]
        self._channels = channels
        modules += [
            BasicBlock1d(channels, channels, 1, None, kernel_size, dropout)
            for _ in range(1, blocks)
        ]
        return nn.Sequential(*modules)

    def forward_features(self, x: torch.Tensor, **extra: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"ResNet34CPSC expects (batch, model.in_channels={self.in_channels}, samples) "
                f"inputs, got shape {tuple(x.shape)}"
            )
        out = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        # The original concatenates average then max pooling (order matters for fc's columns).
        return torch.cat((self.avgpool(out), self.maxpool_head(out)), dim=1).flatten(1)

    def forward_head(self, features: torch.Tensor, **extra: torch.Tensor) -> torch.Tensor:
        return self.fc(features)


def load_original_state_dict(model: ResNet34CPSC, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Load a state dict of the original CPSC ``resnet34`` into ``model``.

    ecgx keeps the original's module names (the unused head dropout has no parameters), so this
    is a checked copy: a ``module.`` prefix (``DataParallel`` checkpoints) is stripped,
    ``num_batches_tracked`` may be absent, and any unknown key, missing key or shape mismatch
    raises ``KeyError``/``ValueError`` naming the key before anything is copied. Values are cast
    to the model's dtype.
    """
    checked_copy(model, state_dict, hint="check in_channels and num_classes")
