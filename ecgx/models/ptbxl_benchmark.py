"""The PTB-XL benchmark's convolutional models: xresnet1d101, inception1d and resnet1d_wang.

Ports of ``code/models/xresnet1d.py``, ``code/models/inception1d.py`` and
``code/models/resnet1d.py`` of helme/ecg_ptbxl_benchmarking (Strodthoff et al., IEEE JBHI 2021),
built with the arguments ``code/models/fastai_model.py`` passes (``kernel_size=5``,
``lin_ftrs_head=[128]``, ``ps_head=0.5``; inception gets ``kernel_size=8·5=40``). The inputs of the
benchmark are 2.5 s crops at 100 Hz, hence ``input_shape = (12, 250)``; every model pools
globally, so any length that survives the strides works.

All three share fastai's head: concat(adaptive max ‖ adaptive avg pool) → flatten → BN → Dropout
→ Linear → ReLU → BN → Dropout → Linear. Here the pooling is the end of ``forward_features``
(features of width 2·channels) and ``head`` is the rest, laid out with the original's indices
minus the two parameter-free ones, so ``load_original_state_dict`` only renames prefixes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from ecgx.models.base import ECGModel
from ecgx.models.layers import Add, conv_bn1d, downsample1d

__all__ = [
    "AdaptiveConcatPool1d",
    "Inception1d",
    "InceptionBlock1d",
    "ResNet1dWang",
    "WangBasicBlock",
    "XResBlock",
    "XResNet1d101",
    "load_original_state_dict",
]


class AdaptiveConcatPool1d(nn.Module):
    """Global max pool and global average pool, concatenated (max first, as fastai)."""

    def __init__(self) -> None:
        super().__init__()
        self.mp = nn.AdaptiveMaxPool1d(1)
        self.ap = nn.AdaptiveAvgPool1d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.mp(x), self.ap(x)], dim=1)


def _fastai_head(
    in_features: int, num_classes: int, lin_ftrs: Sequence[int], ps: float
) -> nn.Sequential:
    """fastai v1 ``create_head1d`` without its pool and flatten (indices 0 and 1 there).

    Each stage is ``bn_drop_lin``: BN, Dropout (left out when p == 0, which shifts the indices
    exactly as in the original), Linear, then ReLU on all but the last stage. fastai spreads a
    single ``ps`` as p/2 on the hidden stages and p on the last one.
    """
    sizes = [in_features, *(int(n) for n in lin_ftrs), num_classes]
    probs = [ps / 2] * (len(sizes) - 2) + [ps]
    layers: list[nn.Module] = []
    for index, (n_in, n_out, p) in enumerate(zip(sizes[:-1], sizes[1:], probs, strict=True)):
        layers.append(nn.BatchNorm1d(n_in))
        if p != 0:
            layers.append(nn.Dropout(p))
        layers.append(nn.Linear(n_in, n_out))
        if index < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _split_index(key: str) -> tuple[int, str] | None:
    """``"12.rest"`` → (12, "rest"); None when the key does not start with an index."""
    match = re.fullmatch(r"(\d+)\.(.+)", key)
    return (int(match.group(1)), match.group(2)) if match else None


def _head_key(rest: str) -> str | None:
    """Original head entry ``"<i>.<param>"`` → ecgx ``"head.<i - 2>.<param>"``."""
    split = _split_index(rest)
    if split is None or split[0] < 2:
        return None
    return f"head.{split[0] - 2}.{split[1]}"


# --------------------------------------------------------------------------------------------
# xresnet1d101


class XResBlock(nn.Module):
    """fastai's bottleneck ``ResBlock`` (expansion 4): 1×1 → k (with the stride) → 1×1 convs
    (fastai's BN-first ``ConvLayer``, :func:`~ecgx.models.layers.conv_bn1d`), plus an identity
    path (avg-pool 2 with ceil_mode when strided, 1×1 conv + BN when the width changes); ReLU
    after the add.

    The original also registers ``convs`` a second time as ``convpath.0`` (room for SE /
    self-attention modules the benchmark does not use); ecgx keeps only ``convs``.
    """

    def __init__(
        self, in_channels: int, hidden: int, out_channels: int, kernel_size: int, stride: int
    ):
        super().__init__()
        self.convs = nn.Sequential(
            conv_bn1d(in_channels, hidden, 1, relu=True),
            conv_bn1d(hidden, hidden, kernel_size, stride=stride, relu=True),
            conv_bn1d(hidden, out_channels, 1),
        )
        idpath: list[nn.Module] = []
        if in_channels != out_channels:
            idpath.append(conv_bn1d(in_channels, out_channels, 1))
        if stride != 1:
            # pool_first=True in the original: the pool goes before the 1×1 conv
            idpath.insert(0, nn.AvgPool1d(2, ceil_mode=True))
        self.idpath = nn.Sequential(*idpath)
        self.act = nn.ReLU()
        self.add = Add()  # the residual sum as a module (LRP gives it a rule)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.add(self.convs(x), self.idpath(x)))


class XResNet1d101(ECGModel):
    """xresnet1d101 as the PTB-XL benchmark builds it (1.88 M parameters for 71 classes).

    Note the benchmark's edit of fastai's widths: every stage has 64 hidden / 256 output channels
    (``[64, 64, 64, 64]`` instead of ``[64, 128, 256, 512]``), which keeps the model small.
    Stem: three conv-BN-ReLU (k5, the first with stride 2) and max-pool 3/2; stages of
    (3, 4, 23, 3) blocks, strides 1, 2, 2, 2. At 250 samples the last map is (256, 8).
    """

    input_shape = (12, 250)
    seed_num_classes = 71

    def __init__(
        self,
        in_channels: int = 12,
        num_classes: int = 5,
        layers: Sequence[int] = (3, 4, 23, 3),
        stem_widths: Sequence[int] = (32, 32, 64),
        block_widths: Sequence[int] = (64, 64, 64, 64),
        kernel_size: int = 5,
        kernel_size_stem: int = 5,
        expansion: int = 4,
        lin_ftrs_head: Sequence[int] = (128,),
        ps_head: float = 0.5,
    ):
        super().__init__()
        layers = tuple(int(n) for n in layers)
        block_widths = tuple(int(w) for w in block_widths)
        if len(layers) != len(block_widths) or not layers or min(layers) < 1:
            raise ValueError(
                f"XResNet1d101: layers={layers} and block_widths={block_widths} need one positive "
                "block count per stage"
            )
        self.in_channels = in_channels
        self.num_classes = num_classes
        widths = [in_channels, *(int(w) for w in stem_widths)]
        self.stem = nn.Sequential(
            *(
                conv_bn1d(
                    widths[i], widths[i + 1], kernel_size_stem, stride=2 if i == 0 else 1, relu=True
                )
                for i in range(len(widths) - 1)
            )
        )
        self.stem_pool = nn.MaxPool1d(kernel_size=3, stride=2, padding=1)
        # The original's first stage starts from 64 // expansion "units" times the expansion.
        channels = (64 // expansion) * expansion
        stages = []
        for index, (count, width) in enumerate(zip(layers, block_widths, strict=True)):
            blocks = []
            for b in range(count):
                stride = 2 if index > 0 and b == 0 else 1
                blocks.append(XResBlock(channels, width, width * expansion, kernel_size, stride))
                channels = width * expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = AdaptiveConcatPool1d()
        self.num_features = 2 * channels
        self.head = _fastai_head(self.num_features, num_classes, lin_ftrs_head, ps_head)
        self.target_layer = f"stages.{len(layers) - 1}.{layers[-1] - 1}"

    def forward_features(self, x: torch.Tensor, **extra: torch.Tensor) -> torch.Tensor:
        out = self.stages(self.stem_pool(self.stem(x)))
        return self.pool(out).flatten(1)

    def forward_head(self, features: torch.Tensor, **extra: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def original_key(self, key: str) -> str | None:
        """ecgx name of an original state-dict entry (None when it has no place here).

        Original layout (an ``nn.Sequential``): 0-2 stem, 3 max-pool, 4… stages, then the head.
        """
        split = _split_index(key)
        if split is None:
            return None
        index, rest = split
        n_stem, n_stages = len(self.stem), len(self.stages)
        if index < n_stem:
            return f"stem.{index}.{rest}"
        stage = index - n_stem - 1
        if 0 <= stage < n_stages:
            match = re.fullmatch(r"(\d+)\.(convs|convpath\.0|idpath)\.(.+)", rest)
            if match is None:
                return None
            block, path, tail = match.groups()
            path = "convs" if path == "convpath.0" else path
            return f"stages.{stage}.{block}.{path}.{tail}"
        if index == n_stem + 1 + n_stages:
            return _head_key(rest)
        return None


# --------------------------------------------------------------------------------------------
# inception1d


class InceptionBlock1d(nn.Module):
    """InceptionTime module: a 1×1 bottleneck feeding parallel convs (kernels 39, 19, 9 by
    default), a max-pool(3) → 1×1 branch on the raw input, concatenated, then BN → ReLU."""

    def __init__(
        self, in_channels: int, nb_filters: int, kernel_sizes: Sequence[int], bottleneck_size: int
    ):
        super().__init__()
        self.bottleneck = (
            nn.Conv1d(in_channels, bottleneck_size, 1, bias=False)
            if bottleneck_size > 0
            else nn.Identity()
        )
        branch_in = bottleneck_size if bottleneck_size > 0 else in_channels
        self.convs = nn.ModuleList(
            nn.Conv1d(branch_in, nb_filters, k, padding=(k - 1) // 2, bias=False)
            for k in kernel_sizes
        )
        self.conv_bottle = nn.Sequential(
            nn.MaxPool1d(3, stride=1, padding=1), nn.Conv1d(in_channels, nb_filters, 1, bias=False)
        )
        self.bn_relu = nn.Sequential(
            nn.BatchNorm1d((len(kernel_sizes) + 1) * nb_filters), nn.ReLU()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bottled = self.bottleneck(x)
        branches = [conv(bottled) for conv in self.convs] + [self.conv_bottle(x)]
        return self.bn_relu(torch.cat(branches, dim=1))


class InceptionShortcut1d(nn.Module):
    """Residual link every three modules: ReLU(out + BN(conv1×1(input of the three)))."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, 1, bias=False)
        self.bn = nn.BatchNorm1d(out_channels)
        self.act = nn.ReLU()
        self.add = Add()  # the residual sum as a module (LRP gives it a rule)

    def forward(self, residual: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return self.act(self.add(out, self.bn(self.conv(residual))))


class Inception1d(ECGModel):
    """inception1d of the PTB-XL benchmark (0.52 M parameters for 71 classes).

    ``kernel_size`` 40 gives branch kernels 39, 19, 9 (even sizes lose one so 'same' padding is
    symmetric). Six modules of 4·32 = 128 channels, a shortcut after every third; no striding,
    so the last map keeps the input length. ``target_layer`` is the last shortcut (its output is
    the backbone's output), or the last module without residuals.
    """

    input_shape = (12, 250)
    seed_num_classes = 71

    def __init__(
        self,
        in_channels: int = 12,
        num_classes: int = 5,
        kernel_size: int = 40,
        depth: int = 6,
        bottleneck_size: int = 32,
        nb_filters: int = 32,
        use_residual: bool = True,
        lin_ftrs_head: Sequence[int] = (128,),
        ps_head: float = 0.5,
    ):
        super().__init__()
        if depth < 3 or depth % 3 != 0:
            raise ValueError(f"Inception1d: depth={depth} must be a positive multiple of 3")
        if kernel_size < 40:
            # the original asserts this too: kernel_size // 4 must stay a useful kernel
            raise ValueError(f"Inception1d: kernel_size={kernel_size} must be at least 40")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.use_residual = use_residual
        kernel_sizes = [
            k - 1 if k % 2 == 0 else k for k in (kernel_size, kernel_size // 2, kernel_size // 4)
        ]
        width = (len(kernel_sizes) + 1) * nb_filters
        self.blocks = nn.ModuleList(
            InceptionBlock1d(
                in_channels if d == 0 else width, nb_filters, kernel_sizes, bottleneck_size
            )
            for d in range(depth)
        )
        # built even without residuals, as in the original, so state dicts keep one layout
        self.shortcuts = nn.ModuleList(
            InceptionShortcut1d(in_channels if d == 0 else width, width) for d in range(depth // 3)
        )
        self.pool = AdaptiveConcatPool1d()
        self.num_features = 2 * width
        self.head = _fastai_head(self.num_features, num_classes, lin_ftrs_head, ps_head)
        self.target_layer = f"shortcuts.{depth // 3 - 1}" if use_residual else f"blocks.{depth - 1}"

    def forward_features(self, x: torch.Tensor, **extra: torch.Tensor) -> torch.Tensor:
        residual = x
        for d, block in enumerate(self.blocks):
            x = block(x)
            if self.use_residual and d % 3 == 2:
                x = self.shortcuts[d // 3](residual, x)
                residual = x
        return self.pool(x).flatten(1)

    def forward_head(self, features: torch.Tensor, **extra: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def original_key(self, key: str) -> str | None:
        """ecgx name of an original entry: ``layers.0.im/sk.…`` (backbone), ``layers.1.…`` (head)."""
        if key.startswith("layers.0.im."):
            return "blocks." + key[len("layers.0.im.") :]
        if key.startswith("layers.0.sk."):
            return "shortcuts." + key[len("layers.0.sk.") :]
        if key.startswith("layers.1."):
            return _head_key(key[len("layers.1.") :])
        return None


# --------------------------------------------------------------------------------------------
# resnet1d_wang


class WangBasicBlock(nn.Module):
    """torchvision-style basic block: conv k1 (stride) → BN → ReLU → conv k2 → BN, plus the
    shortcut (1×1 conv + BN when strided or widened), ReLU after the add.

    Not :class:`ecgx.models.layers.BasicBlock1d`: two kernel sizes padded (k − 1) // 2, no
    dropout, and the shortcut built after the body (which fixes the seeded initialisation).
    """

    def __init__(self, in_channels: int, planes: int, stride: int, kernel_sizes: tuple[int, int]):
        super().__init__()
        k1, k2 = kernel_sizes
        self.conv1 = nn.Conv1d(
            in_channels, planes, k1, stride=stride, padding=(k1 - 1) // 2, bias=False
        )
        self.bn1 = nn.BatchNorm1d(planes)
        self.relu = nn.ReLU()
        self.relu2 = nn.ReLU()  # one module per use (explainers keep state per module)
        self.add = Add()  # the residual sum as a module (LRP gives it a rule)
        self.conv2 = nn.Conv1d(planes, planes, k2, padding=(k2 - 1) // 2, bias=False)
        self.bn2 = nn.BatchNorm1d(planes)
        self.downsample = downsample1d(in_channels, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu2(self.add(out, residual))


class ResNet1dWang(ECGModel):
    """resnet1d_wang of the PTB-XL benchmark (0.48 M parameters for 71 classes): Wang et al.'s
    time-series ResNet. Stem conv k7 (stride 1, no pooling), three stages of one basic block
    (kernels 5 and 3, 128 channels), the last two with stride 2. At 250 samples the last map is
    (128, 63).
    """

    input_shape = (12, 250)
    seed_num_classes = 71

    def __init__(
        self,
        in_channels: int = 12,
        num_classes: int = 5,
        layers: Sequence[int] = (1, 1, 1),
        inplanes: int = 128,
        kernel_size: int = 5,
        kernel_size_stem: int = 7,
        stride: int = 2,
        lin_ftrs_head: Sequence[int] = (128,),
        ps_head: float = 0.5,
    ):
        super().__init__()
        layers = tuple(int(n) for n in layers)
        if not layers or min(layers) < 1:
            raise ValueError(f"ResNet1dWang: layers={layers} needs positive block counts")
        self.in_channels = in_channels
        self.num_classes = num_classes
        # as the original's BasicBlock1d: an int kernel k means (k, k // 2 + 1)
        kernel_sizes = (kernel_size, kernel_size // 2 + 1)
        self.stem = conv_bn1d(in_channels, inplanes, kernel_size_stem, relu=True)
        stages = []
        for index, count in enumerate(layers):
            first_stride = 1 if index == 0 else stride
            # only each stage's first block gets the original's kernel sizes; the others
            # are built with the BasicBlock1d default [3, 3] (the benchmark has one per stage)
            blocks = [WangBasicBlock(inplanes, inplanes, first_stride, kernel_sizes)]
            blocks += [WangBasicBlock(inplanes, inplanes, 1, (3, 3)) for _ in range(count - 1)]
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = AdaptiveConcatPool1d()
        self.num_features = 2 * inplanes
        self.head = _fastai_head(self.num_features, num_classes, lin_ftrs_head, ps_head)
        self.target_layer = f"stages.{len(layers) - 1}.{layers[-1] - 1}"

    def forward_features(self, x: torch.Tensor, **extra: torch.Tensor) -> torch.Tensor:
        return self.pool(self.stages(self.stem(x))).flatten(1)

    def forward_head(self, features: torch.Tensor, **extra: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def original_key(self, key: str) -> str | None:
        """ecgx name of an original entry: 0/1 stem conv/BN, 2 ReLU, 3… stages, then the head."""
        split = _split_index(key)
        if split is None:
            return None
        index, rest = split
        n_stages = len(self.stages)
        if index in (0, 1):
            return f"stem.{index}.{rest}"
        if 3 <= index < 3 + n_stages:
            return f"stages.{index - 3}.{rest}"
        if index == 3 + n_stages:
            return _head_key(rest)
        return None


# --------------------------------------------------------------------------------------------

PTBXLModel = XResNet1d101 | Inception1d | ResNet1dWang


def load_original_state_dict(model: PTBXLModel, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Load a state dict of the benchmark's original model into the matching ecgx model.

    Each model's ``original_key`` renames the original's entries (a ``module.`` prefix from
    ``DataParallel`` is stripped; ``num_batches_tracked`` may be absent). xresnet's original lists
    every block's convs twice (``convs`` and ``convpath.0``, one module registered twice); torch's
    ``load_state_dict`` copies ``convpath.0`` last, so its values win here too. Unknown keys,
    missing keys and shape mismatches raise ``KeyError``/``ValueError`` naming the key before
    anything is copied; values are cast to the model's dtype.
    """
    translate: Callable[[str], str | None] = model.original_key
    name = type(model).__name__
    entries = dict(state_dict)
    if entries and all(key.startswith("module.") for key in entries):
        entries = {key[len("module.") :]: value for key, value in entries.items()}
    own = model.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    unknown = []
    # stable sort: the convpath.0 aliases after convs, whatever order the dict came in
    for key, value in sorted(entries.items(), key=lambda item: ".convpath." in item[0]):
        target = translate(key)
        if target is None or target not in own:
            unknown.append(key)
            continue
        if tuple(value.shape) != tuple(own[target].shape):
            raise ValueError(
                f"load_original_state_dict: {key} has shape {tuple(value.shape)}, {name} expects "
                f"{tuple(own[target].shape)} for {target} (check in_channels and num_classes)"
            )
        mapped[target] = value
    if unknown:
        raise KeyError(f"load_original_state_dict: unknown key(s) for {name}: {unknown}")
    missing = [key for key in own if key not in mapped and not key.endswith("num_batches_tracked")]
    if missing:
        raise KeyError(
            f"load_original_state_dict: missing key(s) for {name} (ecgx names): {missing}"
        )
    model.load_state_dict({**own, **mapped}, strict=True)
