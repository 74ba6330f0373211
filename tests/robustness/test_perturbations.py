"""The perturbations of the robustness matrix, each against what it claims to do."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ecgx.errors import ConfigValueError
from ecgx.formats.record import LEADS
from ecgx.robustness import perturbations as P


@pytest.fixture(scope="module")
def synthetic_batch(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, float]:
    """Eight records of ecgx's synthetic generator read back through the PTB-XL reader."""
    from ecgx.datasets.ptbxl import PTBXL
    from ecgx.datasets.synthetic import generate_ptbxl_like

    root = generate_ptbxl_like(tmp_path_factory.mktemp("robust") / "syn", n_records=8, seed=3,
                               sampling_rates=[100])  # fmt: skip
    reader = PTBXL(root=root, sampling_rate=100)
    records = [reader.read(row) for row in reader.metadata().to_dict("records")]
    assert all(r.leads == LEADS for r in records)
    return np.stack([r.signal for r in records]), records[0].fs


def test_limb_leads_rebuilt_from_i_and_ii_equal_the_recorded_ones(synthetic_batch) -> None:
    x, fs = synthetic_batch
    rebuilt = P.LimbLeadsFromIAndII()(x, fs, LEADS, np.random.default_rng(0))
    # WFDB stores each lead rounded to its ADC step (1 µV here) on its own, so the recorded
    # leads obey Einthoven/Goldberger to 1.5 steps (aVL = I - II/2 adds half a step), no better.
    step = 0.001
    np.testing.assert_allclose(rebuilt, x, rtol=0, atol=1.5 * step + 1e-6)
    assert np.abs(x[:, 2:6]).max() > 100 * step  # the limb leads carry signal, not zeros
    np.testing.assert_array_equal(rebuilt[:, [0, 1, *range(6, 12)]], x[:, [0, 1, *range(6, 12)]])
    # Exactly, in float arithmetic, where the limb leads were made by the relations.
    exact = x.astype(np.float64).copy()
    exact[:, 2:6] = 0
    exact = P.LimbLeadsFromIAndII()(exact, fs, LEADS, np.random.default_rng(0))
    i, ii = exact[:, 0], exact[:, 1]
    np.testing.assert_allclose(exact[:, 2], ii - i, atol=1e-12)
    np.testing.assert_allclose(exact[:, 3], -(i + ii) / 2, atol=1e-12)
    np.testing.assert_allclose(exact[:, 4], i - ii / 2, atol=1e-12)
    np.testing.assert_allclose(exact[:, 5], ii - i / 2, atol=1e-12)


@pytest.mark.parametrize("make", [P.GaussianNoise, P.BaselineWander, P.ElectrodeMotion,
                                  lambda snr: P.PowerlineHum(snr, freq=50),
                                  lambda snr: P.PowerlineHum(snr, freq=60)])  # fmt: skip
@pytest.mark.parametrize("snr", [20.0, 6.0, 0.0, -3.0])
def test_measured_snr_equals_the_requested_one(synthetic_batch, make, snr: float) -> None:
    x, fs = synthetic_batch
    noisy = make(snr)(x, fs, LEADS, np.random.default_rng(1))
    assert noisy.shape == x.shape and noisy.dtype == x.dtype
    assert not np.array_equal(noisy, x)
    # float32 output: the SNR holds to what float32 rounding of the sum leaves.
    np.testing.assert_allclose(P.snr_db(x, noisy), snr, atol=1e-3)


