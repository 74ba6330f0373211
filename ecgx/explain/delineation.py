"""Simple multi-lead ECG delineation: R peaks, P/QRS/T boundaries and per-sample segment masks.

Used for segment-level ("glocal") attribution (XAI4ECG, spec 3.4: attribution aggregated per
waveform segment and lead) and for signal-property concepts such as "QRS duration > 120 ms".
It is deliberately small and dependency-free (numpy/scipy only), not a clinical-grade
delineator: boundaries come from fixed physiological windows around each R peak and simple
threshold rules, all stated next to the constants below. Users who have a better delineation
(ECGDeli, NeuroKit, hand labels) can pass it as soft masks instead (`ecgx.explain.segments`).

Conventions: a record is an array (leads, samples) in mV (a 1-D array is one lead); indices are
sample positions; a wave that was not found has index -1.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import uniform_filter1d
from scipy.signal import butter, find_peaks, sosfiltfilt

SEGMENTS: tuple[str, ...] = ("P", "PR", "QRS", "ST", "T", "TP")
"""Segment names, in the order of the rows of `Delineation.mask`."""

# --- R-peak detection (Pan & Tompkins, IEEE TBME 1985, adapted to several leads) -------------
# 5-15 Hz keeps most QRS energy and rejects baseline wander, P/T waves and mains/EMG noise
# (Pan & Tompkins used the same pass band).
QRS_BAND_HZ = (5.0, 15.0)
# Moving-window integration about as wide as a normal QRS (Pan & Tompkins: 150 ms).
INTEGRATION_S = 0.150
# Physiological refractory period: no two beats closer than 250 ms (max ~240 bpm).
REFRACTORY_S = 0.250
# A peak is a beat when its envelope reaches this fraction of the typical beat's envelope.
THRESHOLD_FRACTION = 0.3
# Pan & Tompkins' T-wave rule: a peak within 360 ms of a beat with less than half its energy
# is the T wave of that beat, not a new beat.
T_WAVE_CHECK_S = 0.360
T_WAVE_ENERGY_RATIO = 0.5
# Search-back (Pan & Tompkins): an RR gap longer than 1.66 x the median RR hides a missed beat;
# look in it again with half the threshold.
SEARCHBACK_RR_FACTOR = 1.66
SEARCHBACK_THRESHOLD_FACTOR = 0.5
# The integrated envelope peaks somewhere inside the QRS; the R peak is the largest deflection
# within +/- 50 ms of it.
REFINE_S = 0.050

# --- Delineation --------------------------------------------------------------------------
# Signal for QRS boundaries: wide band keeps the QRS shape (diagnostic ECG bandwidth is
# 0.05-150 Hz; 40 Hz suffices for slopes and stays below Nyquist at 100 Hz sampling).
WIDE_BAND_HZ = (0.5, 40.0)
# Signal for P and T waves: their energy lies below ~15 Hz.
SLOW_BAND_HZ = (0.5, 15.0)
# The QRS slope reference is the largest spatial velocity within R-80 ms..R+100 ms (covers a
# normal QRS around its R peak; cf. Martinez et al., IEEE TBME 2004, who search QRS onset and
# offset in windows of this size around the fiducial point).
QRS_SEARCH_S = (0.080, 0.100)
# QRS onset/offset: where the spatial velocity (norm over leads of the time derivative) stays
# below this fraction of its QRS peak. For a Gaussian wave the derivative falls to 15 % of its
# maximum at +/-2.6 sigma, i.e. the threshold marks where the wave has essentially ended
# (spatial-velocity methods, e.g. Xue & Reddy / the "VCG velocity" QRS detectors, use 10-20 %).
QRS_SLOPE_FRACTION = 0.10
# Dips of the velocity shorter than this (the R apex, Q/S turning points) stay inside the QRS.
QRS_MAX_GAP_S = 0.040
# The walk stops at R-150 ms / R+200 ms whatever the slope: wider QRS (> 350 ms) do not occur.
QRS_LIMIT_S = (0.150, 0.200)
# P wave: searched within the 300 ms before QRS onset (PR interval 120-200 ms plus P duration
# up to 120 ms), shortened to 45 % of the preceding RR at high rates, and never before the
# previous T end.
P_SEARCH_S = 0.300
P_SEARCH_RR = 0.45
# T wave: peak searched between QRS offset + 60 ms (the ST segment) and R + 0.6 x RR (the QT
# interval is < 0.6 RR over the physiological range, Bazett); its end may run to R + 0.7 x RR.
T_SEARCH_START_S = 0.060
T_SEARCH_RR = 0.6
T_END_RR = 0.7
# P and T boundaries: where the spatial amplitude (distance of the multi-lead vector from the
# isoelectric level at the PQ junction, the conventional ECG baseline) falls below this fraction
# of its peak. For a Gaussian wave that is +/-1.95 sigma (95 % of its area).
WAVE_AMPLITUDE_FRACTION = 0.15
# Spatial amplitude below this (mV) is not a wave (normal P waves are 0.05-0.25 mV in a single
# lead; the norm over 12 leads is larger).
MIN_WAVE_AMPLITUDE_MV = 0.03
# The isoelectric reference is the mean over 20 ms ending 10 ms before QRS onset: close to the
# PQ junction, but clear of the QRS, which the 15 Hz low-pass smears a little ahead of its onset.
ISOELECTRIC_S = (0.030, 0.010)
# RR assumed for a record with a single beat.
DEFAULT_RR_S = 1.0


@dataclass(frozen=True)
class Delineation:
    """Per-beat fiducial points of one record (sample indices; -1 where a wave was not found).

    Onsets and offsets are inclusive: the QRS of beat i spans samples
    ``qrs_on[i] .. qrs_off[i]``.
    """

    fs: float
    r_peaks: np.ndarray
    qrs_on: np.ndarray
    qrs_off: np.ndarray
    p_on: np.ndarray
    p_peak: np.ndarray
    p_off: np.ndarray
    t_on: np.ndarray
    t_peak: np.ndarray
    t_off: np.ndarray
    n_samples: int = field(default=0)

    @property
    def n_beats(self) -> int:
        return int(self.r_peaks.size)

    def labels(self, n_samples: int | None = None) -> np.ndarray:
        """Segment index (into `SEGMENTS`) of every sample, shape (n_samples,).

        Samples outside every delineated wave -- before the first beat's P wave, after the
        last T wave, and wherever a P or T wave was not found -- are labelled "TP", the
        catch-all for "between beats". Beats are painted in time order, so where a fast
        rhythm makes one beat's P overlap the previous T, the later beat wins.
        """
        n = self.n_samples if n_samples is None else int(n_samples)
        if n < 0:
            raise ValueError(f"n_samples must be >= 0, got {n}")
        idx = {name: i for i, name in enumerate(SEGMENTS)}
        out = np.full(n, idx["TP"], dtype=np.int64)

        def paint(start: int, stop: int, name: str) -> None:
            # Inclusive start..stop, clipped to the record.
            lo, hi = max(start, 0), min(stop, n - 1)
            if hi >= lo:
                out[lo : hi + 1] = idx[name]

        for i in range(self.n_beats):
            q_on, q_off = int(self.qrs_on[i]), int(self.qrs_off[i])
            if self.p_on[i] >= 0:
                paint(int(self.p_on[i]), int(self.p_off[i]), "P")
                paint(int(self.p_off[i]) + 1, q_on - 1, "PR")
            paint(q_on, q_off, "QRS")
            if self.t_on[i] >= 0:
                paint(q_off + 1, int(self.t_on[i]) - 1, "ST")
                paint(int(self.t_on[i]), int(self.t_off[i]), "T")
        return out

    def mask(self, n_samples: int | None = None) -> np.ndarray:
        """One-hot segment mask, shape (len(SEGMENTS), n_samples), rows in `SEGMENTS` order.

        Every sample belongs to exactly one segment (see `labels` for the rules).
        """
        labels = self.labels(n_samples)
        onehot = np.zeros((len(SEGMENTS), labels.size), dtype=np.float64)
        onehot[labels, np.arange(labels.size)] = 1.0
        return onehot


# --- helpers ------------------------------------------------------------------------------


def _as_leads(signal: np.ndarray) -> np.ndarray:
    x = np.asarray(signal, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise ValueError(f"signal must be (leads, samples) or (samples,), got shape {x.shape}")
    # A dropped-out sample should not stop the whole record from being delineated.
    return np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)


def _check_fs(fs: float) -> float:
    fs = float(fs)
    if not np.isfinite(fs) or fs <= 0:
        raise ValueError(f"fs must be a positive sampling rate in Hz, got {fs}")
    return fs


def _bandpass(x: np.ndarray, fs: float, band: tuple[float, float]) -> np.ndarray:
    sos = _band_sos(fs, band[0], band[1])
    padlen = min(3 * (2 * len(sos) + 1), x.shape[-1] - 1)
    return sosfiltfilt(sos, x, axis=-1, padlen=padlen)


@functools.lru_cache(maxsize=32)
def _band_sos(fs: float, low: float, high: float) -> np.ndarray:
    """The Butterworth design, kept (scipy only reads it): designing it took 40 % of a 100 Hz
    record's delineation."""
    # Keep the upper edge below Nyquist so the same band works at 100 Hz sampling.
    return butter(2, [low, min(high, 0.45 * fs)], btype="bandpass", fs=fs, output="sos")


