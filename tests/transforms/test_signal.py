"""Transforms against scipy or hand-computed references, and the transform YAMLs of the seeds."""

from __future__ import annotations

import numpy as np
import pytest
from hydra.utils import instantiate
from scipy import signal as sps

from ecgx.errors import ConfigValueError
from ecgx.formats.record import LEADS
from ecgx.transforms.signal import (
    AmplitudeOffset,
    AmplitudeScale,
    Bandpass,
    BaselineWander,
    CropOrPad,
    GaussianNoise,
    LeadDropout,
    LeadSubset,
    MinMax,
    Notch,
    OnlineTransform,
    RandomClip,
    RandomCrop,
    RecordMinMax,
    Resample,
    Standardize,
    ToMillivolts,
    TransformPipeline,
)

FS = 500.0


def sines(*freqs: float, seconds: float = 10.0, leads: int = 12) -> np.ndarray:
    t = np.arange(int(seconds * FS)) / FS
    one = sum(np.sin(2 * np.pi * f * t) for f in freqs)
    return np.tile(one, (leads, 1)).astype(np.float32)


def amplitude_at(x: np.ndarray, freq: float) -> float:
    """Amplitude of the ``freq`` Hz sine in lead 0, away from the filter's edge transients."""
    core = x[0, 500:-500].astype(np.float64)
    t = (np.arange(x.shape[-1]) / FS)[500:-500]
    return float(2 * abs(np.mean(core * np.exp(-2j * np.pi * freq * t))))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


# -- offline -----------------------------------------------------------------------------------
def test_notch_removes_50_hz_and_keeps_10_hz() -> None:
    x = sines(10.0, 50.0)
    out, fs = Notch(freq=50, quality=30)(x, FS)
    assert fs == FS and out.dtype == np.float32 and out.shape == x.shape
    assert amplitude_at(x, 50.0) == pytest.approx(1.0, abs=0.01)
    assert amplitude_at(out, 50.0) < 0.01
    assert amplitude_at(out, 10.0) == pytest.approx(1.0, abs=0.01)
    b, a = sps.iirnotch(50.0, 30.0, fs=FS)
    np.testing.assert_allclose(out, sps.filtfilt(b, a, x, axis=-1), atol=1e-5)


def test_notch_needs_its_frequency_below_nyquist() -> None:
    with pytest.raises(ConfigValueError, match="Notch.freq=50.0"):
        Notch(freq=50)(sines(10.0, seconds=2), 100.0)


def test_seresnet_bandpass_against_scipy() -> None:
    x = sines(0.1, 10.0, 120.0) + 2.0  # drift, in band, above 50 Hz, DC
    out, _ = Bandpass(low=0.5, high=50.0, order=2)(x, FS)
    sos = sps.butter(2, [0.5, 50.0], "bandpass", fs=FS, output="sos")
    np.testing.assert_allclose(out, sps.sosfiltfilt(sos, x, axis=-1), atol=1e-5)
    assert amplitude_at(out, 10.0) == pytest.approx(1.0, abs=0.02)
    assert amplitude_at(out, 120.0) < 0.1
    assert abs(out[0, 500:-500].mean()) < 0.05


def test_resample_to_250_hz_halves_500_hz_records() -> None:
    out, fs = Resample(fs=250)(sines(10.0), FS)
    assert fs == 250.0 and out.shape == (12, 2500)


def test_lead_subset_keeps_the_named_rows_in_the_given_order() -> None:
    x = np.arange(12, dtype=np.float32)[:, None] * np.ones((1, 5), np.float32)
    subset = LeadSubset(leads=["I", "AVR", "v5"])  # any case, canonical spelling stored
    out, fs = subset(x, FS)
    assert subset.leads == ["I", "aVR", "V5"] and fs == FS
    np.testing.assert_array_equal(out[:, 0], [0, 3, 10])
    reordered, _ = LeadSubset(leads=["V5", "I"])(x, FS)
    np.testing.assert_array_equal(reordered[:, 0], [10, 0])
    assert subset.output_leads(LEADS) == ("I", "aVR", "V5")
    pipeline = TransformPipeline(offline=[Notch(), subset])
    assert pipeline.output_leads(LEADS) == ("I", "aVR", "V5")
    assert subset.spec() == {"name": "LeadSubset", "leads": ["I", "aVR", "V5"]}


