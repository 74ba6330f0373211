"""SE-ResNet18 of the PhysioNet/CinC 2020 entry "Adaptive Lead Weighted ResNet", with demographics.

Port of ``models/SEResnet1dag.py`` (``resnet18(in_channel=12, out_channel=24)``, ``forward(x,
ag)``) of the original Physionet2020model repository (spec 1.2; the refactor keeps the network).
Module names follow the original (``conv1``, ``bn1``, ``layer1..4.i.{conv1,bn1,conv2,bn2,
se.fc.{0,2},downsample.{0,1}}``, ``fc1``, ``fc``) so its state dicts load one-to-one
(``load_original_state_dict``).

Shapes as trained (12 × 4096): stem conv k15 s2 → (64, 2048) → max-pool → (64, 1024); four stages
of two SE BasicBlocks (64/128/256/512 channels, strides 1/2/2/2) → (512, 128); global average →
512 features. The demographic vector (d = 5 in the original: age/100, 0, female, male,
sex-known) goes through ``fc1`` (d → 10, no activation) and is concatenated *before* the CNN
features: [10, 512] → ``fc`` → logits. 8,837,060 trainable parameters at 24 classes, d = 5.
The "adaptive lead weighting" of the title is the SE blocks; there is no lead-attention layer.
The block is the CPSC ResNet34's with an SE module; it, the SE module, the stem and the projection
shortcut are :mod:`ecgx.models.layers`'.

``forward_windows`` reproduces the original's full-length evaluation (spec 1.4): sigmoid outputs
averaged over overlapping 4096-sample windows, window 0 being the whole signal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ecgx.models.base import ECGModel
from ecgx.models.layers import (
    BasicBlock1d,
    SEModule1d,
    downsample1d,
    init_conv_norm,
    resnet_stem1d,
)
from ecgx.models.weights import checked_copy
from ecgx.training.windows import ChallengeWindows

__all__ = [
    "SEBasicBlock1d",
    "SEModule1d",
    "SEResNet18",
    "load_original_state_dict",
    "sliding_windows",
]


class SEBasicBlock1d(BasicBlock1d):
    """The shared :class:`~ecgx.models.layers.BasicBlock1d` with the SE module always on, under
    the original's name: Conv k7 (stride) → BN → ReLU → Dropout → Conv k7 → BN → SE, plus the
    shortcut (identity, or the given 1×1 conv + BN ``downsample``); add → ReLU."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        kernel_size: int = 7,
        dropout: float = 0.2,
        reduction: int = 16,
    ):
        super().__init__(
            in_channels,
            out_channels,
            stride,
            downsample,
            kernel_size,
            dropout,
            se_reduction=reduction,
        )


def sliding_windows(length: int, window: int = 4096, overlap: int = 256) -> list[tuple[int, int]]:
    """The original's evaluation windows as (start, stop) sample ranges over a record of
    ``length`` (window 0 the whole signal): :class:`ecgx.training.windows.ChallengeWindows`."""
    return ChallengeWindows(window, overlap).spans(length)


