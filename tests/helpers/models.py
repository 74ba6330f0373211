"""Models for tests that must know exactly what a model reads."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ecgx.models.base import ECGModel


class DemographicsOnly(ECGModel):
    """Logits from the demographic vector alone (the signal only sets the batch size): it can
    learn a task only if the demographics really reach it."""

    extra_inputs = ("demographics",)
    head_modules = ("head",)

    def __init__(
        self, in_channels: int, num_classes: int, demographics_dim: int = 5, **_: Any
    ) -> None:
        super().__init__()
        self.demographics_dim = demographics_dim
        self.head = nn.Linear(demographics_dim, num_classes)

    def forward(self, x: torch.Tensor, demographics: torch.Tensor | None = None) -> torch.Tensor:
        if demographics is None:
            demographics = x.new_zeros(x.shape[0], self.demographics_dim)
        return self.head(demographics)
