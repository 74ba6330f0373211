"""Test-time aggregation over windows (``module.test_windows``): a record longer than the
model's training window is scored window by window and the outputs reduced to one per record.

Used by the test epoch, ``ecgx eval`` and ``ecgx predict``, for any model. The test records then
come uncropped (the DataModule drops the online crops from their view), in one batch padded to
the longest with each record's length beside it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ecgx.errors import ConfigValueError

Outputs = Callable[..., torch.Tensor]  # (windows, leads, samples), **extras -> (windows, C)


class Windows:
    """Where the windows of a record of ``length`` samples lie, and how their outputs reduce."""

    length: int
    reduce: str = "mean"

    def spans(self, length: int) -> list[tuple[int, int]]:
        raise NotImplementedError

    def score(
        self,
        outputs: Outputs,
        x: torch.Tensor,
        lengths: torch.Tensor | None = None,
        extras: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Per-record outputs (batch, classes) of ``x`` (batch, leads, samples), each record's
        own ``lengths[i]`` samples (all when None) cut into windows, scored by ``outputs``
        (probabilities), reduced. ``extras`` (batch, d) are repeated for every window."""
        extras = extras or {}
        full = x.shape[-1]
        if lengths is None or bool((lengths == full).all()):
            return self._same_length(outputs, x, extras)
        rows = [
            self._same_length(
                outputs, x[i : i + 1, :, : int(n)], {k: v[i : i + 1] for k, v in extras.items()}
            )  # fmt: skip
            for i, n in enumerate(lengths.tolist())
        ]
        return torch.cat(rows)

    def _same_length(
        self, outputs: Outputs, x: torch.Tensor, extras: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        n = x.shape[-1]
        if n < self.length:  # zeros at the end, as the seeds pad short records
            x = torch.nn.functional.pad(x, (0, self.length - n))
            n = self.length
        spans = self.spans(n)
        by_size: dict[int, list[int]] = {}
        for k, (start, stop) in enumerate(spans):
            by_size.setdefault(stop - start, []).append(k)
        scores: list[torch.Tensor | None] = [None] * len(spans)
        for ks in by_size.values():  # windows of one size in one forward call
            chunk = torch.cat([x[..., spans[k][0] : spans[k][1]] for k in ks])
            repeated = {
                name: v.repeat(len(ks), *([1] * (v.ndim - 1))) for name, v in extras.items()
            }
            out = outputs(chunk, **repeated).reshape(len(ks), x.shape[0], -1)
            for j, k in enumerate(ks):
                scores[k] = out[j]
        stacked = torch.stack(scores)  # (windows, batch, classes)
        return stacked.amax(0) if self.reduce == "max" else stacked.mean(0)


class SlidingWindows(Windows):
    """Windows of ``length`` samples every ``stride`` samples, the last one ending with the
    record (the PTB-XL benchmark: 2.5 s windows at a 1.25 s stride, the maximum output)."""

    def __init__(self, length: int, stride: int, reduce: str = "max") -> None:
        if length < 1 or stride < 1:
            raise ConfigValueError(f"module.test_windows: length={length} and stride={stride} "
                                   "must be positive sample counts")  # fmt: skip
        if reduce not in ("max", "mean"):
            raise ConfigValueError(
                f"module.test_windows.reduce must be max or mean, got {reduce!r}"
            )
        self.length, self.stride, self.reduce = int(length), int(stride), reduce

    def spans(self, length: int) -> list[tuple[int, int]]:
        starts = list(range(0, length - self.length + 1, self.stride))
        if starts[-1] != length - self.length:
            starts.append(length - self.length)
        return [(s, s + self.length) for s in starts]


class ChallengeWindows(Windows):
    """The SE-ResNet18 CinC 2020 entry's evaluation (spec 1.4): windows of ``length`` overlapping
    by ``overlap``, the first being the *whole* record (its quirk, kept), the mean sigmoid.

    With P = ceil((L − length) / (length − overlap)) + 1 and stride = int((L − length) / (P − 1)),
    windows 1 … P−2 start at i·stride and the last is [L − length, L); a record no longer than
    ``length`` is one window (zero-padded at the end).
    """

    reduce = "mean"

    def __init__(self, length: int = 4096, overlap: int = 256) -> None:
        if length <= overlap or overlap < 0:
            raise ConfigValueError(f"module.test_windows: need length > overlap >= 0, got "
                                   f"{length}, {overlap}")  # fmt: skip
        self.length, self.overlap = int(length), int(overlap)

    def spans(self, length: int) -> list[tuple[int, int]]:
        if length <= self.length:
            return [(0, length)]
        count = math.ceil((length - self.length) / (self.length - self.overlap)) + 1
        stride = int((length - self.length) / (count - 1))
        spans = [(0, length)]
        spans += [(i * stride, i * stride + self.length) for i in range(1, count - 1)]
        spans.append((length - self.length, length))
        return spans


class WholeRecord(Windows):
    """The whole uncropped record as one window, zero-padded at the end to ``min_length`` (the
    SE-ResNet18 refactor's evaluation: batch 1 at full length, its ValClip padding)."""

    def __init__(self, min_length: int = 4096) -> None:
        self.length = int(min_length)

    def spans(self, length: int) -> list[tuple[int, int]]:
        return [(0, length)]
