"""The three classifiers of XAI4ECG (Wagner et al., Comput Biol Med 2024), ``code/ecg_model.py``.

Spec 3.3. All three take (batch, 12, 250) windows of raw 100 Hz PTB-XL in the seed study, end in
global pooling, and so accept any length that survives their strides (the notebooks apply them
to full 1000-sample records):

- ``XAILeNet``: three [Conv k5 s2 → BN → ReLU] stages (max-pooled by 2 after the first two),
  global average pool, Linear(128→128) → ReLU → Linear. Time 250→123→61→29→14→5.
- ``XAIResNet``: the seed's 'resnet', a torchvision-style bottleneck ResNet50 in 1-D with 3-tap
  convolutions and *all* stages at 128 planes (512 out); stem Conv k5 s2 → BN → ReLU → MaxPool.
- ``XAIXResNet1d50``: the seed's 'xresnet', fastai-style xresnet1d50 with the reduced widths of
  the seed's code (every stage 64 → 256 channels), k5 convolutions with bias, concat max∥avg pool
  → BN → Dropout → Linear.

The originals keep the feature extractor in one ``nn.Sequential`` with numeric indices (LeNet's
``sequential.8``, xresnet's ``features.4.0.convpath.0.1``), which the seed's TCAV code had to
guess at and broke on. Here every module has a plain, stable name (``features.bn3``, ``layer4``,
``layer4.2.convs.1.conv``), every ReLU is its own module that runs once per forward (so hooks see
exactly one output), and ``load_original_state_dict`` translates the original names.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from ecgx.models.base import ECGModel
from ecgx.models.layers import Add, downsample1d

__all__ = [
    "XAILeNet",
    "XAIResNet",
    "XAIResNetBottleneck",
    "XAIXResNet1d50",
    "XResBlock",
    "ConvBNAct",
    "load_original_state_dict",
]


# --------------------------------------------------------------------------------------- LeNet


class XAILeNet(ECGModel):
    """LeNet-style CNN; ``target_layer`` is ``features.bn3``, the BN after the third convolution
    (the layer the seed's Guided Grad-CAM used), shaped (batch, 128, 5) at 250 samples."""

    head_modules = ("fc1", "fc2")

    input_shape = (12, 250)
    seed_num_classes = 5
    target_layer = "features.bn3"

    def __init__(
        self,
        in_channels: int = 12,
        num_classes: int = 5,
        widths: Sequence[int] = (32, 64, 128),
        kernel_size: int = 5,
        stride: int = 2,
        hidden: int = 128,
    ):
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if len(widths) != 3:
            raise ValueError(f"XAILeNet: widths={widths} must name three convolution widths")
        self.in_channels = in_channels
        self.num_classes = num_classes
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        channels = in_channels
        for index, width in enumerate(widths, start=1):
            # No padding, as in the original: the lengths 250→123→61→29→14→5 depend on it.
            layers[f"conv{index}"] = nn.Conv1d(channels, width, kernel_size, stride=stride)
            layers[f"bn{index}"] = nn.BatchNorm1d(width)
            layers[f"relu{index}"] = nn.ReLU()
            if index < len(widths):
                layers[f"pool{index}"] = nn.MaxPool1d(2)
            channels = width
        self.features = nn.Sequential(layers)
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.fc1 = nn.Linear(channels, hidden)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(hidden, num_classes)
        self.num_features = channels

    def forward_features(self, x: torch.Tensor, **extra: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(x)).flatten(1)

    def forward_head(self, features: torch.Tensor, **extra: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.relu(self.fc1(features)))


# The original is one Sequential: 0 conv, 1 BN, 2 ReLU, 3 pool, 4 conv, 5 BN, 6 ReLU, 7 pool,
# 8 conv, 9 BN, 10 ReLU, 11 GAP, 12 flatten, 13 Linear, 14 ReLU, 15 Linear.
_LENET_NAMES = {
    "0": "features.conv1",
    "1": "features.bn1",
    "4": "features.conv2",
    "5": "features.bn2",
    "8": "features.conv3",
    "9": "features.bn3",
    "13": "fc1",
    "15": "fc2",
}


def _lenet_name(key: str) -> str | None:
    match = re.fullmatch(r"sequential\.(\d+)\.(\w+)", key)
    if match is None or match.group(1) not in _LENET_NAMES:
        return None
    return f"{_LENET_NAMES[match.group(1)]}.{match.group(2)}"


# -------------------------------------------------------------------------------------- ResNet


class XAIResNetBottleneck(nn.Module):
    """torchvision's Bottleneck in 1-D: 1×1 → k3 (stride) → 1×1 (×``expansion``), BN after each,
    a 1×1-conv + BN shortcut when the shape changes, ReLU after the add. The stride sits on the
    middle convolution (torchvision ≥ 0.5, "ResNet v1.5")."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1, kernel_size: int = 3):
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = nn.Conv1d(in_channels, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm1d(planes)
        self.relu1 = nn.ReLU()
        padding = kernel_size // 2
        self.conv2 = nn.Conv1d(planes, planes, kernel_size, stride, padding, bias=False)
        self.bn2 = nn.BatchNorm1d(planes)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv1d(planes, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm1d(out_channels)
        self.downsample = downsample1d(in_channels, out_channels, stride)
        # A separate ReLU per use (torchvision reuses one): each hooked module runs once.
        self.relu3 = nn.ReLU()
        self.add = Add()  # the residual sum as a module (LRP gives it a rule)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu3(self.add(out, shortcut))


class XAIResNet(ECGModel):
    """The seed's 'resnet': bottleneck [3, 4, 6, 3] at 128 planes in every stage.

    ``target_layer`` is ``layer4`` (as in the seed's Guided Grad-CAM), shaped (batch, 512, 8)
    at 250 samples.
    """

    head_modules = ("fc",)

    input_shape = (12, 250)
    seed_num_classes = 5
    target_layer = "layer4"

    def __init__(
        self,
        in_channels: int = 12,
        num_classes: int = 5,
        layers: Sequence[int] = (3, 4, 6, 3),
        planes: int = 128,
        stem_width: int = 64,
        stem_kernel_size: int = 5,
        kernel_size: int = 3,
    ):
        super().__init__()
        layers = tuple(int(n) for n in layers)
        if len(layers) != 4 or min(layers) < 1:
            raise ValueError(f"XAIResNet: layers={layers} must be four positive block counts")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.conv1 = nn.Conv1d(
            in_channels,
            stem_width,
            stem_kernel_size,
            stride=2,
            padding=stem_kernel_size // 2,
            bias=False,
        )
        self.bn1 = nn.BatchNorm1d(stem_width)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool1d(3, stride=2, padding=1)
        channels = stem_width
        for index, (count, stride) in enumerate(zip(layers, (1, 2, 2, 2), strict=True), start=1):
            blocks = []
            for block in range(count):
                blocks.append(
                    XAIResNetBottleneck(channels, planes, stride if block == 0 else 1, kernel_size)
                )
                channels = planes * XAIResNetBottleneck.expansion
            self.add_module(f"layer{index}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool1d(1)
        self.fc = nn.Linear(channels, num_classes)
        self.num_features = channels

    def forward_features(self, x: torch.Tensor, **extra: torch.Tensor) -> torch.Tensor:
        out = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        # flatten(1), not squeeze(): the original's squeeze dropped the batch axis for batch 1.
        return self.avgpool(out).flatten(1)

    def forward_head(self, features: torch.Tensor, **extra: torch.Tensor) -> torch.Tensor:
        return self.fc(features)


def _lenet_original(key: str) -> str:
    module, leaf = key.rsplit(".", 1)
    index = {ours: theirs for theirs, ours in _LENET_NAMES.items()}[module]
    return f"sequential.{index}.{leaf}"


def _resnet_name(key: str) -> str | None:
    # ecgx keeps torchvision's names for the ResNet; only the parameters' owners must exist.
    return key


# ------------------------------------------------------------------------------------- XResNet


class ConvBNAct(nn.Sequential):
    """fastai's ConvLayer as the seed configures it: Conv (bias, 'same' padding) → BN → ReLU."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        act: bool = True,
        zero_bn: bool = False,
    ):
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        layers["conv"] = nn.Conv1d(
            in_channels, out_channels, kernel_size, stride=stride, padding=(kernel_size - 1) // 2
        )
        layers["bn"] = nn.BatchNorm1d(out_channels)
        if act:
            layers["relu"] = nn.ReLU()
        super().__init__(layers)
        if zero_bn:
            # fastai's BatchZero: each residual branch starts as the identity.
            nn.init.zeros_(self.bn.weight)


class XResBlock(nn.Module):
    """xresnet bottleneck: 1×1 → k (stride) → 1×1 (zero-initialised BN, no ReLU) on ``convs``;
    ``shortcut`` = AvgPool2 (ceil) when strided, then 1×1 conv + BN when the width changes;
    ReLU after the add."""

    def __init__(
        self, in_channels: int, hidden: int, out_channels: int, stride: int, kernel_size: int
    ):
        super().__init__()
        self.convs = nn.Sequential(
            ConvBNAct(in_channels, hidden, 1),
            ConvBNAct(hidden, hidden, kernel_size, stride=stride),
            ConvBNAct(hidden, out_channels, 1, act=False, zero_bn=True),
        )
        shortcut: OrderedDict[str, nn.Module] = OrderedDict()
        if stride != 1:
            shortcut["pool"] = nn.AvgPool1d(stride, ceil_mode=True)
        if in_channels != out_channels:
            shortcut["proj"] = ConvBNAct(in_channels, out_channels, 1, act=False)
        self.shortcut = nn.Sequential(shortcut)
        self.relu = nn.ReLU()
        self.add = Add()  # the residual sum as a module (LRP gives it a rule)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.add(self.convs(x), self.shortcut(x)))


class XAIXResNet1d50(ECGModel):
    """The seed's 'xresnet' (xresnet1d50 with every stage 64 → 256 channels).

    ``target_layer`` is ``layer4`` (the end of the original's ``features``, where the seed ran
    Guided Grad-CAM), shaped (batch, 256, 8) at 250 samples.
    """

    head_modules = ("bn", "fc")

    input_shape = (12, 250)
    seed_num_classes = 5
    target_layer = "layer4"

    def __init__(
        self,
        in_channels: int = 12,
        num_classes: int = 5,
        layers: Sequence[int] = (3, 4, 6, 3),
        stem_widths: Sequence[int] = (32, 32, 64),
        hidden: int = 64,
        expansion: int = 4,
        kernel_size: int = 5,
        dropout: float = 0.5,
    ):
        super().__init__()
        layers = tuple(int(n) for n in layers)
        stem_widths = tuple(int(w) for w in stem_widths)
        if len(layers) != 4 or min(layers) < 1:
            raise ValueError(f"XAIXResNet1d50: layers={layers} must be four positive counts")
        if kernel_size % 2 == 0:
            # Residual adds need length-preserving convolutions ('same' padding (k - 1) // 2).
            raise ValueError(f"XAIXResNet1d50: kernel_size={kernel_size} must be odd")
        self.in_channels = in_channels
        self.num_classes = num_classes
        stem: OrderedDict[str, nn.Module] = OrderedDict()
        channels = in_channels
        for index, width in enumerate(stem_widths, start=1):
            stride = 2 if index == 1 else 1
            stem[f"conv{index}"] = ConvBNAct(channels, width, kernel_size, stride=stride)
            channels = width
        stem["maxpool"] = nn.MaxPool1d(3, stride=2, padding=1)
        self.stem = nn.Sequential(stem)
        out_channels = hidden * expansion
        for index, (count, stride) in enumerate(zip(layers, (1, 2, 2, 2), strict=True), start=1):
            blocks = []
            for block in range(count):
                blocks.append(
                    XResBlock(
                        channels, hidden, out_channels, stride if block == 0 else 1, kernel_size
                    )
                )
                channels = out_channels
            self.add_module(f"layer{index}", nn.Sequential(*blocks))
        self.maxpool = nn.AdaptiveMaxPool1d(1)
        self.avgpool = nn.AdaptiveAvgPool1d(1)
        self.num_features = 2 * channels
        self.bn = nn.BatchNorm1d(self.num_features)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor, **extra: torch.Tensor) -> torch.Tensor:
        out = self.stem(x)
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        # fastai's AdaptiveConcatPool: max first, then average.
        return torch.cat((self.maxpool(out), self.avgpool(out)), dim=1).flatten(1)

    def forward_head(self, features: torch.Tensor, **extra: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.bn(features)))


