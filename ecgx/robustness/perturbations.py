"""Perturbations of a recording: what a lead set, an electrode, the mains or the recorder does to
an ECG. Each one is ``perturbation(x, fs, leads, rng) -> x'`` on a batch ``(records, leads,
samples)`` of raw records (the reader's output, in mV, before any offline transform), never
changing ``x`` in place.

Additive noises are scaled per record so that the signal-to-noise ratio, measured against the
clean record's power (mean square over all its leads and samples), is exactly ``snr_db``:
``10 log10(P_signal / P_noise) = snr_db``. Measuring per record rather than per lead keeps a
low-voltage lead as noisy relative to the others as it would be on a real recorder, where the
noise does not know which lead is small.

The noise shapes follow the MIT-BIH Noise Stress Test Database's categories (baseline wander,
electrode motion, muscle-like white noise) and the mains at 50/60 Hz; the lead algebra is
Einthoven's and Goldberger's.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from fractions import Fraction

import numpy as np
from scipy import signal as sps

from ecgx.errors import ConfigValueError
from ecgx.formats.record import LEADS

log = logging.getLogger(__name__)

LIMB_LEADS = ("I", "II", "III", "aVR", "aVL", "aVF")


class Perturbation:
    """Base class: the settings are the constructor's arguments (shown in tables and logs)."""

    #: the SNR in dB of an additive noise (None for the others): the x axis of the SNR plot
    snr_db: float | None = None

    def __call__(
        self, x: np.ndarray, fs: float, leads: Sequence[str], rng: np.random.Generator
    ) -> np.ndarray:
        raise NotImplementedError

    def describe(self) -> str:
        settings = ", ".join(f"{k}={v}" for k, v in vars(self).items())
        return f"{type(self).__name__}({settings})"


def _positions(leads: Sequence[str], wanted: Sequence[str], key: str) -> list[int]:
    """Indices of ``wanted`` in ``leads``; ConfigValueError naming the key and the lead."""
    where = {name: i for i, name in enumerate(leads)}
    missing = [w for w in wanted if w not in where]
    if missing:
        raise ConfigValueError(
            f"{key}: lead(s) {missing} not in the records' leads {list(leads)} "
            f"(names as in {list(LEADS)})"
        )
    return [where[w] for w in wanted]


def _check_leads(names: Sequence[str], key: str) -> list[str]:
    names = [str(n) for n in names]
    unknown = [n for n in names if n not in LEADS]
    if unknown:
        raise ConfigValueError(f"{key}: unknown lead(s) {unknown}; expected names of {list(LEADS)}")
    return names


# -- which leads are recorded -----------------------------------------------------------------
class KeepLeads(Perturbation):
    """Only ``leads`` recorded: every other lead is zero (a flat line, as a missing lead reaches
    a 12-lead model)."""

    def __init__(self, leads: Sequence[str]) -> None:
        self.leads = _check_leads(leads, "KeepLeads.leads")

    def __call__(self, x, fs, leads, rng):  # noqa: ANN001, ANN204
        keep = _positions(leads, self.leads, "KeepLeads.leads")
        out = np.zeros_like(x)
        out[:, keep] = x[:, keep]
        return out


class DropLeads(Perturbation):
    """``leads`` missing (zero), the others as recorded."""

    def __init__(self, leads: Sequence[str]) -> None:
        self.leads = _check_leads(leads, "DropLeads.leads")

    def __call__(self, x, fs, leads, rng):  # noqa: ANN001, ANN204
        out = x.copy()
        out[:, _positions(leads, self.leads, "DropLeads.leads")] = 0
        return out