def test_lead_subset_rejects_bad_names_and_inputs() -> None:
    with pytest.raises(ConfigValueError, match=r"LeadSubset\.leads.*'V7'"):
        LeadSubset(leads=["I", "V7"])
    with pytest.raises(ConfigValueError, match="repeats"):
        LeadSubset(leads=["I", "i"])
    with pytest.raises(ConfigValueError, match="12 canonical leads"):
        LeadSubset(leads=["I"])(np.zeros((3, 10), np.float32), FS)
    with pytest.raises(ConfigValueError, match="in order"):
        LeadSubset(leads=["I"]).output_leads(("II", "I"))


def test_to_millivolts_scales() -> None:
    out, fs = ToMillivolts(scale=0.001)(np.full((12, 4), 1500.0, np.float32), FS)
    np.testing.assert_allclose(out, 1.5)
    assert fs == FS and out.dtype == np.float32


# -- fitted ------------------------------------------------------------------------------------
def test_minmax_fits_train_per_lead_and_survives_a_constant_lead(rng) -> None:
    train = [rng.normal(size=(3, 50)).astype(np.float32) for _ in range(4)]
    for x in train:
        x[2] = 7.0  # constant in training
    norm = MinMax(per_lead=True).fit(train)
    stacked = np.concatenate(train, axis=-1)
    np.testing.assert_allclose(norm.min[:, 0], stacked.min(axis=-1))
    np.testing.assert_allclose(norm.max[:, 0], stacked.max(axis=-1))
    out = np.concatenate([norm(x) for x in train], axis=-1)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[:2].min(axis=-1), 0.0, atol=1e-6)
    np.testing.assert_allclose(out[:2].max(axis=-1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(out[2], 0.0)
    fresh = MinMax()
    fresh.load_state_dict(norm.state_dict())
    np.testing.assert_array_equal(fresh(train[0]), norm(train[0]))


def test_minmax_global_and_before_fit() -> None:
    norm = MinMax(per_lead=False).fit([np.array([[0.0, 2.0], [4.0, 1.0]], np.float32)])
    np.testing.assert_allclose(norm(np.array([[0.0, 2.0]], np.float32)), [[0.0, 0.5]])
    with pytest.raises(RuntimeError, match="before fit"):
        MinMax()(np.zeros((1, 2), np.float32))
    with pytest.raises(ValueError, match="empty"):
        MinMax().fit([])


def test_record_minmax_is_per_record_and_finite() -> None:
    x = np.array([[1.0, 3.0, 2.0], [5.0, 5.0, 5.0]], np.float32)
    out = RecordMinMax()(x, np.random.default_rng(0))
    np.testing.assert_allclose(out, [[0.0, 1.0, 0.5], [0.0, 0.0, 0.0]])
    np.testing.assert_array_equal(RecordMinMax().eval(x), out)


# -- online ------------------------------------------------------------------------------------
def test_random_clip_crops_longer_records_to_a_window(rng) -> None:
    x = np.arange(10_000, dtype=np.float32)[None].repeat(2, axis=0)
    starts = set()
    for _ in range(20):
        out = RandomClip(4096)(x, rng)
        assert out.shape == (2, 4096)
        np.testing.assert_array_equal(np.diff(out[0]), 1.0)  # one contiguous window
        starts.add(int(out[0, 0]))
    assert len(starts) > 1
    np.testing.assert_array_equal(RandomClip(4096).eval(x), x[:, :4096])  # keeps the start


def test_random_clip_pads_shorter_records_on_both_sides(rng) -> None:
    x = np.ones((2, 1000), np.float32)
    lefts = []
    for _ in range(50):
        out = RandomClip(4096)(x, rng)
        assert out.shape == (2, 4096) and out.sum() == x.sum()
        ones = np.flatnonzero(out[0])
        assert ones[-1] - ones[0] == 999  # the record intact, zeros around it
        lefts.append(int(ones[0]))
    assert min(lefts) < 1548 < max(lefts)  # both sides get padding at random
    val = RandomClip(4096).eval(x)  # the seed's ValClip: zeros at the end
    np.testing.assert_array_equal(val[:, :1000], 1.0)
    np.testing.assert_array_equal(val[:, 1000:], 0.0)


def test_crop_or_pad_keeps_the_last_samples_and_pads_left(rng) -> None:
    long = np.arange(20_000, dtype=np.float32)[None]
    out = CropOrPad(15_000, align="right")(long, rng)
    np.testing.assert_array_equal(out, long[:, -15_000:])
    short = np.ones((1, 6_000), np.float32)
    out = CropOrPad(15_000, align="right").eval(short)
    assert out.shape == (1, 15_000)
    np.testing.assert_array_equal(out[:, :9_000], 0.0)
    np.testing.assert_array_equal(out[:, 9_000:], 1.0)
    with pytest.raises(ConfigValueError, match=r"CropOrPad\.align"):
        CropOrPad(10, align="end")


def test_amplitude_offset_adds_thousandths_in_range(rng) -> None:
    x = rng.normal(size=(12, 100)).astype(np.float32)
    offset = AmplitudeOffset(p=1.0)
    ks = []
    for _ in range(200):
        delta = offset(x, rng) - x
        np.testing.assert_allclose(delta, delta[:, :1].repeat(100, axis=1), atol=1e-6)
        k = delta[:, 0] * 1000
        np.testing.assert_allclose(k, np.round(k), atol=1e-3)  # multiples of 1/1000 mV
        ks.extend(np.round(k).astype(int).tolist())
    assert min(ks) == -20 and max(ks) == 19  # [-0.020, 0.019] mV, both ends reached
    assert len(set(ks)) == 40
    assert AmplitudeOffset(p=0.0)(x, rng) is x


def test_amplitude_offset_probability(rng) -> None:
    x = np.zeros((12, 10), np.float32)
    changed = np.mean([AmplitudeOffset(p=0.3085)(x, rng).any() for _ in range(2000)])
    assert changed == pytest.approx(0.3085 * (1 - 1 / 40**12), abs=0.04)


def test_baseline_wander_is_slow_and_bounded(rng) -> None:
    x = np.zeros((12, 5000), np.float32)
    wander = BaselineWander(amplitude=0.2, max_freq=0.5, fs=FS, p=1.0)
    added = wander(x, rng)
    assert np.abs(added).max() <= 0.2 + 1e-6 and np.abs(added).max() > 0
    spectrum = np.abs(np.fft.rfft(added, axis=-1))
    freqs = np.fft.rfftfreq(5000, d=1 / FS)
    assert spectrum[:, freqs > 2.0].max() < 0.05 * spectrum.max()
    assert BaselineWander(p=0.0)(x, rng) is x
    with pytest.raises(ConfigValueError, match="max_freq"):
        BaselineWander(max_freq=60, fs=100)


def test_lead_dropout_zeroes_whole_leads(rng) -> None:
    x = np.ones((12, 50), np.float32)
    out = LeadDropout(p=0.5)(x, rng)
    per_lead = out.sum(axis=-1)
    assert set(per_lead.tolist()) <= {0.0, 50.0} and 0 < (per_lead == 0).sum() < 12
    assert (LeadDropout(p=1.0)(x, rng).sum(axis=-1) > 0).sum() == 1  # one lead survives
    np.testing.assert_array_equal(LeadDropout(p=0.0)(x, rng), x)


def test_kept_augmentations(rng) -> None:
    x = np.ones((12, 1000), np.float32)
    noisy = GaussianNoise(std=0.1)(x, rng)
    assert abs((noisy - x).std() - 0.1) < 0.01
    scaled = AmplitudeScale(sigma=0.1, p=1.0)(x, rng)
    assert np.allclose(scaled, scaled[:, :1]) and not np.allclose(scaled, 1.0)
    assert RandomCrop(250)(x, rng).shape == (12, 250)
    assert RandomCrop(250).eval(np.arange(1000.0)[None])[0, 0] == 375  # XAI4ECG centre crop


def test_online_transforms_do_not_write_into_the_cache(rng) -> None:
    x = rng.normal(size=(12, 3000)).astype(np.float32)
    x.setflags(write=False)  # as a memory-mapped cache record
    for t in (RandomClip(4096), CropOrPad(2000), RecordMinMax(), AmplitudeOffset(p=1.0),
              AmplitudeScale(p=1.0), BaselineWander(p=1.0), LeadDropout(p=0.5)):  # fmt: skip
        t(x, rng)


def test_pipeline_output_length() -> None:
    assert TransformPipeline(online=[RandomClip(4096)]).output_length(1000) == 4096
    assert TransformPipeline(online=[CropOrPad(15_000)]).output_length(None) == 15_000
    assert TransformPipeline(online=[RandomCrop(250)]).output_length(1000) == 250
    assert TransformPipeline(online=[GaussianNoise()]).output_length(None) is None


# -- the seeds' YAMLs --------------------------------------------------------------------------
def test_seresnet_yaml(compose_train, rng) -> None:
    pipeline = instantiate(compose_train("transform=seresnet").transform)
    assert [type(t) for t in pipeline.offline] == [Bandpass, Resample]
    assert (pipeline.offline[0].low, pipeline.offline[0].high, pipeline.offline[0].order) == (
        0.5,
        50.0,
        2,
    )
    assert pipeline.normalize is None
    assert [type(t) for t in pipeline.online] == [RandomClip, RecordMinMax]
    x, fs = pipeline.apply_offline(sines(10.0, 60.0), FS)
    assert fs == 250.0 and x.shape == (12, 2500)
    for out in (pipeline.apply_online(x, rng), pipeline.apply_online(x, None)):
        assert out.shape == (12, 4096)
        assert out.min() == 0.0 and out.max() == 1.0
    assert pipeline.output_length(2500) == 4096


def test_cpsc2018_yaml(compose_train, rng) -> None:
    pipeline = instantiate(compose_train("transform=cpsc2018").transform)
    assert pipeline.offline == [] and pipeline.normalize is None
    assert [type(t) for t in pipeline.online] == [AmplitudeScale, AmplitudeOffset, CropOrPad]
    assert (pipeline.online[1].low, pipeline.online[1].high) == (-20, 19)
    x = np.ones((12, 6000), np.float32)
    evaluated = pipeline.apply_online(x, None)  # no augmentation, last 15,000, left zeros
    np.testing.assert_array_equal(evaluated[:, :9000], 0.0)
    np.testing.assert_array_equal(evaluated[:, 9000:], 1.0)
    trained = pipeline.apply_online(x, rng)
    assert trained.shape == (12, 15_000)
    np.testing.assert_array_equal(trained[:, :9000], 0.0)  # augmented before the padding


def test_lead_subset_yaml(compose_train) -> None:
    pipeline = instantiate(compose_train("transform=lead_subset").transform)
    assert [type(t) for t in pipeline.offline] == [LeadSubset]
    assert pipeline.offline[0].leads == ["I", "aVR", "V5"]
    assert [type(t) for t in pipeline.online] == [AmplitudeScale, AmplitudeOffset, CropOrPad]
    x, _ = pipeline.apply_offline(sines(10.0), FS)
    assert x.shape == (3, 5000)
    assert pipeline.output_leads(LEADS) == ("I", "aVR", "V5")


def test_cpsc2018_through_the_datamodule(compose_train) -> None:
    cfg = compose_train("transform=cpsc2018", "transform.online.2.length=1200")
    dm = instantiate(cfg.data)
    dm.setup("fit")
    assert dm.input_length == 1200
    batch = next(iter(dm.test_dataloader()))["signal"]
    assert batch.shape[1:] == (12, 1200)
    assert (batch[..., :200] == 0).all()  # 1000 samples, 200 zeros on the left


def test_lead_subset_through_the_datamodule(compose_train) -> None:
    dm = instantiate(compose_train("transform=lead_subset").data)
    dm.setup("fit")
    assert dm.num_leads == 3
    assert dm.cache[0].shape == (3, 1000)
    assert dm.cache.leads == ("I", "aVR", "V5")


def test_minmax_through_the_datamodule(compose_train) -> None:
    dm = instantiate(compose_train().data)
    dm.transform.normalize = MinMax()
    dm.setup("fit")
    fresh = instantiate(compose_train().data)
    fresh.transform.normalize = MinMax()
    fresh.load_state_dict(dm.state_dict())
    fresh.setup("fit")
    np.testing.assert_array_equal(fresh.transform.normalize.min, dm.transform.normalize.min)


def test_standardize_still_fits() -> None:
    norm = Standardize(per_lead=True).fit([np.array([[1.0, 3.0], [2.0, 2.0]], np.float32)])
    np.testing.assert_allclose(norm.mean[:, 0], [2.0, 2.0])


# -- batched forms (the data module's loader) --------------------------------------------------
def _batch(rng: np.random.Generator, n: int = 16, samples: int = 1000) -> np.ndarray:
    x = rng.normal(size=(n, 12, samples)).astype(np.float32)
    x.setflags(write=False)  # never written into, as the per-record forms
    return x


def test_batched_crops_are_windows_inside_the_records(rng) -> None:
    x = _batch(rng, n=64)
    for t in (RandomCrop(250), RandomClip(250)):
        out = t.batch(x, rng)
        assert out.shape == (64, 12, 250)
        starts = [
            next(s for s in range(751) if np.array_equal(out[b], x[b, :, s : s + 250]))
            for b in range(64)
        ]
        assert len(set(starts)) > 20  # one draw per record
    with pytest.raises(ConfigValueError, match="RandomCrop.length=2000 exceeds"):
        RandomCrop(2000).batch(x, rng)
    # Shorter than the clip: the whole record somewhere, zeros around it (the seed's padding).
    padded = RandomClip(1200).batch(x, rng)
    for b in range(len(x)):
        left = int(np.flatnonzero(padded[b, 0])[0])
        np.testing.assert_array_equal(padded[b, :, left : left + 1000], x[b])
        assert not padded[b, :, :left].any() and not padded[b, :, left + 1000 :].any()


def test_batched_augmentations_keep_the_per_record_semantics(rng) -> None:
    x = _batch(rng, n=400, samples=200)
    scaled = AmplitudeScale(sigma=0.1, p=0.5).batch(x, rng)
    factors = scaled[..., 0] / x[..., 0]
    np.testing.assert_allclose(scaled, x * factors[..., None], rtol=1e-6)  # one factor a lead
    kept = (factors == 1.0).all(axis=1)
    assert 120 < kept.sum() < 280  # p = 0.5 of the records, untouched bit for bit
    np.testing.assert_array_equal(scaled[kept], x[kept])
    assert 0.08 < factors[~kept].std() < 0.12 and abs(factors[~kept].mean() - 1) < 0.01

    shifted = AmplitudeOffset(p=0.5, low=-20, high=19, step=0.001).batch(x, rng)
    k = np.round((shifted - x)[..., 0] / 0.001)
    assert k.min() == -20 and k.max() == 19
    moved = (shifted != x).any(axis=(1, 2))
    assert 120 < moved.sum() < 280
    np.testing.assert_array_equal(shifted[~moved], x[~moved])

    wander = BaselineWander(amplitude=0.1, max_freq=0.5, fs=100.0, p=0.5).batch(x, rng) - x
    assert 120 < (wander != 0).any(axis=(1, 2)).sum() < 280 and np.abs(wander).max() <= 0.1 + 1e-6

    dropped = LeadDropout(p=1.0).batch(x, rng)
    assert ((dropped != 0).any(axis=-1).sum(axis=1) == 1).all()  # one lead survives in each
    np.testing.assert_array_equal(LeadDropout(p=0.0).batch(x, rng), x)
    assert abs((GaussianNoise(std=0.1).batch(x, rng) - x).std() - 0.1) < 0.01


def test_deterministic_batched_forms_equal_the_per_record_ones(rng) -> None:
    x = _batch(rng, samples=900)
    for t in (CropOrPad(1200, "right"), CropOrPad(500, "center"), RecordMinMax(True),
              RecordMinMax(False), RandomClip(1200), RandomClip(400), RandomCrop(300)):  # fmt: skip
        np.testing.assert_array_equal(t.batch_eval(x), np.stack([t.eval(r) for r in x]))
    for t in (CropOrPad(1200), RecordMinMax(False)):
        np.testing.assert_array_equal(t.batch(x, rng), np.stack([t(r, rng) for r in x]))


class _Flip(OnlineTransform):
    """A transform without a batched form of its own."""

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return -x if rng.random() < 0.5 else x


def test_a_transform_without_a_batched_form_runs_record_by_record(rng) -> None:
    x = _batch(rng, n=64)
    out = _Flip().batch(x, rng)
    flipped = (out == -x).all(axis=(1, 2))
    assert 10 < flipped.sum() < 54
    np.testing.assert_array_equal(out[~flipped], x[~flipped])


def _fitted(normalize: Standardize | MinMax, rng: np.random.Generator) -> Standardize | MinMax:
    return normalize.fit(list(3.0 + 2.0 * rng.normal(size=(8, 12, 1000)).astype(np.float32)))


@pytest.mark.parametrize(
    "online",
    [
        [RandomCrop(250), AmplitudeScale(p=0.5)],
        [RandomClip(1200), RecordMinMax()],  # a pad: the normaliser stays first
        [AmplitudeScale(p=1.0), AmplitudeOffset(p=1.0), CropOrPad(600)],
        [],
    ],
)
@pytest.mark.parametrize("normalize", [Standardize(per_lead=False), MinMax(per_lead=True), None])
def test_pipeline_batches_equal_normalise_then_online(online, normalize, rng) -> None:
    pipeline = TransformPipeline(normalize=normalize and _fitted(normalize, rng), online=online)
    x = _batch(rng)
    normalised = x if normalize is None else pipeline.normalize(x)
    # Evaluation: what apply_online gives each normalised record, bit for bit.
    np.testing.assert_array_equal(
        pipeline.apply_batch(x, None),
        np.stack([pipeline.apply_online(r, None) for r in normalised]),
    )
    # Training: normalising after the crops changes nothing either (same draws, same values).
    expected = normalised
    draws = np.random.default_rng(7)
    for t in online:
        expected = t.batch(expected, draws)
    np.testing.assert_array_equal(pipeline.apply_batch(x, np.random.default_rng(7)), expected)


def test_the_normaliser_moves_after_the_leading_crops_only() -> None:
    calls: list[tuple[int, ...]] = []

    class Spy(Standardize):
        def __call__(self, x: np.ndarray) -> np.ndarray:
            calls.append(x.shape)
            return super().__call__(x)

    norm = Spy().fit([np.ones((12, 10), np.float32)])
    x = np.zeros((4, 12, 1000), np.float32)
    rng = np.random.default_rng(0)
    for online in ([RandomCrop(250), AmplitudeScale()], [RandomClip(1200)],  # the clip pads
                   [CropOrPad(500), RandomClip(300)]):  # fmt: skip
        TransformPipeline(normalize=norm, online=online).apply_batch(x, rng)
    assert calls == [(4, 12, 250), (4, 12, 1000), (4, 12, 300)]