def _xresnet_name(key: str) -> str | None:
    match = re.fullmatch(r"features\.([0-2])\.([01])\.(\w+)", key)
    if match is not None:
        part = "conv" if match.group(2) == "0" else "bn"
        return f"stem.conv{int(match.group(1)) + 1}.{part}.{match.group(3)}"
    match = re.fullmatch(
        r"features\.([4-7])\.(\d+)\.(convs|convpath\.0|idpath\.\d+)\.(?:(\d+)\.)?([01])\.(\w+)",
        key,
    )
    if match is None:
        return None
    stage, block, path, layer, part, leaf = match.groups()
    prefix = f"layer{int(stage) - 3}.{block}"
    part_name = "conv" if part == "0" else "bn"
    if path.startswith("idpath"):
        # idpath is [AvgPool?, ConvLayer?]: whatever its index, its only parameters are the conv's.
        return None if layer is not None else f"{prefix}.shortcut.proj.{part_name}.{leaf}"
    if layer is None:
        return None
    # The original registers the branch twice (``convs`` and ``convpath.0`` are one module), so
    # its state dict names every tensor twice; both names land on ``convs``.
    return f"{prefix}.convs.{layer}.{part_name}.{leaf}"


def _xresnet_original(key: str) -> str:
    """The original's name for an ecgx xresnet key (its ``convs`` alias for the branch)."""
    if key.startswith("fc."):
        return "l1." + key[len("fc.") :]
    part = {"conv": "0", "bn": "1"}
    match = re.fullmatch(r"stem\.conv(\d)\.(conv|bn)\.(\w+)", key)
    if match is not None:
        return f"features.{int(match.group(1)) - 1}.{part[match.group(2)]}.{match.group(3)}"
    match = re.fullmatch(r"layer(\d)\.(\d+)\.convs\.(\d)\.(conv|bn)\.(\w+)", key)
    if match is not None:
        stage, block, layer, kind, leaf = match.groups()
        return f"features.{int(stage) + 3}.{block}.convs.{layer}.{part[kind]}.{leaf}"
    match = re.fullmatch(r"layer(\d)\.(\d+)\.shortcut\.proj\.(conv|bn)\.(\w+)", key)
    if match is not None:
        stage, block, kind, leaf = match.groups()
        # A strided shortcut pools first, which pushes the ConvLayer to index 1.
        index = 1 if stage != "1" and block == "0" else 0
        return f"features.{int(stage) + 3}.{block}.idpath.{index}.{part[kind]}.{leaf}"
    return key


