"""Delineation against a synthetic ECG with known wave times, and R peaks on real PTB-XL records."""

from __future__ import annotations

import ast
from dataclasses import dataclass

import numpy as np
import pytest

from ecgx.explain.delineation import (
    SEGMENTS,
    delineate,
    detect_r_peaks,
    heart_rate_bpm,
    qrs_duration_ms,
)
from tests.conftest import PTBXL_SAMPLES, needs_samples

QRS_SIGMA = 0.020  # s; the QRS spans +/-2.5 sigma = 100 ms
P_OFFSET, P_SIGMA = -0.160, 0.020
T_OFFSET, T_SIGMA = 0.300, 0.040


@dataclass
class Synthetic:
    x: np.ndarray  # (12, samples) mV
    fs: float
    r: np.ndarray  # true R times, s

    def idx(self, times: np.ndarray) -> np.ndarray:
        return np.round(times * self.fs).astype(int)


def synthetic_ecg(fs: float, seed: int = 0, hr: float = 72.0, duration: float = 10.0) -> Synthetic:
    """Gaussian P, QRS and T waves at known times on 12 leads with different gains (some leads
    inverted), plus baseline wander and white noise."""
    rng = np.random.default_rng(seed)
    n = int(duration * fs)
    t = np.arange(n) / fs
    r_times = []
    cur = 0.45
    while cur < duration - 0.5:
        r_times.append(cur)
        cur += 60.0 / hr * (1 + rng.uniform(-0.05, 0.05))
    r = np.asarray(r_times)

    def train(offset: float, sigma: float) -> np.ndarray:
        return np.exp(-0.5 * ((t[None, :] - r[:, None] - offset) / sigma) ** 2).sum(axis=0)

    def gains(low: float, high: float, inverted: list[int]) -> np.ndarray:
        sign = np.where(np.isin(np.arange(12), inverted), -1.0, 1.0)
        return (rng.uniform(low, high, 12) * sign)[:, None]

    x = (
        gains(0.4, 1.5, [3, 6, 9]) * train(0.0, QRS_SIGMA)
        + gains(0.5, 1.5, [3]) * 0.15 * train(P_OFFSET, P_SIGMA)
        + gains(0.5, 1.5, [3, 6]) * 0.3 * train(T_OFFSET, T_SIGMA)
    )
    wander = 0.3 * np.sin(2 * np.pi * 0.25 * t + rng.uniform(0, 6)) + 0.1 * np.sin(
        2 * np.pi * 0.6 * t
    )
    x += rng.uniform(0.5, 1.5, (12, 1)) * wander + 0.02 * rng.standard_normal((12, n))
    return Synthetic(x=x, fs=fs, r=r)


CASES = [(fs, seed) for fs in (500.0, 100.0) for seed in (0, 1, 2)]


@pytest.fixture(scope="module", params=CASES, ids=[f"{int(f)}Hz-seed{s}" for f, s in CASES])
def case(request: pytest.FixtureRequest) -> tuple[Synthetic, np.ndarray, object]:
    fs, seed = request.param
    syn = synthetic_ecg(fs, seed)
    r = detect_r_peaks(syn.x, fs)
    return syn, r, delineate(syn.x, fs, r)


def test_r_peaks_find_every_beat_and_no_extra(case) -> None:
    syn, r, _ = case
    assert r.size == syn.r.size
    assert np.abs(r / syn.fs - syn.r).max() <= 0.020


def test_qrs_boundaries_match_the_generating_gaussian(case) -> None:
    syn, _, d = case
    assert np.abs(d.qrs_on / syn.fs - (syn.r - 2.5 * QRS_SIGMA)).max() <= 0.030
    assert np.abs(d.qrs_off / syn.fs - (syn.r + 2.5 * QRS_SIGMA)).max() <= 0.030
    assert qrs_duration_ms(d) == pytest.approx(5 * QRS_SIGMA * 1000, abs=20)


def test_p_and_t_peaks_lie_in_their_segments(case) -> None:
    syn, _, d = case
    p, t = syn.idx(syn.r + P_OFFSET), syn.idx(syn.r + T_OFFSET)
    assert ((d.p_on <= p) & (p <= d.p_off)).all()
    assert ((d.t_on <= t) & (t <= d.t_off)).all()
    assert np.abs(d.p_peak - p).max() <= 0.020 * syn.fs
    assert np.abs(d.t_peak - t).max() <= 0.020 * syn.fs
    # The true wave centres carry the right labels in the mask.
    labels = d.labels(syn.x.shape[1])
    assert (labels[p] == SEGMENTS.index("P")).all()
    assert (labels[t] == SEGMENTS.index("T")).all()
    assert (labels[syn.idx(syn.r)] == SEGMENTS.index("QRS")).all()
    # Mid ST segment (between QRS end and T start) and mid PR.
    assert (labels[syn.idx(syn.r + 0.085)] == SEGMENTS.index("ST")).all()
    assert (labels[syn.idx(syn.r - 0.080)] == SEGMENTS.index("PR")).all()