def _samples(seconds: float, fs: float) -> int:
    return max(1, int(round(seconds * fs)))


# --- R peaks ------------------------------------------------------------------------------


def detect_r_peaks(signal: np.ndarray, fs: float) -> np.ndarray:
    """Sample indices of the R peaks of a record (leads, samples) in mV, sorted.

    Pan-Tompkins-like on all leads at once: 5-15 Hz band-pass, squared derivative summed over
    leads (so inverted leads add up instead of cancelling), 150 ms moving-window integration,
    peaks at least 250 ms apart above 30 % of the typical beat's envelope, Pan-Tompkins' T-wave
    and search-back rules, then each peak moved to the largest band-passed deflection (summed
    squares over leads) within +/- 50 ms.
    """
    fs = _check_fs(fs)
    x = _as_leads(signal)
    n = x.shape[1]
    empty = np.zeros(0, dtype=np.int64)
    if n < _samples(0.5, fs):
        return empty

    bp = _bandpass(x, fs, QRS_BAND_HZ)
    energy = (np.gradient(bp, axis=-1) ** 2).sum(axis=0)
    # Centred window, so the envelope peak sits inside the QRS rather than after it.
    env = uniform_filter1d(energy, _samples(INTEGRATION_S, fs), mode="nearest")
    refractory = _samples(REFRACTORY_S, fs)
    candidates, _ = find_peaks(env, distance=refractory)
    if candidates.size == 0:
        return empty
    heights = env[candidates]
    # Adaptive level: at any heart rate >= 30 bpm, the tallest duration/2 s candidates are
    # beats, so their median is a typical beat's height whatever the noise and T waves do.
    n_sure = max(1, int(n / fs / 2.0))
    reference = float(np.median(np.sort(heights)[::-1][:n_sure]))
    if reference <= 0:
        return empty
    threshold = THRESHOLD_FRACTION * reference

    t_check = _samples(T_WAVE_CHECK_S, fs)
    beats: list[int] = []
    for c in candidates[heights >= threshold]:
        if beats and c - beats[-1] < t_check and env[c] < T_WAVE_ENERGY_RATIO * env[beats[-1]]:
            continue
        beats.append(int(c))

    # Search-back for beats missed in long gaps (e.g. a low-amplitude beat).
    low = SEARCHBACK_THRESHOLD_FACTOR * threshold
    added = True
    while added and len(beats) >= 2:
        added = False
        rr = np.diff(beats)
        limit = SEARCHBACK_RR_FACTOR * np.median(rr)
        for a, b in zip(beats[:-1], beats[1:]):
            if b - a <= limit:
                continue
            inside = candidates[(candidates >= a + t_check) & (candidates <= b - t_check)]
            inside = inside[env[inside] >= low]
            if inside.size:
                beats.append(int(inside[np.argmax(env[inside])]))
                added = True
        beats.sort()

    # Refine on the band-passed deflection, sign-free so inverted leads count.
    score = (bp**2).sum(axis=0)
    half = _samples(REFINE_S, fs)
    refined: list[int] = []
    for b in beats:
        lo, hi = max(0, b - half), min(n, b + half + 1)
        r = lo + int(np.argmax(score[lo:hi]))
        # Two envelope peaks can refine onto one QRS: keep the stronger.
        if refined and r - refined[-1] < refractory:
            if score[r] > score[refined[-1]]:
                refined[-1] = r
            continue
        refined.append(r)
    return np.asarray(refined, dtype=np.int64)


