"""The small interface every ecgx model shares.

Models take ``x`` shaped (batch, leads, samples) in physical units (after normalisation) and
return logits (batch, classes). Constructors share the leading arguments ``in_channels`` and
``num_classes`` so the training entry point can fill them from the data, not from YAML.

Explainers need two things from a model without reaching into private attributes:
- ``target_layer``: the dotted name of the module Grad-CAM / TCAV should use by default
  (the last feature map with a time axis);
- ``forward_features`` / ``forward_head``: the feature extractor and the classifier head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ECGModel(nn.Module):
    """Base class: subclasses set ``target_layer`` and implement the two halves of forward."""

    #: dotted module name (``self.get_submodule(target_layer)``) explainers use by default
    target_layer: str = ""
    #: keyword inputs the model takes besides the signal (e.g. ``("demographics",)``); each is
    #: optional: when absent the model uses a neutral value, so generic code can call model(x)
    extra_inputs: tuple[str, ...] = ()
    #: (leads, samples) of the seed study's input: FLOPs and speed are reported at this shape
    input_shape: tuple[int, int] = (12, 1000)
    #: classes of the seed configuration (the published parameter count is for this many)
    seed_num_classes: int = 5
    #: dotted names of the classifier head's modules, the last one giving the logits: what
    #: stays trainable in head-only fine-tuning (``module.train_head_only``)
    head_modules: tuple[str, ...] = ("head",)

    def forward_features(self, x: torch.Tensor, **extra: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, features: torch.Tensor, **extra: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, **extra: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x, **extra), **extra)

    def get_target_layer(self) -> nn.Module:
        """The module explainers attach to by default."""
        return self.get_submodule(self.target_layer)

    def layer_map_to_input(self, layer_map: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """A one-channel map at ``target_layer`` (Grad-CAM) placed onto the input ``x``.

        Default: the layer is (B, channels, T') with leads mixed into channels, so the map is
        linearly interpolated along time and given to every lead. Models that fold beats or
        windows into the batch axis override this with the inverse of their own reshape.
        """
        up = F.interpolate(layer_map, size=x.shape[-1], mode="linear", align_corners=False)
        return up.expand_as(x)


def head_parameter_names(model: nn.Module) -> set[str]:
    """Names of the parameters of ``model.head_modules`` (checked to exist)."""
    names = set()
    for head in getattr(model, "head_modules", ()):
        try:
            module = model.get_submodule(head)
        except AttributeError as err:
            raise ValueError(f"{type(model).__name__}.head_modules names {head!r}, "
                             f"which the model does not have") from err  # fmt: skip
        names |= {f"{head}.{n}" for n, _ in module.named_parameters()}
    return names


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters (BatchNorm running statistics are buffers and do not count)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def task_outputs(
    logits: torch.Tensor, task: str, temperature: torch.Tensor | None = None
) -> torch.Tensor:
    """What a model's logits mean for its task: sigmoid probabilities (``multilabel``), softmax
    probabilities (``multiclass``) or the values themselves (``regression``); a classification's
    logits are divided by ``temperature`` first where one is given (temperature scaling). The
    LightningModule, ``ecgx predict`` and exported models all score through this one function."""
    logits = logits.float()
    if temperature is not None and task != "regression":
        logits = logits / temperature
    if task == "multilabel":
        return torch.sigmoid(logits)
    if task == "multiclass":
        return torch.softmax(logits, dim=1)
    return logits