class RandomLeadsZeroed(Perturbation):
    """``k`` leads drawn at random for each record are zero (a detached electrode or a lost
    channel, wherever it happens)."""

    def __init__(self, k: int = 1) -> None:
        self.k = int(k)
        if self.k < 1:
            raise ConfigValueError(f"RandomLeadsZeroed.k must be >= 1, got {k}")

    def __call__(self, x, fs, leads, rng):  # noqa: ANN001, ANN204
        n, n_leads = x.shape[:2]
        if self.k > n_leads:
            raise ConfigValueError(f"RandomLeadsZeroed.k={self.k} but records have {n_leads} leads")
        # argsort of uniform draws: k distinct leads per record, all records in one call.
        zeroed = np.argsort(rng.random((n, n_leads)), axis=1)[:, : self.k]
        out = x.copy()
        out[np.arange(n)[:, None], zeroed] = 0
        return out


class LimbLeadsFromIAndII(Perturbation):
    """A recorder that stores only I and II: III, aVR, aVL and aVF are rebuilt from them by
    Einthoven's and Goldberger's relations (III = II − I, aVR = −(I + II)/2,
    aVL = I − II/2, aVF = II − I/2). On a true 12-lead recording the rebuilt leads equal the
    recorded ones, so a drop here means the recorded limb leads disagree with the relations
    (noise, lead-specific filtering), not that information is lost."""

    def __call__(self, x, fs, leads, rng):  # noqa: ANN001, ANN204
        i, ii, iii, avr, avl, avf = _positions(leads, LIMB_LEADS, "LimbLeadsFromIAndII")
        out = x.copy()
        lead_i, lead_ii = x[:, i], x[:, ii]
        out[:, iii] = lead_ii - lead_i
        out[:, avr] = -(lead_i + lead_ii) / 2
        out[:, avl] = lead_i - lead_ii / 2
        out[:, avf] = lead_ii - lead_i / 2
        return out


class LimbLeadReversal(Perturbation):
    """Left- and right-arm electrodes swapped (the commonest misplacement): I becomes −I, II and
    III trade places, aVR and aVL trade places, aVF and the chest leads stay (Wilson's central
    terminal averages both arms, so it does not move)."""

    def __call__(self, x, fs, leads, rng):  # noqa: ANN001, ANN204
        i, ii, iii, avr, avl, _ = _positions(leads, LIMB_LEADS, "LimbLeadReversal")
        out = x.copy()
        out[:, i] = -x[:, i]
        out[:, ii], out[:, iii] = x[:, iii], x[:, ii]
        out[:, avr], out[:, avl] = x[:, avl], x[:, avr]
        return out


# -- gain and sampling rate -------------------------------------------------------------------
class Gain(Perturbation):
    """Every lead multiplied by ``factor`` (a miscalibrated amplifier or a wrong ADC gain in
    the header: ×0.5, ×2)."""

    def __init__(self, factor: float) -> None:
        self.factor = float(factor)
        if not np.isfinite(self.factor) or self.factor <= 0:
            raise ConfigValueError(f"Gain.factor must be a positive number, got {factor}")

    def __call__(self, x, fs, leads, rng):  # noqa: ANN001, ANN204
        return (x * self.factor).astype(x.dtype, copy=False)


class RecordedAt(Perturbation):
    """The record as a recorder at ``fs`` Hz would have taken it, resampled back to the
    record's rate: everything above ``fs``/2 is lost to the recorder's anti-aliasing filter
    (scipy's polyphase resampler, both ways). A rate at or above the record's own leaves it
    as it is."""

    def __init__(self, fs: float) -> None:
        self.fs = float(fs)
        if not np.isfinite(self.fs) or self.fs <= 0:
            raise ConfigValueError(f"RecordedAt.fs must be a positive rate in Hz, got {fs}")

    def __call__(self, x, fs, leads, rng):  # noqa: ANN001, ANN204
        if self.fs >= fs:
            # The record holds nothing above its own fs/2 ≤ this recorder's: nothing is lost
            # (resampling up and back would only add the resampler's ripple).
            return x.copy()
        ratio = Fraction(self.fs / fs).limit_denominator(1000)
        down = sps.resample_poly(x, ratio.numerator, ratio.denominator, axis=-1)
        back = sps.resample_poly(down, ratio.denominator, ratio.numerator, axis=-1)
        n = x.shape[-1]
        # A rate ratio that does not divide the length leaves a sample more or less.
        back = (
            back[..., :n]
            if back.shape[-1] >= n
            else np.pad(back, [(0, 0)] * (x.ndim - 1) + [(0, n - back.shape[-1])], mode="edge")
        )
        return back.astype(x.dtype, copy=False)