# --- delineation --------------------------------------------------------------------------


def _walk(
    curve: np.ndarray, start: int, step: int, threshold: float, max_gap: int, bound: int
) -> int:
    """Last sample above `threshold` walking from `start` by `step` (+1/-1) before a run of
    `max_gap` samples below it or reaching `bound` (inclusive); `start` if none is above."""
    last = start
    gap = 0
    i = start
    while (i - bound) * step <= 0:
        if curve[i] > threshold:
            last, gap = i, 0
        else:
            gap += 1
            if gap >= max_gap:
                break
        i += step
    return last


def _wave(amp: np.ndarray, lo: int, hi: int, on_bound: int, off_bound: int) -> tuple[int, int, int]:
    """(onset, peak, offset) of the wave with the largest spatial amplitude in lo..hi, or -1s.

    The peak must be a true local maximum (not at the window's edge, where the amplitude is
    still rising from a neighbouring wave) and reach `MIN_WAVE_AMPLITUDE_MV`.
    """
    missing = (-1, -1, -1)
    if hi - lo < 2:
        return missing
    peak = lo + int(np.argmax(amp[lo : hi + 1]))
    height = amp[peak]
    if peak in (lo, hi) or height < MIN_WAVE_AMPLITUDE_MV:
        return missing
    level = WAVE_AMPLITUDE_FRACTION * height
    on = peak
    while on > on_bound and amp[on - 1] > level:
        on -= 1
    off = peak
    while off < off_bound and amp[off + 1] > level:
        off += 1
    return on, peak, off


