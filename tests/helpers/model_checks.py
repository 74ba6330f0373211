"""Checks every model test makes the same way."""

from __future__ import annotations

import torch
from torch import nn


def parameters_without_gradient(net: nn.Module, logits: torch.Tensor) -> list[str]:
    """Backpropagate a BCE loss of ``logits`` against random targets; the names of the
    parameters that got no (or an all-zero) gradient."""
    nn.functional.binary_cross_entropy_with_logits(logits, torch.rand_like(logits)).backward()
    return [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum()]
