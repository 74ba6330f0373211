"""Transforms, in three kinds that differ by when they run.

- offline: ``(signal, fs) -> (signal, fs)`` on every record once, before the cache; their
  :meth:`spec` is part of the cache key.
- fitted: statistics fitted on the train split only, applied to every split (normalisation).
- online: per sample while batches are drawn, on the train split only unless asked.

A :class:`TransformPipeline` holds the three lists; the ``transform/`` config group builds one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import signal as sps


class OfflineTransform:
    def __call__(self, x: np.ndarray, fs: float) -> tuple[np.ndarray, float]:
        raise NotImplementedError

    def spec(self) -> dict:
        return {"name": type(self).__name__, **asdict(self)}  # type: ignore[call-overload]


@dataclass
class Bandpass(OfflineTransform):
    """Zero-phase Butterworth band-pass (``low=None`` makes it low-pass, ``high=None`` high-pass)."""

    low: float | None = 0.5
    high: float | None = 40.0
    order: int = 3

    def __call__(self, x: np.ndarray, fs: float) -> tuple[np.ndarray, float]:
        nyq = fs / 2
        if self.high is not None and self.high >= nyq:
            raise ValueError(f"transform Bandpass.high={self.high} Hz must be below fs/2 = {nyq}")
        if self.low is not None and self.high is not None:
            sos = sps.butter(self.order, [self.low, self.high], "bandpass", fs=fs, output="sos")
        elif self.low is not None:
            sos = sps.butter(self.order, self.low, "highpass", fs=fs, output="sos")
        elif self.high is not None:
            sos = sps.butter(self.order, self.high, "lowpass", fs=fs, output="sos")
        else:
            return x, fs
        return sps.sosfiltfilt(sos, x, axis=-1).astype(np.float32), fs


@dataclass
class Resample(OfflineTransform):
    """Polyphase resampling to ``fs`` (anti-aliased)."""

    fs: float = 100.0

    def __call__(self, x: np.ndarray, fs: float) -> tuple[np.ndarray, float]:
        if fs == self.fs:
            return x, fs
        from fractions import Fraction

        ratio = Fraction(self.fs / fs).limit_denominator(1000)
        y = sps.resample_poly(x, ratio.numerator, ratio.denominator, axis=-1)
        return y.astype(np.float32), float(self.fs)


@dataclass
class FixedLength(OfflineTransform):
    """Crop or zero-pad every record to ``length`` samples; ``align`` says which end is kept."""

    length: int = 1000
    align: str = "left"  # left | right | center

    def __post_init__(self) -> None:
        if self.align not in ("left", "right", "center"):
            raise ValueError(f"FixedLength.align must be left/right/center, got {self.align!r}")

    def __call__(self, x: np.ndarray, fs: float) -> tuple[np.ndarray, float]:
        n = x.shape[-1]
        if n == self.length:
            return x, fs
        if n > self.length:
            start = {"left": 0, "right": n - self.length, "center": (n - self.length) // 2}
            s = start[self.align]
            return x[:, s : s + self.length], fs
        pad = self.length - n
        before = {"left": 0, "right": pad, "center": pad // 2}[self.align]
        return np.pad(x, ((0, 0), (before, pad - before))), fs


class Standardize:
    """z-score with statistics fitted on the train split only.

    ``per_lead=False`` is one scalar mean and std over every training value (the IMLE-Net
    seed's StandardScaler on the flattened data); ``per_lead=True`` one pair per lead.
    """

    def __init__(self, per_lead: bool = False, eps: float = 1e-8) -> None:
        self.per_lead = per_lead
        self.eps = eps
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None

    def fit(self, records: Sequence[np.ndarray]) -> Standardize:
        # Streaming sums in float64: the train split may not fit in memory as float64.
        total = 0
        s = s2 = 0.0
        for x in records:
            x = x.astype(np.float64)
            if self.per_lead:
                s = s + x.sum(axis=-1)
                s2 = s2 + (x * x).sum(axis=-1)
                total += x.shape[-1]
            else:
                s += x.sum()
                s2 += (x * x).sum()
                total += x.size
        if total == 0:
            raise ValueError("Standardize.fit: the train split is empty")
        mean = np.asarray(s) / total
        var = np.maximum(np.asarray(s2) / total - mean**2, 0.0)
        self.mean = mean.astype(np.float32).reshape(-1, 1)
        self.std = np.sqrt(var).astype(np.float32).reshape(-1, 1)
        return self

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.mean is None or self.std is None:
            raise RuntimeError("Standardize used before fit")
        return (x - self.mean) / (self.std + self.eps)

    def state_dict(self) -> dict:
        return {"per_lead": self.per_lead, "mean": self.mean, "std": self.std}

    def load_state_dict(self, state: dict) -> None:
        self.per_lead = bool(state["per_lead"])
        self.mean = np.asarray(state["mean"], dtype=np.float32)
        self.std = np.asarray(state["std"], dtype=np.float32)


class OnlineTransform:
    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError


@dataclass
class RandomCrop(OnlineTransform):
    """A random window of ``length`` samples in training; the centre window in evaluation."""

    length: int = 250

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n = x.shape[-1]
        if n < self.length:
            raise ValueError(f"RandomCrop.length={self.length} exceeds the record length {n}")
        start = int(rng.integers(0, n - self.length + 1))
        return x[:, start : start + self.length]

    def eval(self, x: np.ndarray) -> np.ndarray:
        start = (x.shape[-1] - self.length) // 2
        return x[:, start : start + self.length]


@dataclass
class GaussianNoise(OnlineTransform):
    std: float = 0.01

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return x + rng.normal(0.0, self.std, size=x.shape).astype(x.dtype)


@dataclass
class AmplitudeScale(OnlineTransform):
    """Each lead times its own factor from N(1, ``sigma``) with probability ``p``."""

    sigma: float = 0.1
    p: float = 0.5

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if rng.random() >= self.p:
            return x
        return x * rng.normal(1.0, self.sigma, size=(x.shape[0], 1)).astype(x.dtype)


class TransformPipeline:
    """The three kinds of transform one experiment uses."""

    def __init__(
        self,
        offline: Sequence[OfflineTransform] = (),
        normalize: Standardize | None = None,
        online: Sequence[OnlineTransform] = (),
    ) -> None:
        self.offline = list(offline)
        self.normalize = normalize
        self.online = list(online)

    def offline_spec(self) -> list[dict]:
        return [t.spec() for t in self.offline]

    def apply_offline(self, x: np.ndarray, fs: float) -> tuple[np.ndarray, float]:
        for t in self.offline:
            x, fs = t(x, fs)
        return x, fs

    def apply_online(self, x: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
        """``rng=None`` means evaluation: only the deterministic part (e.g. centre crop)."""
        for t in self.online:
            if rng is not None:
                x = t(x, rng)
            elif hasattr(t, "eval"):
                x = t.eval(x)
        return x

    def output_length(self, length: int) -> int:
        for t in self.online:
            if isinstance(t, RandomCrop):
                length = t.length
        return length
