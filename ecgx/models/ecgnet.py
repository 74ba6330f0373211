"""ECGNet: parallel multi-scale convolutions, a 1-D residual stack and an LSTM over the raw signal.

Port of ``models/ECGNet.py`` of likith012/IMLE-Net (spec A5), the comparison model re-implementing
"ECGNet: Deep Network for Arrhythmia Classification" (IEEE MeMeA 2018). Module names follow the
original so that its state dicts load one-to-one (``load_original_state_dict``).

Shapes for the defaults (12 × 1000): four parallel convolutions (kernels 15/17/19/21, no
padding) concatenated along *time* → (16, 3932); BN → ReLU → conv k17 s2 p2 → (16, 1960);
15 pre-activation residual blocks (every 2nd halves the length, every 4th adds 16 channels)
→ (64, 15); BN → ReLU → AvgPool k8 s8 p2 → 128 features. An LSTM (hidden 40) over the raw
1000 steps adds its last hidden state; 168 features → Linear → logits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ecgx.models.base import ECGModel
from ecgx.models.layers import Add
from ecgx.models.weights import checked_copy

__all__ = ["ECGNet", "ECGNetResBlock", "load_original_state_dict"]


class ECGNetResBlock(nn.Module):
    """BN → ReLU → Dropout → Conv → BN → ReLU → Dropout → Conv, plus a shortcut; no activation
    after the add. With a ``downsample`` module (the shortcut), the main path is max-pooled by 2
    as well; the shortcut is the identity otherwise."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        padding: int,
        dropout: float,
        downsample: nn.Module | None = None,
    ):
        super().__init__()
        self.bn1 = nn.BatchNorm1d(in_channels)
        # One activation module per use: explainers that override a ReLU's backward (DeepLift,
        # guided backprop) keep per-module state, which a reused module would share.
        self.relu = nn.ReLU()
        self.relu2 = nn.ReLU()
        self.add = Add()  # the residual sum as a module (LRP gives it a rule)
        self.dropout = nn.Dropout(dropout)
        self.conv1 = nn.Conv1d(in_channels, out_channels, kernel_size, padding=padding, bias=False)
        self.bn2 = nn.BatchNorm1d(out_channels)
        self.conv2 = nn.Conv1d(out_channels, out_channels, kernel_size, padding=padding, bias=False)
        self.downsample = downsample
        self.maxpool = nn.MaxPool1d(2) if downsample is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.dropout(self.relu(self.bn1(x))))
        out = self.conv2(self.dropout(self.relu2(self.bn2(out))))
        if self.downsample is None:
            return self.add(out, x)
        return self.add(self.maxpool(out), self.downsample(x))