# -- additive noise at a given SNR ------------------------------------------------------------
def signal_power(x: np.ndarray) -> np.ndarray:
    """Mean square of each record over its leads and samples: shape (records,)."""
    # Squares in the records' own precision, summed in float64.
    return np.square(x).mean(axis=(1, 2), dtype=np.float64)


def snr_db(clean: np.ndarray, noisy: np.ndarray) -> np.ndarray:
    """The SNR of each record of ``noisy`` against ``clean``, in dB, as the perturbations
    define it."""
    noise = noisy.astype(np.float64) - clean
    return 10 * np.log10(signal_power(clean) / signal_power(noise))


def add_at_snr(x: np.ndarray, noise: np.ndarray, snr: float) -> np.ndarray:
    """``x + a·noise`` with ``a`` per record making the SNR exactly ``snr`` dB. A record without
    power (all zero) or a noise without power is left as it is."""
    p_signal, p_noise = signal_power(x), signal_power(noise)
    ok = (p_signal > 0) & (p_noise > 0)
    scale = np.zeros(len(x))
    scale[ok] = np.sqrt(p_signal[ok] / (p_noise[ok] * 10 ** (snr / 10)))
    # In x's own precision: float32 records stay float32 (an SNR exact to float32 rounding).
    return (x + scale.astype(x.dtype)[:, None, None] * noise).astype(x.dtype, copy=False)


class _AdditiveNoise(Perturbation):
    def __init__(self, snr_db: float) -> None:
        self.snr_db = float(snr_db)
        if not np.isfinite(self.snr_db):
            raise ConfigValueError(f"{type(self).__name__}.snr_db must be a number, got {snr_db}")

    def noise(self, shape: tuple[int, ...], fs: float, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, x, fs, leads, rng):  # noqa: ANN001, ANN204
        return add_at_snr(x, self.noise(x.shape, fs, rng), self.snr_db)


class GaussianNoise(_AdditiveNoise):
    """White Gaussian noise, independent per lead (broadband, like muscle artefact)."""

    def noise(self, shape, fs, rng):  # noqa: ANN001, ANN201
        # float32: the cost is the draw, and add_at_snr scales it to the SNR exactly anyway.
        return rng.standard_normal(shape, dtype=np.float32)


class BaselineWander(_AdditiveNoise):
    """Slow drift of the baseline (breathing, electrode impedance): a sum of sinusoids between
    ``low`` and ``high`` Hz with random frequencies, phases and per-lead amplitudes."""

    def __init__(self, snr_db: float, low: float = 0.1, high: float = 0.5, components: int = 3):
        super().__init__(snr_db)
        self.low, self.high, self.components = float(low), float(high), int(components)
        if not 0 < self.low <= self.high:
            raise ConfigValueError(f"BaselineWander: need 0 < low <= high, got {low}, {high}")

    def noise(self, shape, fs, rng):  # noqa: ANN001, ANN201
        n, n_leads, length = shape
        t = np.arange(length) / fs
        out = np.zeros(shape, dtype=np.float32)
        for _ in range(self.components):
            freq = rng.uniform(self.low, self.high, size=(n, 1, 1))
            phase = rng.uniform(0, 2 * np.pi, size=(n, 1, 1))  # one breath for all leads
            amplitude = rng.uniform(0.5, 1.5, size=(n, n_leads, 1)).astype(np.float32)
            out += amplitude * np.sin(2 * np.pi * freq * t + phase).astype(np.float32)
        return out