def test_noise_is_reproducible_and_per_record() -> None:
    x = np.random.default_rng(0).standard_normal((3, 12, 500)).astype(np.float32)
    x[1] *= 10  # a louder record gets louder noise: the SNR is per record
    noise = P.GaussianNoise(10)
    a = noise(x, 500.0, LEADS, np.random.default_rng(5))
    b = noise(x, 500.0, LEADS, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(P.snr_db(x, a), 10, atol=1e-3)
    assert P.signal_power(a - x)[1] == pytest.approx(100 * P.signal_power(a - x)[0], rel=0.2)


def test_lead_sets_reversal_gain_and_rate() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 12, 1000)).astype(np.float32)
    kept = P.KeepLeads(["II", "V1"])(x, 500.0, LEADS, rng)
    np.testing.assert_array_equal(kept[:, [1, 6]], x[:, [1, 6]])
    assert not kept[:, [0, 2, 3, 4, 5, 7, 8, 9, 10, 11]].any()
    dropped = P.DropLeads(["II"])(x, 500.0, LEADS, rng)
    assert not dropped[:, 1].any() and np.array_equal(dropped[:, 2:], x[:, 2:])
    zeroed = P.RandomLeadsZeroed(3)(x, 500.0, LEADS, rng)
    assert [int((~zeroed[r].any(axis=1)).sum()) for r in range(2)] == [3, 3]

    swapped = P.LimbLeadReversal()(x, 500.0, LEADS, rng)
    np.testing.assert_array_equal(swapped[:, 0], -x[:, 0])
    np.testing.assert_array_equal(swapped[:, [1, 2, 3, 4]], x[:, [2, 1, 4, 3]])
    np.testing.assert_array_equal(swapped[:, 5:], x[:, 5:])
    # Swapping back restores the recording: the reversal is its own inverse.
    np.testing.assert_array_equal(P.LimbLeadReversal()(swapped, 500.0, LEADS, rng), x)

    np.testing.assert_allclose(P.Gain(0.5)(x, 500.0, LEADS, rng), x * 0.5)
    # A 10 Hz sine survives a 250 Hz recorder; a 100 Hz one does not (above its Nyquist).
    t = np.arange(1000) / 500.0
    slow = np.broadcast_to(np.sin(2 * np.pi * 10 * t), (1, 12, 1000)).astype(np.float32)
    fast = np.broadcast_to(np.sin(2 * np.pi * 150 * t), (1, 12, 1000)).astype(np.float32)
    rec = P.RecordedAt(250)
    assert rec(slow, 500.0, LEADS, rng).shape == slow.shape
    np.testing.assert_allclose(rec(slow, 500.0, LEADS, rng)[..., 100:-100],
                               slow[..., 100:-100], atol=0.02)  # fmt: skip
    assert np.abs(rec(fast, 500.0, LEADS, rng)[..., 100:-100]).max() < 0.05
    # A recorder as fast as the record or faster loses nothing.
    np.testing.assert_array_equal(P.RecordedAt(500)(fast, 500.0, LEADS, rng), fast)


def test_electrode_motion_comes_in_low_frequency_bursts_on_every_lead() -> None:
    x = np.random.default_rng(0).standard_normal((4, 12, 1000)).astype(np.float32)
    motion = P.ElectrodeMotion(0.0, rate=2.0, duration=1.0, cutoff=10.0)
    noise = motion(x, 100.0, LEADS, np.random.default_rng(3)) - x
    active = np.abs(noise).max(axis=1) > 0  # (records, samples)
    # Two bursts of one second in ten: at most a fifth of each record, the same on every lead.
    assert (active.mean(axis=1) <= 0.2 + 1e-9).all() and (active.mean(axis=1) > 0.05).all()
    on_all = (np.abs(noise) > 0).sum(axis=1)
    assert set(np.unique(on_all[active])) <= {12}
    spectrum = np.abs(np.fft.rfft(noise, axis=-1)) ** 2
    freqs = np.fft.rfftfreq(1000, 1 / 100.0)
    assert spectrum[..., freqs <= 12].sum() > 0.95 * spectrum.sum()


def test_bad_settings_are_refused_by_name() -> None:
    with pytest.raises(ConfigValueError, match=r"KeepLeads.leads: unknown lead\(s\) \['V7'\]"):
        P.KeepLeads(["II", "V7"])
    with pytest.raises(ConfigValueError, match="Gain.factor must be a positive"):
        P.Gain(0)
    with pytest.raises(
        ConfigValueError,
        match=r"LimbLeadsFromIAndII: lead\(s\) \['III', 'aVR', 'aVL', 'aVF'\] not in the records' leads",
    ):
        P.LimbLeadsFromIAndII()(np.zeros((1, 2, 10)), 100.0, ("I", "II"),
                                np.random.default_rng(0))  # fmt: skip


def test_presets_compose_and_instantiate() -> None:
    from hydra import compose, initialize_config_dir

    from ecgx.robustness.run import build_perturbations

    conf = Path(__file__).resolve().parents[2] / "conf"
    made = {}
    for preset, expect in (("default", 27), ("leads", 8), ("noise", 20)):
        with initialize_config_dir(str(conf), version_base="1.3"):
            cfg = compose("eval", overrides=[f"robustness={preset}"])
        made[preset] = build_perturbations(cfg.robustness)
        assert len(made[preset]) == expect, preset
        assert all(isinstance(p, P.Perturbation) for p in made[preset].values())
    # default = the lead sets + its own rows
    assert set(made["leads"]) < set(made["default"])
    assert {"LA_RA_swap", "hum60_0dB", "gain_x2", "recorded_at_50Hz"} <= set(made["default"])
