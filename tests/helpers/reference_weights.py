"""The deterministic weights and inputs of ``shared/specs/reference-vectors`` (see its README).

``torch_originals.json`` stores, for each original torch model, its state-dict names and shapes,
an input shape and the original's float64 logits, but no weights: those follow from an integer
hash of (entry index, element index). A port fills the *original's* names with
:func:`rule_state_dict`, maps them onto its own modules, feeds :func:`reference_input` and must
reproduce ``output_logits``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

REFERENCE_DIR = (
    Path(__file__).resolve().parents[2].parent / "shared" / "specs" / "reference-vectors"
)

# splitmix64 constants
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def rule_uniform(k: int, n: int, salt: int = 0) -> np.ndarray:
    """The README's u in [-1, 1) for the n elements of state-dict entry k (float64)."""
    t = np.arange(n, dtype=np.uint64)
    # uint64 arrays wrap modulo 2**64, which is the rule; only scalar overflow would warn.
    with np.errstate(over="ignore"):
        z = (t + np.uint64(1)) * _GOLDEN + np.uint64(k + 1 + salt) * _MIX1
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / 2.0**53 * 2.0 - 1.0


def rule_tensor(k: int, name: str, shape: Sequence[int], salt: int = 0) -> torch.Tensor:
    """The value of the k-th state-dict entry ``name`` with ``shape``, by the README's rule."""
    shape = tuple(int(s) for s in shape)
    n = int(np.prod(shape, dtype=np.int64))
    u = rule_uniform(k, n, salt)
    if name.endswith("running_var"):
        value = 1.0 + 0.25 * u
    elif name.endswith("running_mean"):
        value = 0.05 * u
    elif len(shape) <= 1:
        value = 1.0 + 0.1 * u if name.endswith("weight") else 0.05 * u
    else:
        value = u * np.sqrt(3.0 / (n / shape[0]))
    return torch.from_numpy(value.reshape(shape))


def rule_state_dict(
    entries: Sequence[tuple[str, Sequence[int]]], salt: int = 0
) -> dict[str, torch.Tensor]:
    """Fill ``(name, shape)`` entries, in the original's state-dict order, with float64 values."""
    return {name: rule_tensor(k, name, shape, salt) for k, (name, shape) in enumerate(entries)}


def reference_input(shape: Sequence[int]) -> torch.Tensor:
    """x[b, c, t] = 0.5·sin(0.013·(t+1)·(c+1) + 0.7·b), float64, for shape (batch, leads, samples)."""
    batch, leads, samples = (int(s) for s in shape)
    b = torch.arange(batch, dtype=torch.float64).view(-1, 1, 1)
    c = torch.arange(leads, dtype=torch.float64).view(1, -1, 1)
    t = torch.arange(samples, dtype=torch.float64).view(1, 1, -1)
    return 0.5 * torch.sin(0.013 * (t + 1) * (c + 1) + 0.7 * b)


def reference_file(name: str) -> Path:
    """Path of a reference file; skips the calling test when the folder or file is absent."""
    path = REFERENCE_DIR / name
    if not path.is_file():
        pytest.skip(f"reference vectors not available: {path}")
    return path


@cache
def _torch_originals(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def torch_original(key: str) -> dict[str, Any]:
    """One model of ``torch_originals.json`` (``state_dict`` entries, ``input`` shape,
    ``extra_input``, ``output_logits``, plus ``salt``); skips when the file is absent."""
    data = _torch_originals(reference_file("torch_originals.json"))
    if key not in data["models"]:
        raise KeyError(f"{key!r} not in torch_originals.json: {sorted(data['models'])}")
    return {**data["models"][key], "salt": int(data["formula"].get("salt", 0))}


def original_weights_and_input(key: str) -> tuple[dict[str, torch.Tensor], torch.Tensor, Any]:
    """(rule-filled state dict under the original's names, reference input, entry) for ``key``."""
    entry = torch_original(key)
    state = rule_state_dict([(name, shape) for name, shape in entry["state_dict"]], entry["salt"])
    return state, reference_input(entry["input"]), entry


def keras_reference(name: str) -> dict[str, np.ndarray]:
    """Every array of a Keras reference file (weights ``wNNN:<name>``, input, outputs)."""
    with np.load(reference_file(name)) as data:
        return {key: data[key] for key in data.files}


def keras_weight_list(reference: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The Keras weights of a reference file in ``model.get_weights()`` order."""
    keys = sorted(key for key in reference if key.startswith("w") and ":" in key)
    return [reference[key] for key in keys]
