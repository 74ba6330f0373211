"""Transforms, in three kinds that differ by when they run.

- offline: ``(signal, fs) -> (signal, fs)`` on every record once, before the cache; their
  :meth:`spec` is part of the cache key.
- fitted: statistics fitted on the train split only, applied to every split (normalisation).
- online: per sample while batches are drawn, on the train split only unless asked.

A :class:`TransformPipeline` holds the three lists; the ``transform/`` config group builds one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import signal as sps

from ecgx.errors import ConfigValueError


# Plain classes, not dataclasses: OmegaConf turns dataclass instances inside an instantiated
# list back into DictConfigs, which would silently drop the transform.
class _Settings:
    def spec(self) -> dict:
        """Class name and settings: part of the cache key for offline transforms."""
        return {"name": type(self).__name__, **vars(self)}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class OfflineTransform(_Settings):
    def __call__(self, x: np.ndarray, fs: float) -> tuple[np.ndarray, float]:
        raise NotImplementedError


class Bandpass(OfflineTransform):
    """Zero-phase Butterworth band-pass (``low=None`` makes it low-pass, ``high=None`` high-pass)."""

    def __init__(self, low: float | None = 0.5, high: float | None = 40.0, order: int = 3):
        self.low, self.high, self.order = low, high, int(order)

    def __call__(self, x: np.ndarray, fs: float) -> tuple[np.ndarray, float]:
        nyq = fs / 2
        if self.high is not None and self.high >= nyq:
            raise ConfigValueError(
                f"transform Bandpass.high={self.high} Hz must be below fs/2 = {nyq}"
            )
        if self.low is not None and self.high is not None:
            sos = sps.butter(self.order, [self.low, self.high], "bandpass", fs=fs, output="sos")
        elif self.low is not None:
            sos = sps.butter(self.order, self.low, "highpass", fs=fs, output="sos")
        elif self.high is not None:
            sos = sps.butter(self.order, self.high, "lowpass", fs=fs, output="sos")
        else:
            return x, fs
        return sps.sosfiltfilt(sos, x, axis=-1).astype(np.float32), fs


class Resample(OfflineTransform):
    """Polyphase resampling to ``fs`` (anti-aliased)."""

    def __init__(self, fs: float = 100.0) -> None:
        self.fs = float(fs)

    def __call__(self, x: np.ndarray, fs: float) -> tuple[np.ndarray, float]:
        if fs == self.fs:
            return x, fs
        from fractions import Fraction

        ratio = Fraction(self.fs / fs).limit_denominator(1000)
        y = sps.resample_poly(x, ratio.numerator, ratio.denominator, axis=-1)
        return y.astype(np.float32), float(self.fs)


class FixedLength(OfflineTransform):
    """Crop or zero-pad every record to ``length`` samples; ``align`` says which end is kept."""

    def __init__(self, length: int = 1000, align: str = "left") -> None:
        if align not in ("left", "right", "center"):
            raise ConfigValueError(f"FixedLength.align must be left/right/center, got {align!r}")
        self.length, self.align = int(length), align

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


class OnlineTransform(_Settings):
    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError


class RandomCrop(OnlineTransform):
    """A random window of ``length`` samples in training; the centre window in evaluation."""

    def __init__(self, length: int = 250) -> None:
        self.length = int(length)

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n = x.shape[-1]
        if n < self.length:
            raise ConfigValueError(f"RandomCrop.length={self.length} exceeds the record length {n}")
        start = int(rng.integers(0, n - self.length + 1))
        return x[:, start : start + self.length]

    def eval(self, x: np.ndarray) -> np.ndarray:
        start = (x.shape[-1] - self.length) // 2
        return x[:, start : start + self.length]


class GaussianNoise(OnlineTransform):
    """Additive white noise of standard deviation ``std`` (in normalised units)."""

    def __init__(self, std: float = 0.01) -> None:
        self.std = float(std)

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return x + rng.normal(0.0, self.std, size=x.shape).astype(x.dtype)


class AmplitudeScale(OnlineTransform):
    """Each lead times its own factor from N(1, ``sigma``) with probability ``p``."""

    def __init__(self, sigma: float = 0.1, p: float = 0.5) -> None:
        self.sigma, self.p = float(sigma), float(p)

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
