"""Transforms, in three kinds that differ by when they run.

- offline: ``(signal, fs) -> (signal, fs)`` on every record once, before the cache; their
  :meth:`spec` is part of the cache key.
- fitted: statistics fitted on the train split only, applied to every split (normalisation).
- online: per sample while batches are drawn, on the train split only unless asked.

A :class:`TransformPipeline` holds the three lists; the ``transform/`` config group builds one.

Online transforms never write into their input. Each has a batched form,
:meth:`OnlineTransform.batch`, over a stack of records ``(batch, leads, samples)``: the data
module's loader uses it (vectorised where the transform allows, else one record at a time) and
:meth:`TransformPipeline.apply_batch` moves the fitted normaliser after the leading crops, where
the result is the same but the work is on the cropped samples only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import signal as sps

from ecgx.errors import ConfigValueError
from ecgx.formats.record import LEADS


# Plain classes, not dataclasses: OmegaConf turns dataclass instances inside an instantiated
# list back into DictConfigs, which would silently drop the transform.
class _Settings:
    def spec(self) -> dict:
        """Class name and settings: part of the cache key for offline transforms."""
        return {"name": type(self).__name__, **vars(self)}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


@dataclass(frozen=True)
class TimeAxis:
    """Where a record's view lies on the record's own time line: sample ``i`` is at
    ``start_s + i / fs`` s from the record's first sample (before 0 or past the record's end:
    padding). Ground truth known in seconds (the synthetic set's beat bounds) finds its samples
    in a transformed view this way."""

    start_s: float
    fs: float
    n: int


def _crop_or_pad_axis(axis: TimeAxis, length: int, align: str) -> TimeAxis:
    # The time-line side of _crop_or_pad: a crop moves the start later, padding earlier.
    return TimeAxis(axis.start_s + _shift(axis.n, length, align) / axis.fs, axis.fs, length)


def _shift(n: int, length: int, align: str) -> int:
    """Where ``length`` samples start in ``n`` aligned by ``align``: the crop's first sample
    (≥ 0), or minus the zeros padded before (< 0) when ``n`` is shorter."""
    gap = abs(n - length)
    offset = {"left": 0, "right": gap, "center": gap // 2}[align]
    return offset if n >= length else -offset


class OfflineTransform(_Settings):
    #: its output samples are its input samples' instants (filters, lead selection, units)
    keeps_time: bool = False

    def __call__(self, x: np.ndarray, fs: float) -> tuple[np.ndarray, float]:
        raise NotImplementedError

    def time_axis(self, axis: TimeAxis) -> TimeAxis | None:
        """The output's time axis given the input's; None where it is not a time series of
        the same record (a chart image) or a subclass does not say."""
        return axis if self.keeps_time else None

    def output_leads(self, leads: tuple[str, ...]) -> tuple[str, ...]:
        """The lead names of the output rows given those of the input (same, unless selected)."""
        return leads


class Bandpass(OfflineTransform):
    """Zero-phase Butterworth band-pass (``low=None`` makes it low-pass, ``high=None`` high-pass)."""

    keeps_time = True

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
        up, down = self._ratio(fs)
        y = sps.resample_poly(x, up, down, axis=-1)
        return y.astype(np.float32), float(self.fs)

    def time_axis(self, axis: TimeAxis) -> TimeAxis:
        if axis.fs == self.fs:
            return axis
        up, down = self._ratio(axis.fs)
        # resample_poly is zero-phase: sample 0 stays at the same instant; ceil(n·up/down) out.
        return TimeAxis(axis.start_s, self.fs, -(-axis.n * up // down))

    def _ratio(self, fs: float) -> tuple[int, int]:
        from fractions import Fraction

        ratio = Fraction(self.fs / fs).limit_denominator(1000)
        return ratio.numerator, ratio.denominator


class FixedLength(OfflineTransform):
    """Crop or zero-pad every record to ``length`` samples; ``align`` says which end is kept."""

    def __init__(self, length: int = 1000, align: str = "left") -> None:
        if align not in ("left", "right", "center"):
            raise ConfigValueError(f"FixedLength.align must be left/right/center, got {align!r}")
        self.length, self.align = int(length), align

    def __call__(self, x: np.ndarray, fs: float) -> tuple[np.ndarray, float]:
        return _crop_or_pad(x, self.length, self.align), fs

    def time_axis(self, axis: TimeAxis) -> TimeAxis:
        return _crop_or_pad_axis(axis, self.length, self.align)


def _crop_or_pad(x: np.ndarray, length: int, align: str) -> np.ndarray:
    # Along the last axis only, so one record (leads, samples) and a batch of them alike.
    n = x.shape[-1]
    if n == length:
        return x
    s = _shift(n, length, align)
    if n > length:
        return x[..., s : s + length]
    return _pad_time(x, -s, length - n + s)


def _pad_time(x: np.ndarray, before: int, after: int) -> np.ndarray:
    return np.pad(x, [(0, 0)] * (x.ndim - 1) + [(before, after)])


def _windows(x: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    """``x[b, :, starts[b]:starts[b] + length]`` for every record b of a batch, as one gather."""
    view = np.lib.stride_tricks.sliding_window_view(x, length, axis=-1)
    return view[np.arange(len(x)), :, starts]


def _add_where_drawn(x: np.ndarray, drawn: np.ndarray, added: np.ndarray) -> np.ndarray:
    """``x`` plus ``added`` (one row per drawn record) on the records whose draw fired; the
    others keep their values bit for bit (``x + 0`` would turn -0.0 into 0.0)."""
    if not drawn.any():
        return x
    out = x.copy()
    out[drawn] += added
    return out


class Notch(OfflineTransform):
    """Zero-phase IIR notch at ``freq`` Hz (mains interference); ``quality`` = freq / bandwidth."""

    keeps_time = True

    def __init__(self, freq: float = 50.0, quality: float = 30.0) -> None:
        self.freq, self.quality = float(freq), float(quality)

    def __call__(self, x: np.ndarray, fs: float) -> tuple[np.ndarray, float]:
        if not 0 < self.freq < fs / 2:
            raise ConfigValueError(
                f"transform Notch.freq={self.freq} Hz must be between 0 and fs/2 = {fs / 2}"
            )
        b, a = sps.iirnotch(self.freq, self.quality, fs=fs)
        return sps.filtfilt(b, a, x, axis=-1).astype(np.float32), fs


class LeadSubset(OfflineTransform):
    """Keep some leads, by canonical name (any case: ``avr`` is ``aVR``), in the order given.

    The input must be the 12 leads in canonical order, which every reader yields; the output
    rows are ``leads`` in the order listed, so the cache must record :meth:`output_leads`
    rather than the reader's lead names. (The CPSC2018 seed keeps canonical order whatever the
    order on its command line: list the leads in canonical order to reproduce it.)
    """

    keeps_time = True

    def __init__(self, leads: Sequence[str]) -> None:
        canonical = {name.upper(): name for name in LEADS}
        unknown = [name for name in leads if str(name).strip().upper() not in canonical]
        if unknown or not leads:
            raise ConfigValueError(
                f"transform LeadSubset.leads={list(leads)}: unknown {unknown}, expected some of "
                f"{list(LEADS)}"
            )
        self.leads = [canonical[str(name).strip().upper()] for name in leads]
        if len(set(self.leads)) != len(self.leads):
            raise ConfigValueError(f"transform LeadSubset.leads={self.leads} repeats a lead")

    def __call__(self, x: np.ndarray, fs: float) -> tuple[np.ndarray, float]:
        if x.shape[0] != len(LEADS):
            raise ConfigValueError(
                f"transform LeadSubset needs the {len(LEADS)} canonical leads, got {x.shape[0]} "
                "rows (is there another LeadSubset before it?)"
            )
        return x[[LEADS.index(name) for name in self.leads]], fs

    def output_leads(self, leads: tuple[str, ...]) -> tuple[str, ...]:
        if tuple(leads) != LEADS:
            raise ConfigValueError(
                f"transform LeadSubset needs the leads {list(LEADS)} in order, got {list(leads)}"
            )
        return tuple(self.leads)


class ToMillivolts(OfflineTransform):
    """Multiply by ``scale`` to get mV from a reader that yields other units (µV: 0.001)."""

    keeps_time = True

    def __init__(self, scale: float = 0.001) -> None:
        self.scale = float(scale)

    def __call__(self, x: np.ndarray, fs: float) -> tuple[np.ndarray, float]:
        return (x * self.scale).astype(np.float32), fs


class Standardize:
    """z-score with statistics fitted on the train split only.

    ``per_lead=False`` is one scalar mean and std over every training value (the IMLE-Net
    seed's StandardScaler on the flattened data); ``per_lead=True`` one pair per lead.
    Pointwise per lead, so it gives the same values before or after a crop (see
    :meth:`TransformPipeline.apply_batch`), and works on a record or a batch of records.
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


class MinMax:
    """Min–max scaling to [0, 1] with the minimum and maximum of the train split only.

    ``per_lead=True`` is one (min, max) pair per lead, else one over every value. A lead that is
    constant in training maps to 0 instead of dividing by zero (the SE-ResNet seed's bug).
    Pointwise per lead, like :class:`Standardize`.
    """

    def __init__(self, per_lead: bool = True) -> None:
        self.per_lead = per_lead
        self.min: np.ndarray | None = None
        self.max: np.ndarray | None = None

    def fit(self, records: Sequence[np.ndarray]) -> MinMax:
        lo = hi = None
        for x in records:
            axis = -1 if self.per_lead else None
            x_lo, x_hi = np.min(x, axis=axis), np.max(x, axis=axis)
            lo = x_lo if lo is None else np.minimum(lo, x_lo)
            hi = x_hi if hi is None else np.maximum(hi, x_hi)
        if lo is None or hi is None:
            raise ValueError("MinMax.fit: the train split is empty")
        self.min = np.asarray(lo, dtype=np.float32).reshape(-1, 1)
        self.max = np.asarray(hi, dtype=np.float32).reshape(-1, 1)
        return self

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.min is None or self.max is None:
            raise RuntimeError("MinMax used before fit")
        span = self.max - self.min
        return (x - self.min) / np.where(span > 0, span, 1.0).astype(np.float32)

    def state_dict(self) -> dict:
        return {"per_lead": self.per_lead, "min": self.min, "max": self.max}

    def load_state_dict(self, state: dict) -> None:
        self.per_lead = bool(state["per_lead"])
        self.min = np.asarray(state["min"], dtype=np.float32)
        self.max = np.asarray(state["max"], dtype=np.float32)


class OnlineTransform(_Settings):
    """``__call__`` transforms one record (leads, samples) in training; ``eval``, where a
    subclass has it, is its deterministic form in evaluation (those without are skipped there).
    """

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def batch(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A batch (records, leads, samples) in training: each record as ``__call__`` would
        treat it, the random numbers drawn from ``rng`` (other draws than record by record).
        This fallback calls ``__call__`` on each record; subclasses vectorise it."""
        return np.stack([self(record, rng) for record in x])

    def batch_eval(self, x: np.ndarray) -> np.ndarray:
        """A batch in evaluation (only for subclasses with ``eval``)."""
        return np.stack([self.eval(record) for record in x])  # type: ignore[attr-defined]

    #: it cuts or pads records to a length (a crop, a clip): left out of the uncropped view
    #: that windowed scoring uses (``module.test_windows``)
    resizes: bool = False

    def selects(self, length: int | None) -> bool:
        """True when, given records of ``length`` samples, it only picks samples of the input
        (a crop): a pointwise per-lead map such as the fitted normaliser then commutes with it."""
        return False

    def output_length(self, length: int | None) -> int | None:
        """Samples out given samples in (``None``: records of varying length)."""
        return length

    def eval_time_axis(self, axis: TimeAxis) -> TimeAxis | None:
        """The evaluation view's time axis given the input's (None: not known)."""
        return None if self.resizes and hasattr(self, "eval") else axis


class RandomCrop(OnlineTransform):
    """A random window of ``length`` samples in training; the centre window in evaluation."""

    resizes = True

    def __init__(self, length: int = 250) -> None:
        self.length = int(length)

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        self._check(x.shape[-1])
        start = int(rng.integers(0, x.shape[-1] - self.length + 1))
        return x[:, start : start + self.length]

    def batch(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n = x.shape[-1]
        self._check(n)
        return _windows(x, rng.integers(0, n - self.length + 1, size=len(x)), self.length)

    def eval(self, x: np.ndarray) -> np.ndarray:
        start = (x.shape[-1] - self.length) // 2
        return x[..., start : start + self.length]

    def eval_time_axis(self, axis: TimeAxis) -> TimeAxis:
        return _crop_or_pad_axis(axis, self.length, "center")

    def batch_eval(self, x: np.ndarray) -> np.ndarray:
        return self.eval(x)

    def selects(self, length: int | None) -> bool:
        return True  # a shorter record is an error, never padded

    def _check(self, n: int) -> None:
        if n < self.length:
            raise ConfigValueError(f"RandomCrop.length={self.length} exceeds the record length {n}")

    def output_length(self, length: int | None) -> int | None:
        return self.length


class GaussianNoise(OnlineTransform):
    """Additive white noise of standard deviation ``std`` (in normalised units)."""

    def __init__(self, std: float = 0.01) -> None:
        self.std = float(std)

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return x + rng.normal(0.0, self.std, size=x.shape).astype(x.dtype)

    def batch(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self(x, rng)  # independent per value: the batch is one array of them


class AmplitudeScale(OnlineTransform):
    """Each lead times its own factor from N(1, ``sigma``) with probability ``p``."""

    def __init__(self, sigma: float = 0.1, p: float = 0.5) -> None:
        self.sigma, self.p = float(sigma), float(p)

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if rng.random() >= self.p:
            return x
        return x * rng.normal(1.0, self.sigma, size=(x.shape[0], 1)).astype(x.dtype)

    def batch(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        drawn = rng.random(len(x)) < self.p
        factors = np.ones((*x.shape[:2], 1), dtype=x.dtype)  # x * 1 is x exactly
        factors[drawn] = rng.normal(1.0, self.sigma, size=(int(drawn.sum()), x.shape[1], 1))
        return x * factors


class RandomClip(OnlineTransform):
    """The SE-ResNet seed's clip to ``length`` samples.

    Training: a random window if longer, else zeros split at random between the two ends.
    Evaluation (its ValClip): zeros at the end if shorter. The seed never crops in evaluation
    (batch 1 at full length); batches need one length, so a longer record keeps its start.
    """

    resizes = True

    def __init__(self, length: int = 4096) -> None:
        self.length = int(length)

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n = x.shape[-1]
        if n >= self.length:
            start = int(rng.integers(0, n - self.length + 1))
            return x[:, start : start + self.length]
        left = int(rng.integers(0, self.length - n + 1))
        return np.pad(x, ((0, 0), (left, self.length - n - left)))

    def batch(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n = x.shape[-1]
        if n >= self.length:
            return _windows(x, rng.integers(0, n - self.length + 1, size=len(x)), self.length)
        out = np.zeros((*x.shape[:-1], self.length), dtype=x.dtype)
        for b, left in enumerate(rng.integers(0, self.length - n + 1, size=len(x))):
            out[b, :, left : left + n] = x[b]
        return out

    def eval(self, x: np.ndarray) -> np.ndarray:
        n = x.shape[-1]
        if n >= self.length:
            return x[..., : self.length]
        return _pad_time(x, 0, self.length - n)

    def eval_time_axis(self, axis: TimeAxis) -> TimeAxis:
        return _crop_or_pad_axis(axis, self.length, "left")

    def batch_eval(self, x: np.ndarray) -> np.ndarray:
        return self.eval(x)

    def selects(self, length: int | None) -> bool:
        return length is not None and length >= self.length

    def output_length(self, length: int | None) -> int | None:
        return self.length


class CropOrPad(OnlineTransform):
    """The same crop or zero-pad to ``length`` in training and evaluation (see FixedLength).

    Online rather than offline when augmentations must see the whole record first, as in the
    CPSC2018 seed: scale and offset, then the last 15,000 samples (``align="right"``).
    """

    resizes = True

    def __init__(self, length: int = 15000, align: str = "right") -> None:
        if align not in ("left", "right", "center"):
            raise ConfigValueError(
                f"transform CropOrPad.align must be left/right/center, got {align!r}"
            )
        self.length, self.align = int(length), align

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.eval(x)

    def batch(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.eval(x)

    def eval(self, x: np.ndarray) -> np.ndarray:
        return _crop_or_pad(x, self.length, self.align)

    def eval_time_axis(self, axis: TimeAxis) -> TimeAxis:
        return _crop_or_pad_axis(axis, self.length, self.align)

    def batch_eval(self, x: np.ndarray) -> np.ndarray:
        return self.eval(x)

    def selects(self, length: int | None) -> bool:
        return length is not None and length >= self.length

    def output_length(self, length: int | None) -> int | None:
        return self.length


class RecordMinMax(OnlineTransform):
    """Min–max to [0, 1] of each record on its own (the SE-ResNet seed's ``Normalize('0-1')``).

    Online, after a clip, to keep the seed's order: its zero padding takes part in the min and
    max. A constant lead maps to 0 rather than dividing by zero.
    """

    def __init__(self, per_lead: bool = True) -> None:
        self.per_lead = bool(per_lead)

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.eval(x)

    def batch(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.eval(x)

    def eval(self, x: np.ndarray) -> np.ndarray:
        # Over the last one or two axes: each record of a batch has its own min and max.
        axis = -1 if self.per_lead else (-2, -1)
        lo = np.min(x, axis=axis, keepdims=True)
        span = np.max(x, axis=axis, keepdims=True) - lo
        return (x - lo) / np.where(span > 0, span, 1.0).astype(x.dtype)

    def batch_eval(self, x: np.ndarray) -> np.ndarray:
        return self.eval(x)


class AmplitudeOffset(OnlineTransform):
    """With probability ``p``, add to each lead its own offset ``k * step`` mV, k an integer
    drawn uniformly from [``low``, ``high``] (CPSC2018 seed: k in [-20, 19], step 1/1000)."""

    def __init__(
        self, p: float = 0.3085, low: int = -20, high: int = 19, step: float = 0.001
    ) -> None:
        if int(low) > int(high):
            raise ConfigValueError(f"transform AmplitudeOffset.low={low} exceeds high={high}")
        self.p, self.low, self.high, self.step = float(p), int(low), int(high), float(step)

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if rng.random() >= self.p:
            return x
        k = rng.integers(self.low, self.high + 1, size=(x.shape[0], 1))
        return x + (k * self.step).astype(x.dtype)

    def batch(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        drawn = rng.random(len(x)) < self.p
        k = rng.integers(self.low, self.high + 1, size=(int(drawn.sum()), x.shape[1], 1))
        return _add_where_drawn(x, drawn, (k * self.step).astype(x.dtype))


class BaselineWander(OnlineTransform):
    """With probability ``p``, add to each lead a slow sinusoid: frequency uniform in
    (0, ``max_freq``] Hz, random phase, amplitude uniform in [0, ``amplitude``] (signal units).

    Online transforms do not see the sampling rate, so ``fs`` must be that of the cache.
    """

    def __init__(
        self, amplitude: float = 0.1, max_freq: float = 0.5, fs: float = 100.0, p: float = 0.5
    ) -> None:
        if not 0 < float(max_freq) < float(fs) / 2:
            raise ConfigValueError(
                f"transform BaselineWander.max_freq={max_freq} must be in (0, fs/2 = {fs / 2})"
            )
        self.amplitude, self.max_freq = float(amplitude), float(max_freq)
        self.fs, self.p = float(fs), float(p)

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if rng.random() >= self.p:
            return x
        leads = (x.shape[0], 1)
        freq = self.max_freq * (1.0 - rng.random(leads))  # (0, max_freq]
        phase = rng.uniform(0.0, 2 * np.pi, leads)
        amp = rng.uniform(0.0, self.amplitude, leads)
        t = np.arange(x.shape[-1]) / self.fs
        return x + (amp * np.sin(2 * np.pi * freq * t + phase)).astype(x.dtype)

    def batch(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        drawn = rng.random(len(x)) < self.p
        leads = (int(drawn.sum()), x.shape[1], 1)
        freq = self.max_freq * (1.0 - rng.random(leads))
        phase = rng.uniform(0.0, 2 * np.pi, leads)
        amp = rng.uniform(0.0, self.amplitude, leads)
        t = np.arange(x.shape[-1]) / self.fs
        wander = (amp * np.sin(2 * np.pi * freq * t + phase)).astype(x.dtype)
        return _add_where_drawn(x, drawn, wander)


class LeadDropout(OnlineTransform):
    """Zero each lead with probability ``p``; one random lead survives if all would drop, so a
    labelled sample never becomes all zeros."""

    def __init__(self, p: float = 0.1) -> None:
        self.p = float(p)

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        keep = rng.random(x.shape[0]) >= self.p
        if not keep.any():
            keep[rng.integers(x.shape[0])] = True
        return x * keep[:, None].astype(x.dtype)

    def batch(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        keep = rng.random(x.shape[:2]) >= self.p
        none = np.flatnonzero(~keep.any(axis=1))
        keep[none, rng.integers(x.shape[1], size=len(none))] = True
        return x * keep[:, :, None].astype(x.dtype)


class TransformPipeline:
    """The three kinds of transform one experiment uses."""

    def __init__(
        self,
        offline: Sequence[OfflineTransform] = (),
        normalize: Standardize | MinMax | None = None,
        online: Sequence[OnlineTransform] = (),
    ) -> None:
        self.offline = list(offline)
        self.normalize = normalize
        self.online = list(online)

    #: the uncropped view (:meth:`uncropped`): records keep their own lengths
    keeps_length: bool = False

    def uncropped(self) -> TransformPipeline:
        """The same pipeline without the online transforms that cut or pad records (the
        normaliser is shared, so its fitted state is too): test records scored by windows."""
        view = TransformPipeline(self.offline, self.normalize,
                                 [t for t in self.online if not t.resizes])  # fmt: skip
        view.keeps_length = True
        return view

    def offline_spec(self) -> list[dict]:
        return [t.spec() for t in self.offline]

    def output_leads(self, leads: tuple[str, ...]) -> tuple[str, ...]:
        """Lead names of the cached rows: what the cache must store (see LeadSubset)."""
        for t in self.offline:
            leads = t.output_leads(leads)
        return leads

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

    def apply_batch(self, x: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
        """Normalisation and the online transforms on a batch ``(records, leads, samples)`` of
        cached records: each record as ``apply_online(normalize(record))`` would give it (in
        training with other random draws, all taken from ``rng``; ``None``: evaluation).

        The normaliser is pointwise per lead, so it runs after the leading transforms that only
        pick samples (crops): the same values, computed on the samples kept only.
        """
        steps = [t for t in self.online if rng is not None or hasattr(t, "eval")]
        first = 0
        length: int | None = x.shape[-1]
        while first < len(steps) and steps[first].selects(length):
            length = steps[first].output_length(length)
            first += 1
        for pos, t in enumerate(steps):
            if pos == first:
                x = self._normalize_batch(x)
            x = t.batch(x, rng) if rng is not None else t.batch_eval(x)
        if first == len(steps):
            x = self._normalize_batch(x)
        return x

    def _normalize_batch(self, x: np.ndarray) -> np.ndarray:
        return x if self.normalize is None else self.normalize(x)

    def eval_time_axis(self, axis: TimeAxis) -> TimeAxis | None:
        """The evaluation view's time axis (offline transforms, then the online ones' ``eval``)
        given the record's as read; None where a transform does not keep a time series."""
        current: TimeAxis | None = axis
        for t in self.offline:
            current = t.time_axis(current) if current is not None else None
        for t in self.online:
            if current is not None and hasattr(t, "eval"):
                current = t.eval_time_axis(current)
        return current

    def output_length(self, length: int | None) -> int | None:
        """Samples per batch item given the cached length (``None`` where it varies, which a
        clip to a fixed length makes known)."""
        for t in self.online:
            length = t.output_length(length)
        return length
