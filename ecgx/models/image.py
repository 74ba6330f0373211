"""Shared pieces of the 2D image backbones of the vision seed (spec 2.3-2.4).

The vision seed classifies paper-ECG charts (:class:`ecgx.transforms.chart.ChartImage`) with
torchvision ImageNet backbones. The signal cache stores each picture flattened, so a batch
reaches the model as ``(batch, channels, H·W)`` in [0, 1] (white paper = 1);
:class:`ImageModel` turns that back into ``(batch, channels, H, W)`` using ``image_size``, applies
the seed's ImageNet mean/std (the seed normalised after ``ToTensor``; ``conf/transform/chart_*``
leave it to the model) and hands a 3-channel image to the backbone.

Every backbone keeps torchvision's module names and parameter shapes, so a torchvision state dict
loads one-to-one with :func:`load_torchvision_weights` (the classifier head aside, which is
re-initialised when its class count differs). Non-persistent buffers (the normalisation
constants) keep the state dict free of anything torchvision's lacks.

The building blocks the EfficientNet, MobileNetV3 and ConvNeXt families share (conv-norm-
activation, squeeze-excitation, stochastic depth, channel rounding) are in
:mod:`ecgx.models.layers`; their names are re-exported here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path

import torch
import torch.nn.functional as F

from ecgx.models.base import ECGModel
from ecgx.models.layers import (
    ConvNormActivation,
    SqueezeExcitation,
    StochasticDepth,
    make_divisible,
)
from ecgx.models.weights import strip_prefix

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ConvNormActivation",
    "ImageModel",
    "SqueezeExcitation",
    "StochasticDepth",
    "load_torchvision_weights",
    "make_divisible",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NORMALIZATIONS = ("imagenet", None)


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return int(size), int(size)
    values = tuple(int(v) for v in size)
    if len(values) != 2 or min(values) < 1:
        raise ValueError(f"image_size must be an int or (H, W) of positive ints, got {size}")
    return values  # type: ignore[return-value]


class ImageModel(ECGModel):
    """Base of the 2D backbones: input checks, flat → image reshape, normalisation, 1 → 3
    channels. Subclasses build the torchvision layout, set ``head_prefix`` (the final Linear,
    re-initialised when class counts differ) and implement :meth:`backbone` (3-channel,
    normalised image → pooled feature vector) and :meth:`forward_head`.

    Args:
        in_channels: 3 (RGB chart) or 1 (grey chart).
        num_classes: outputs (logits).
        image_size: (H, W) of a flat ``(batch, C, H·W)`` input; 4D inputs may be any size (the
            backbones pool adaptively).
        normalize: ``"imagenet"`` (the seed's mean/std after ToTensor) or None (input as is).
    """

    #: the seed's charts are RGB, 224 × 224 (EfficientNet-B3: 300 × 300), flattened per channel
    input_shape = (3, 224 * 224)
    seed_num_classes = 4  # AFIB, GSVT, SB, SR
    #: prefix of the classifier's last Linear in the torchvision state dict
    head_prefix: str = ""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int | Sequence[int] = (224, 224),
        normalize: str | None = "imagenet",
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if in_channels not in (1, 3):
            raise ValueError(
                f"{name}: in_channels must be 1 or 3 (a chart image), got {in_channels}"
            )
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"{name}: normalize must be 'imagenet' or null, got {normalize!r}")
        if num_classes < 1:
            raise ValueError(f"{name}: num_classes={num_classes} must be >= 1")
        self.in_channels = int(in_channels)
        self.num_classes = int(num_classes)
        self.image_size = _pair(image_size)
        self.normalize = normalize
        # FLOPs and speed are reported at this model's own image size.
        self.input_shape = (self.in_channels, self.image_size[0] * self.image_size[1])
        # Not persistent: the state dict must hold exactly torchvision's keys.
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def to_image(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, C, H·W)`` or ``(batch, C, H, W)`` → ``(batch, 3, H, W)``, normalised."""
        name = type(self).__name__
        if x.dim() not in (3, 4) or x.shape[1] != self.in_channels:
            raise ValueError(
                f"{name} expects (batch, model.in_channels={self.in_channels}, H·W) or (batch, "
                f"{self.in_channels}, H, W) inputs, got shape {tuple(x.shape)}"
            )
        if x.dim() == 3:
            height, width = self.image_size
            if x.shape[2] != height * width:
                raise ValueError(
                    f"{name}: a flat input needs H·W = {height}·{width} = {height * width} values "
                    f"per channel (model.image_size={list(self.image_size)}), got {x.shape[2]}"
                )
            x = x.reshape(x.shape[0], x.shape[1], height, width)
        if self.in_channels == 1:
            # Grey charts are repeated to 3 channels (what PIL's L → RGB does) rather than
            # giving the stem a 1-channel conv: the stem keeps torchvision's (out, 3, k, k)
            # weight, so ImageNet weights still load unchanged.
            x = x.expand(-1, 3, -1, -1)
        if self.normalize == "imagenet":
            x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        return x

    @property
    def head_modules(self) -> tuple[str, ...]:  # type: ignore[override]
        # The seed's stage 1 trains only the replaced last Linear.
        return (self.head_prefix,)

    def layer_map_to_input(self, layer_map: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """A (B, 1, h, w) map at ``target_layer`` resized (bilinear) onto the picture, in the
        input's own layout (flat ``H·W`` or 4D), the same value for every colour channel."""
        size = tuple(x.shape[-2:]) if x.dim() == 4 else self.image_size
        up = F.interpolate(layer_map, size=size, mode="bilinear", align_corners=False)
        return (up.flatten(2) if x.dim() == 3 else up).expand_as(x)

    def backbone(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_features(self, x: torch.Tensor, **extra: torch.Tensor) -> torch.Tensor:
        """The pooled feature vector (batch, in-features of the last Linear)."""
        return self.backbone(self.to_image(x))


def load_torchvision_weights(
    model: ImageModel,
    state_dict_or_path: Mapping[str, torch.Tensor] | str | PathLike,
    *,
    strict_head: bool = False,
) -> list[str]:
    """Load a torchvision state dict (a mapping, or a ``.pth`` file) into ``model``.

    Names and shapes must match torchvision's model of the same kind; a ``module.`` prefix is
    stripped and ``num_batches_tracked`` may be absent. The classifier head (the model's
    ``head_prefix``: e.g. ``fc`` for ResNets) is skipped when its shape differs (ImageNet's 1000
    classes vs. the chart's 4), unless ``strict_head``. Any other missing, unknown or wrongly
    shaped key raises ``ValueError`` naming it, before anything is copied.

    Returns the model's keys left as initialised (the skipped head, absent counters).
    """
    name = type(model).__name__
    if isinstance(state_dict_or_path, str | PathLike):
        path = Path(state_dict_or_path)
        if not path.is_file():
            raise FileNotFoundError(f"load_torchvision_weights: no file {path}")
        loaded = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(loaded, Mapping):
            raise ValueError(f"load_torchvision_weights: {path} does not hold a state dict")
        state_dict_or_path = loaded
    entries = strip_prefix(state_dict_or_path)
    own = model.state_dict()
    head = model.head_prefix + "."

    unknown = [key for key in entries if key not in own]
    if unknown:
        raise ValueError(
            f"load_torchvision_weights: key {unknown[0]!r} is not in {name}"
            f"{f' ({len(unknown)} unknown keys: {unknown[:5]})' if len(unknown) > 1 else ''}; "
            "is it a state dict of the same torchvision model?"
        )
    kept: dict[str, torch.Tensor] = {}
    skipped: list[str] = []
    for key, target in own.items():
        is_head = key.startswith(head) and not strict_head
        if key not in entries:
            if key.endswith("num_batches_tracked") or is_head:
                skipped.append(key)
                continue
            raise ValueError(f"load_torchvision_weights: key {key!r} of {name} is missing")
        value = entries[key]
        if tuple(value.shape) != tuple(target.shape):
            if is_head:
                skipped.append(key)
                continue
            raise ValueError(
                f"load_torchvision_weights: {key!r} has shape {tuple(value.shape)}, {name} "
                f"expects {tuple(target.shape)}"
            )
        kept[key] = value
    # A head of the right shape is loaded whole or not at all: never a weight without its bias.
    head_keys = [key for key in own if key.startswith(head)]
    if not strict_head and any(key in skipped for key in head_keys):
        for key in head_keys:
            if kept.pop(key, None) is not None:
                skipped.append(key)
    model.load_state_dict({**own, **kept}, strict=True)
    return [key for key in own if key in skipped]