class SEResNet18(ECGModel):
    """SE-ResNet18 for (batch, leads, samples) inputs plus optional ``demographics`` (batch, d).

    ``forward_features`` returns the globally pooled 512 CNN features; ``forward_head`` maps the
    demographics through ``fc1``, concatenates [demographics, CNN] and applies ``fc``. Without
    ``demographics`` a zero vector is used (``fc1`` then contributes only its bias), so generic
    code can call ``model(x)``. ``target_layer`` is the last block (``layer4.1``).
    """

    head_modules = ("fc1", "fc")  # the demographic branch joins the head

    extra_inputs = ("demographics",)
    input_shape = (12, 4096)
    seed_num_classes = 24

    def __init__(
        self,
        in_channels: int = 12,
        num_classes: int = 24,
        demographics_dim: int = 5,
        demographics_features: int = 10,
        layers: Sequence[int] = (2, 2, 2, 2),
        widths: Sequence[int] = (64, 128, 256, 512),
        stem_kernel_size: int = 15,
        kernel_size: int = 7,
        dropout: float = 0.2,
        reduction: int = 16,
    ):
        super().__init__()
        layers = tuple(int(n) for n in layers)
        widths = tuple(int(w) for w in widths)
        if len(layers) != 4 or len(widths) != 4 or min(layers) < 1:
            raise ValueError(f"SEResNet18: need four stages of >= 1 block, got {layers}")
        if kernel_size % 2 == 0:
            # The residual add needs length-preserving ("same") convolutions: an odd kernel.
            raise ValueError(f"SEResNet18: kernel_size={kernel_size} must be odd")
        if demographics_dim < 1:
            raise ValueError(f"SEResNet18: demographics_dim={demographics_dim} must be >= 1")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.demographics_dim = demographics_dim
        self.conv1, self.bn1, self.relu, self.maxpool = resnet_stem1d(
            in_channels, widths[0], stem_kernel_size
        )
        self._channels = widths[0]
        block = (kernel_size, dropout, reduction)
        self.layer1 = self._make_layer(widths[0], layers[0], 1, *block)
        self.layer2 = self._make_layer(widths[1], layers[1], 2, *block)
        self.layer3 = self._make_layer(widths[2], layers[2], 2, *block)
        self.layer4 = self._make_layer(widths[3], layers[3], 2, *block)
        self.avgpool = nn.AdaptiveAvgPool1d(1)
        self.num_features = self._channels
        self.fc1 = nn.Linear(demographics_dim, demographics_features)
        self.fc = nn.Linear(demographics_features + self.num_features, num_classes)
        self.target_layer = f"layer4.{layers[3] - 1}"
        # The original's init (torchvision's): Kaiming-normal (fan_out) convolutions, BN 1 / 0.
        init_conv_norm(self)

    def _make_layer(
        self,
        channels: int,
        blocks: int,
        stride: int,
        kernel_size: int,
        dropout: float,
        reduction: int,
    ) -> nn.Sequential:
        downsample = downsample1d(self._channels, channels, stride)
        modules = [
            SEBasicBlock1d(
                self._channels, channels, stride, downsample, kernel_size, dropout, reduction
            )
        ]
        self._channels = channels
        modules += [
            SEBasicBlock1d(channels, channels, 1, None, kernel_size, dropout, reduction)
            for _ in range(1, blocks)
        ]
        return nn.Sequential(*modules)

    def forward_features(self, x: torch.Tensor, **extra: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"SEResNet18 expects (batch, model.in_channels={self.in_channels}, samples) "
                f"inputs, got shape {tuple(x.shape)}"
            )
        out = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.avgpool(out).flatten(1)

    def _demographics(
        self, demographics: torch.Tensor | None, batch: int, like: torch.Tensor
    ) -> torch.Tensor:
        if demographics is None:
            # Neutral value: zeros, so the demographic branch adds only fc1's (learned) bias.
            return like.new_zeros(batch, self.demographics_dim)
        if demographics.shape != (batch, self.demographics_dim):
            raise ValueError(
                f"SEResNet18: demographics must be (batch={batch}, model.demographics_dim="
                f"{self.demographics_dim}), got shape {tuple(demographics.shape)}"
            )
        return demographics.to(like.dtype)

    def forward_head(
        self,
        features: torch.Tensor,
        demographics: torch.Tensor | None = None,
        **extra: torch.Tensor,
    ) -> torch.Tensor:
        demo = self.fc1(self._demographics(demographics, features.shape[0], features))
        # The original concatenates the demographic features first: fc's columns follow that.
        return self.fc(torch.cat((demo, features), dim=1))

    def forward(
        self, x: torch.Tensor, demographics: torch.Tensor | None = None, **extra: torch.Tensor
    ) -> torch.Tensor:
        return self.forward_head(self.forward_features(x), demographics=demographics)

    def forward_windows(
        self,
        x: torch.Tensor,
        demographics: torch.Tensor | None = None,
        window: int = 4096,
        overlap: int = 256,
    ) -> torch.Tensor:
        """Sigmoid probabilities (batch, classes) averaged over the original's evaluation windows
        (:func:`sliding_windows`) of full-length records; shorter records are zero-padded at the
        end to ``window`` (the original's ValClip) and scored once. Returns probabilities, not
        logits, because the original averages after the sigmoid."""
        extras = {"demographics": demographics} if demographics is not None else None
        return ChallengeWindows(window, overlap).score(
            lambda w, **e: torch.sigmoid(self(w, **e)), x, extras=extras
        )


def load_original_state_dict(model: SEResNet18, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Load a state dict of the original ``SEResnet1dag`` ``resnet18`` into ``model``.

    ecgx keeps the original's module names, so this is a checked copy: a ``module.`` prefix
    (``DataParallel`` checkpoints) is stripped, ``num_batches_tracked`` may be absent, and any
    unknown key, missing key or shape mismatch raises ``KeyError``/``ValueError`` naming the key
    before anything is copied. Values are cast to the model's dtype.
    """
    checked_copy(model, state_dict, hint="check in_channels, num_classes and demographics_dim")