def _xresnet_head_name(key: str) -> str | None:
    if key.startswith("bn."):
        return key
    if key.startswith("l1."):
        return "fc." + key[len("l1.") :]
    return _xresnet_name(key)


# ---------------------------------------------------------------------------- state-dict loading

# (model class, original name → ecgx name or None, ecgx name → original name for messages)
_TRANSLATORS: tuple[
    tuple[type[ECGModel], Callable[[str], str | None], Callable[[str], str]], ...
] = (
    (XAILeNet, _lenet_name, _lenet_original),
    (XAIResNet, _resnet_name, str),
    (XAIXResNet1d50, _xresnet_head_name, _xresnet_original),
)


def load_original_state_dict(
    model: XAILeNet | XAIResNet | XAIXResNet1d50, state_dict: Mapping[str, torch.Tensor]
) -> None:
    """Load a state dict of the matching XAI4ECG original (``get_model(...).model``) into ``model``.

    The original's names are translated (LeNet ``sequential.N`` → ``features.convK``/``bnK``/
    ``fc1``/``fc2``; the ResNet keeps torchvision's names; xresnet ``features.0-2`` → ``stem``,
    ``features.4-7`` → ``layer1-4`` with ``convs``/``convpath.0`` → ``convs`` and ``idpath`` →
    ``shortcut.proj``, ``l1`` → ``fc``). A ``module.`` prefix (``DataParallel``) or a Lightning
    ``model.`` prefix is stripped; ``num_batches_tracked`` may be absent. Where the original names a
    tensor twice (xresnet's shared ``convs``/``convpath.0``) the later entry wins, as it does in
    the original's own ``load_state_dict``. Unknown keys, missing keys and shape mismatches raise
    ``KeyError``/``ValueError`` naming the original's key before anything is copied; values are
    cast to the model's dtype.
    """
    found = [entry for entry in _TRANSLATORS if isinstance(model, entry[0])]
    if not found:
        raise TypeError(
            f"load_original_state_dict: expected XAILeNet, XAIResNet or XAIXResNet1d50, "
            f"got {type(model).__name__}"
        )
    cls, translate, original_name = found[0]
    name = cls.__name__
    entries = dict(state_dict)
    for prefix in ("module.", "model."):
        if entries and all(key.startswith(prefix) for key in entries):
            entries = {key[len(prefix) :]: value for key, value in entries.items()}
    own = model.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in entries.items():
        target = translate(key)
        if target is None or target not in own:
            unknown.append(key)
            continue
        if tuple(value.shape) != tuple(own[target].shape):
            raise ValueError(
                f"load_original_state_dict: {key} has shape {tuple(value.shape)}, {name} expects "
                f"{tuple(own[target].shape)} at {target} (check in_channels and num_classes)"
            )
        mapped[target] = value
    if unknown:
        raise KeyError(f"load_original_state_dict: unknown key(s) for {name}: {unknown}")
    missing = [
        original_name(key)
        for key in own
        if key not in mapped and not key.endswith("num_batches_tracked")
    ]
    if missing:
        raise KeyError(f"load_original_state_dict: missing key(s) for {name}: {missing}")
    model.load_state_dict({**own, **mapped}, strict=True)