class PowerlineHum(_AdditiveNoise):
    """Mains interference at ``freq`` Hz (50 or 60) and its third harmonic at a third of the
    amplitude, with a per-lead amplitude and phase. Where ``freq`` is at or above the record's
    Nyquist rate it is sampled as it is (aliased, as an unfiltered recorder would), with a
    warning."""

    def __init__(self, snr_db: float, freq: float = 50.0) -> None:
        super().__init__(snr_db)
        self.freq = float(freq)
        if self.freq <= 0:
            raise ConfigValueError(f"PowerlineHum.freq must be positive, got {freq}")

    def noise(self, shape, fs, rng):  # noqa: ANN001, ANN201
        n, n_leads, length = shape
        if self.freq >= fs / 2:
            log.warning("PowerlineHum: %g Hz at fs=%g Hz is at or above Nyquist: aliased",
                        self.freq, fs)  # fmt: skip
        t = np.arange(length) / fs
        out = np.zeros(shape, dtype=np.float32)
        for harmonic, weight in ((1, 1.0), (3, 1 / 3)):
            amplitude = weight * rng.uniform(0.5, 1.5, size=(n, n_leads, 1))
            phase = rng.uniform(0, 2 * np.pi, size=(n, n_leads, 1))
            # sin(ωt + φ) = sin ωt·cos φ + cos ωt·sin φ: two sines of the time axis instead of
            # one per sample of every lead and record (the costliest part of a hum row).
            wt = 2 * np.pi * harmonic * self.freq * t
            a_sin = (amplitude * np.cos(phase)).astype(np.float32)
            a_cos = (amplitude * np.sin(phase)).astype(np.float32)
            out += a_sin * np.sin(wt).astype(np.float32)
            out += a_cos * np.cos(wt).astype(np.float32)
        return out


class ElectrodeMotion(_AdditiveNoise):
    """Electrode-motion-like bursts: low-frequency (below ``cutoff`` Hz), large transients that
    come and go (``rate`` bursts per 10 s of ``duration`` s each, Tukey-windowed), at the same
    moments on every lead (a movement of the patient), with independent shapes per lead and
    per burst (overlapping bursts add)."""

    def __init__(
        self, snr_db: float, rate: float = 2.0, duration: float = 1.0, cutoff: float = 10.0
    ) -> None:
        super().__init__(snr_db)
        self.rate, self.duration, self.cutoff = float(rate), float(duration), float(cutoff)
        if self.rate <= 0 or self.duration <= 0 or self.cutoff <= 0:
            raise ConfigValueError(
                f"ElectrodeMotion: rate, duration and cutoff must be positive, got "
                f"{rate}, {duration}, {cutoff}"
            )

    def noise(self, shape, fs, rng):  # noqa: ANN001, ANN201
        n, n_leads, length = shape
        cutoff = min(self.cutoff, 0.45 * fs)
        width = max(2, min(length, int(round(self.duration * fs))))
        bursts = max(1, int(round(self.rate * length / fs / 10)))
        # Noise is drawn and filtered for the bursts only (a fifth of the record at the
        # defaults), not for the whole record that a window would mostly zero. Its phase is
        # random anyway, so one causal pass of a 4th-order low-pass shapes it as well as a
        # zero-phase 2nd-order pair; the filter's start-up (three time constants of the
        # cutoff) is drawn and dropped.
        warmup = int(np.ceil(3 * fs / cutoff))
        raw = rng.standard_normal((n, bursts, n_leads, width + warmup), dtype=np.float32)
        sos = sps.butter(4, cutoff, btype="low", fs=fs, output="sos").astype(np.float32)
        window = sps.windows.tukey(width, alpha=0.5).astype(np.float32)
        shaped = sps.sosfilt(sos, raw, axis=-1)[..., warmup:] * window
        starts = rng.integers(0, length - width + 1, size=(n, bursts))
        out = np.zeros(shape, dtype=np.float32)
        records, leads = np.arange(n)[:, None, None], np.arange(n_leads)[None, :, None]
        for k in range(bursts):  # one window per record each: no repeated index in the add
            where = (starts[:, k, None] + np.arange(width))[:, None, :]
            out[records, leads, where] += shaped[:, k]
        return out