class ECGNet(ECGModel):
    """ECGNet for (batch, leads, samples) inputs; returns logits (batch, num_classes).

    ``forward_features`` returns the concatenated CNN and LSTM features (batch, 168 for the
    defaults); ``forward_head`` is the linear layer ``fc``. ``target_layer`` is the last residual
    block (its output is the last feature map with a time axis, before BN/ReLU/pooling).

    The head's width depends on the input length (the CNN branch is flattened, not globally
    pooled), so the model is built for ``input_length`` samples and refuses other lengths.
    """

    head_modules = ("fc",)

    def __init__(
        self,
        in_channels: int = 12,
        num_classes: int = 5,
        input_length: int = 1000,
        kernel_sizes: Sequence[int] = (15, 17, 19, 21),
        planes: int = 16,
        fixed_kernel_size: int = 17,
        num_blocks: int = 15,
        dropout: float = 0.1,
        lstm_hidden: int = 40,
    ):
        super().__init__()
        kernel_sizes = tuple(int(k) for k in kernel_sizes)
        if fixed_kernel_size % 2 == 0:
            # The residual adds need length-preserving convolutions (padding k // 2).
            raise ValueError(f"ECGNet: fixed_kernel_size={fixed_kernel_size} must be odd")
        if num_blocks < 1:
            raise ValueError(f"ECGNet: num_blocks={num_blocks} must be at least 1")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.input_length = input_length

        self.parallel_conv = nn.ModuleList(
            nn.Conv1d(in_channels, planes, k, bias=False) for k in kernel_sizes
        )
        self.bn1 = nn.BatchNorm1d(planes)
        self.relu = nn.ReLU()
        self.relu2 = nn.ReLU()  # its own module (explainers keep state per module)
        self.conv1 = nn.Conv1d(planes, planes, fixed_kernel_size, stride=2, padding=2, bias=False)

        # The original pattern: block i widens by `planes` channels when (i + 1) % 4 == 0
        # (1×1 conv + max-pool shortcut), only max-pools when (i + 1) % 2 == 0, else identity.
        padding = fixed_kernel_size // 2
        blocks = []
        channels = planes
        length = sum(input_length - k + 1 for k in kernel_sizes)
        length = (length + 2 * 2 - fixed_kernel_size) // 2 + 1
        for index in range(num_blocks):
            width = channels + planes if (index + 1) % 4 == 0 else channels
            downsample: nn.Module | None = None
            if (index + 1) % 4 == 0:
                downsample = nn.Sequential(
                    nn.Conv1d(channels, width, 1, bias=False), nn.MaxPool1d(2)
                )
            elif (index + 1) % 2 == 0:
                downsample = nn.Sequential(nn.MaxPool1d(2))
            blocks.append(
                ECGNetResBlock(channels, width, fixed_kernel_size, padding, dropout, downsample)
            )
            if downsample is not None:
                length //= 2
            channels = width
        self.block = nn.Sequential(*blocks)
        self.bn2 = nn.BatchNorm1d(channels)
        self.avgpool = nn.AvgPool1d(kernel_size=8, stride=8, padding=2)
        pooled = (length + 2 * 2 - 8) // 8 + 1
        if input_length < max(kernel_sizes) or length <= 0 or pooled <= 0:
            raise ValueError(f"ECGNet: input_length={input_length} is too short for this network")
        self.rnn = nn.LSTM(in_channels, lstm_hidden, batch_first=True)
        self.num_features = channels * pooled + lstm_hidden
        self.fc = nn.Linear(self.num_features, num_classes)
        self.target_layer = f"block.{num_blocks - 1}"

    def _last_hidden(self, x: torch.Tensor) -> torch.Tensor:
        sequence = x.transpose(1, 2)
        if x.is_cuda and not self.training and torch.is_grad_enabled():
            # cuDNN's LSTM cannot backpropagate in eval mode; gradient explainers (Grad-CAM,
            # integrated gradients) run exactly that, so fall back to the native kernel there.
            with torch.backends.cudnn.flags(enabled=False):
                _, (hidden, _) = self.rnn(sequence)
        else:
            _, (hidden, _) = self.rnn(sequence)
        return hidden[-1]

    def forward_features(self, x: torch.Tensor, **extra: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[1] != self.in_channels or x.shape[2] != self.input_length:
            raise ValueError(
                f"ECGNet was built for (batch, model.in_channels={self.in_channels}, "
                f"model.input_length={self.input_length}) inputs, got shape {tuple(x.shape)}"
            )
        out = torch.cat([conv(x) for conv in self.parallel_conv], dim=2)
        out = self.conv1(self.relu(self.bn1(out)))
        out = self.block(out)
        out = self.avgpool(self.relu2(self.bn2(out))).flatten(1)
        return torch.cat((out, self._last_hidden(x)), dim=1)

    def forward_head(self, features: torch.Tensor, **extra: torch.Tensor) -> torch.Tensor:
        return self.fc(features)


def load_original_state_dict(model: ECGNet, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Load a state dict of the original ``ECGNet`` (likith012/IMLE-Net) into ``model``.

    ecgx keeps the original's module names (``parallel_conv.i``, ``bn1``, ``conv1``,
    ``block.i.{bn1,conv1,bn2,conv2,downsample.0}``, ``bn2``, ``rnn``, ``fc``), so this is a
    checked copy: a ``module.`` prefix (checkpoints saved from ``DataParallel``) is stripped,
    ``num_batches_tracked`` may be absent, and any unknown key, missing key or shape mismatch
    raises ``KeyError``/``ValueError`` naming the key before anything is copied. Values are cast
    to the model's dtype.
    """
    checked_copy(model, state_dict, hint="check in_channels, num_classes and input_length")