def delineate(signal: np.ndarray, fs: float, r_peaks: np.ndarray | None = None) -> Delineation:
    """Delineate P, QRS and T of every beat of a record (leads, samples) in mV.

    `r_peaks` defaults to `detect_r_peaks(signal, fs)`. The rules (constants above):

    * QRS: spatial velocity v(t) = ||d/dt x(t)|| over leads of the 0.5-40 Hz signal; the
      onset/offset are the outermost samples, walking out from R, where v exceeds 15 % of its
      peak in R-80..R+100 ms, bridging dips shorter than 40 ms and bounded to R-150..R+200 ms.
    * P: spatial amplitude a(t) = ||x(t) - x_iso(t)|| of the 0.5-15 Hz signal, x_iso the
      isoelectric line through the PQ junctions (mean over QRS onset - 30..-10 ms),
      linearly interpolated between beats. Peak = max of a in the 300 ms (<= 0.45 RR) before
      QRS onset, after the previous T end; onset/offset where a falls below 15 % of the peak.
    * T: same amplitude, peak searched in QRS offset + 60 ms .. R + 0.6 RR (RR to the next
      beat, else the previous one); offset where a falls below 15 % of the peak, at the latest
      R + 0.7 RR; onset likewise, not before QRS offset.

    A P or T wave whose peak is at the edge of its window or below 0.03 mV is reported missing
    (-1), e.g. the P in atrial fibrillation. Beats whose QRS is cut by the record's edge keep
    the clipped boundaries.
    """
    fs = _check_fs(fs)
    x = _as_leads(signal)
    n = x.shape[1]
    if r_peaks is None:
        r = detect_r_peaks(x, fs)
    else:
        r = np.unique(np.asarray(r_peaks, dtype=np.int64).ravel())
        if r.size and (r[0] < 0 or r[-1] >= n):
            raise ValueError(f"r_peaks must lie in 0..{n - 1}, got {r[0]}..{r[-1]}")
    nb = r.size
    cols = {
        k: np.full(nb, -1, dtype=np.int64)
        for k in ("qrs_on", "qrs_off", "p_on", "p_peak", "p_off", "t_on", "t_peak", "t_off")
    }
    if nb == 0 or n < 2:
        return Delineation(fs=fs, r_peaks=r, n_samples=n, **cols)

    wide = _bandpass(x, fs, WIDE_BAND_HZ)
    velocity = np.sqrt((np.gradient(wide, axis=-1) ** 2).sum(axis=0)) * fs
    slow = _bandpass(x, fs, SLOW_BAND_HZ)
    iso_from, iso_to = (_samples(v, fs) for v in ISOELECTRIC_S)
    max_gap = _samples(QRS_MAX_GAP_S, fs)
    default_rr = _samples(DEFAULT_RR_S, fs)

    # Pass 1: QRS boundaries of every beat.
    for i, ri in enumerate(r.tolist()):
        w_lo = max(0, ri - _samples(QRS_SEARCH_S[0], fs))
        w_hi = min(n - 1, ri + _samples(QRS_SEARCH_S[1], fs))
        slope_level = QRS_SLOPE_FRACTION * float(velocity[w_lo : w_hi + 1].max())
        left_bound = max(0, ri - _samples(QRS_LIMIT_S[0], fs))
        right_bound = min(n - 1, ri + _samples(QRS_LIMIT_S[1], fs))
        # Never reach into a neighbouring beat.
        if i > 0:
            left_bound = max(left_bound, ri - (ri - int(r[i - 1])) // 2)
        if i + 1 < nb:
            right_bound = min(right_bound, ri + (int(r[i + 1]) - ri) // 2)
        cols["qrs_on"][i] = _walk(velocity, ri, -1, slope_level, max_gap, left_bound)
        cols["qrs_off"][i] = _walk(velocity, ri, +1, slope_level, max_gap, right_bound)

    # Isoelectric line: the PQ-junction level of each beat, linearly interpolated between beats
    # (knot-based baseline removal, Meyer & Keiser, Comput Biomed Res 1977). It takes out the
    # baseline wander the 0.5 Hz high-pass leaves, which would otherwise stretch P and T waves.
    knots = cols["qrs_on"]
    levels = np.stack(
        [
            slow[:, max(0, q - iso_from) : max(1, q - iso_to + 1)].mean(axis=1)
            for q in knots.tolist()
        ],
        axis=1,
    )
    grid = np.arange(n)
    baseline = np.stack([np.interp(grid, knots, lv) for lv in levels])
    amp = np.sqrt(((slow - baseline) ** 2).sum(axis=0))

    # Pass 2: P and T waves.
    prev_t_off = -1
    for i, ri in enumerate(r.tolist()):
        rr_prev = ri - int(r[i - 1]) if i > 0 else None
        rr_next = int(r[i + 1]) - ri if i + 1 < nb else None
        rr_before = rr_prev or rr_next or default_rr
        rr_after = rr_next or rr_prev or default_rr
        q_on, q_off = int(cols["qrs_on"][i]), int(cols["qrs_off"][i])

        p_lo = max(0, q_on - min(_samples(P_SEARCH_S, fs), int(P_SEARCH_RR * rr_before)))
        p_lo = max(p_lo, prev_t_off + 1)
        p_hi = q_on - 1
        on, pk, off = _wave(amp, p_lo, p_hi, p_lo, p_hi)
        if pk >= 0:
            cols["p_on"][i], cols["p_peak"][i], cols["p_off"][i] = on, pk, off

        t_lo = q_off + 1
        t_hi = min(n - 1, ri + int(T_SEARCH_RR * rr_after))
        t_end = min(n - 1, ri + int(T_END_RR * rr_after))
        on, pk, off = _wave(amp, q_off + _samples(T_SEARCH_START_S, fs), t_hi, t_lo, t_end)
        if pk >= 0:
            cols["t_on"][i], cols["t_peak"][i], cols["t_off"][i] = on, pk, off
            prev_t_off = off

    return Delineation(fs=fs, r_peaks=r, n_samples=n, **cols)


# --- summary measures ---------------------------------------------------------------------


def qrs_duration_ms(delineation: Delineation) -> float:
    """Median QRS duration over beats in ms (offset - onset); NaN without beats."""
    if delineation.n_beats == 0:
        return float("nan")
    dur = (delineation.qrs_off - delineation.qrs_on) / delineation.fs * 1000.0
    return float(np.median(dur))


def heart_rate_bpm(r_peaks: np.ndarray, fs: float) -> float:
    """Heart rate from the median RR interval, in beats per minute; NaN with < 2 peaks.

    The median makes one missed or extra beat barely move the rate.
    """
    fs = _check_fs(fs)
    r = np.sort(np.asarray(r_peaks, dtype=np.float64).ravel())
    if r.size < 2:
        return float("nan")
    return float(60.0 * fs / np.median(np.diff(r)))