def test_mask_is_one_hot_over_every_sample(case) -> None:
    syn, _, d = case
    n = syn.x.shape[1]
    m = d.mask(n)
    assert m.shape == (len(SEGMENTS), n)
    assert set(np.unique(m)) <= {0.0, 1.0}
    np.testing.assert_array_equal(m.sum(axis=0), np.ones(n))
    # Every segment occurs, and the record's first sample (before any P) is "TP".
    assert (m.sum(axis=1) > 0).all()
    assert m[SEGMENTS.index("TP"), 0] == 1.0


def test_heart_rate_matches_truth(case) -> None:
    syn, r, _ = case
    truth = 60.0 / np.median(np.diff(syn.r))
    assert heart_rate_bpm(r, syn.fs) == pytest.approx(truth, abs=2.0)


def test_inverting_all_leads_changes_nothing() -> None:
    syn = synthetic_ecg(500.0, seed=3)
    np.testing.assert_array_equal(detect_r_peaks(syn.x, 500), detect_r_peaks(-syn.x, 500))


def test_fast_rate_finds_every_beat() -> None:
    syn = synthetic_ecg(500.0, seed=4, hr=140.0)
    r = detect_r_peaks(syn.x, 500)
    assert r.size == syn.r.size
    assert np.abs(r / 500 - syn.r).max() <= 0.020


def test_flat_or_short_signals_have_no_beats() -> None:
    assert detect_r_peaks(np.zeros((12, 5000)), 500).size == 0
    assert detect_r_peaks(np.zeros((12, 10)), 500).size == 0
    d = delineate(np.zeros((12, 5000)), 500)
    assert d.n_beats == 0
    assert np.isnan(qrs_duration_ms(d))
    assert np.isnan(heart_rate_bpm(d.r_peaks, 500))
    np.testing.assert_array_equal(d.mask()[SEGMENTS.index("TP")], np.ones(5000))


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="fs"):
        detect_r_peaks(np.zeros((12, 1000)), 0)
    with pytest.raises(ValueError, match="shape"):
        detect_r_peaks(np.zeros((2, 12, 1000)), 500)
    with pytest.raises(ValueError, match="r_peaks"):
        delineate(np.zeros((12, 1000)), 500, r_peaks=np.array([5, 1000]))


# --- real records -------------------------------------------------------------------------

# Beats with their R peak between 0.5 s and 9.5 s (edge beats are cut and ambiguous), counted by
# hand on plots of lead II of the 100 Hz records, and matching the R peaks XAI4ECG ships for
# PTB-XL (hhi-aml/xai4ecg, addons/r-peaks.csv) in that span.
HAND_COUNTS = {1: 9, 2: 7, 17: 22}
REAL_IDS = range(1, 41)
ECTOPY = {"PVC", "PAC", "BIGU", "TRIGU", "SARRH", "SVARR", "AFIB", "AFLT"}


def _read(ecg_id: int, fs: int) -> np.ndarray:
    import wfdb

    suffix = "lr" if fs == 100 else "hr"
    folder = "records100" if fs == 100 else "records500"
    signal, _ = wfdb.rdsamp(str(PTBXL_SAMPLES / folder / "00000" / f"{ecg_id:05d}_{suffix}"))
    return signal.T


@pytest.fixture(scope="module")
def ptbxl_codes() -> dict[int, set[str]]:
    import pandas as pd

    db = pd.read_csv(PTBXL_SAMPLES / "ptbxl_database.csv", index_col="ecg_id")
    return {int(i): set(ast.literal_eval(s)) for i, s in db["scp_codes"].items()}


@needs_samples(PTBXL_SAMPLES)
@pytest.mark.parametrize("ecg_id", sorted(HAND_COUNTS))
@pytest.mark.parametrize("fs", [100, 500])
def test_real_beat_counts_match_hand_counts(ecg_id: int, fs: int) -> None:
    r = detect_r_peaks(_read(ecg_id, fs), fs) / fs
    assert abs(int(((r >= 0.5) & (r <= 9.5)).sum()) - HAND_COUNTS[ecg_id]) <= 1


@needs_samples(PTBXL_SAMPLES)
def test_real_records_have_plausible_rate_and_regular_sinus_rhythm(ptbxl_codes) -> None:
    for ecg_id in REAL_IDS:
        r100 = detect_r_peaks(_read(ecg_id, 100), 100) / 100
        r500 = detect_r_peaks(_read(ecg_id, 500), 500) / 500
        for r in (r100, r500):
            assert 30 <= heart_rate_bpm(r, 1.0) <= 200, ecg_id
        # The two sampling rates of one recording agree beat for beat (edge beats aside).
        inner = r500[(r500 > 0.5) & (r500 < 9.5)]
        gaps = np.abs(inner[:, None] - r100[None, :]).min(axis=1)
        assert gaps.max() <= 0.040, ecg_id
        assert abs(r100.size - r500.size) <= 1, ecg_id
        codes = ptbxl_codes[ecg_id]
        if "SR" in codes and not codes & ECTOPY:
            rr = np.diff(r500)
            assert rr.std() / rr.mean() < 0.15, ecg_id
