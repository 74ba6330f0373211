"""The paper-ECG chart renderer: geometry, determinism, layout placement and the pixel map."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ecgx.data.cache import build_or_open
from ecgx.datasets.sph import SPH
from ecgx.errors import ConfigValueError
from ecgx.formats.record import LEADS, RecordError
from ecgx.transforms.chart import ChartImage
from ecgx.transforms.signal import OfflineTransform
from tests.conftest import SAMPLES, needs_samples

FS = 500.0
# Low resolution keeps these tests fast; the geometry does not depend on dpi.
FAST = {"dpi": 60.0, "mm_per_s": 25.4, "mm_per_mv": 10.16}


def _ecg(seed: int = 0, n: int = 5000) -> np.ndarray:
    t = np.arange(n) / FS
    rng = np.random.default_rng(seed)
    beats = np.sin(2 * np.pi * 1.2 * t)[None] * rng.uniform(0.2, 1.0, (12, 1))
    return (beats + rng.normal(0, 0.02, (12, n))).astype(np.float32)


def _plain(**kw: object) -> ChartImage:
    """Traces only (2 pt wide, solid at low dpi): no grid, names or frame, so any non-white
    pixel is ink."""
    return ChartImage(
        grid=False, lead_labels=False, frame=False, linewidth_pt=2.0, **{**FAST, **kw}
    )


def test_seed_geometry() -> None:
    # Spec 2.3: about 3000 × 1080 (layout 1) and 3000 × 2160 px (layout 2) at 300 dpi, plus the
    # 0.1 in border of the tight bounding box.
    assert ChartImage("4x2.5+II", mm_per_s=25.4, mm_per_mv=7.62).native_shape == (1080, 3000)
    assert ChartImage("2x5", mm_per_s=25.4, mm_per_mv=10.16).native_shape == (2160, 3000)
    padded = ChartImage("4x2.5+II", mm_per_s=25.4, mm_per_mv=7.62, pad_inches=0.1)
    assert padded.native_shape == (1140, 3060)
    assert ChartImage(size=224).output_shape == (3, 224, 224)
    assert ChartImage(size=[100, 300], channels=1).output_shape == (1, 100, 300)
    standard = ChartImage(height_px=200)  # 25 mm/s, 10 mm/mV: 250 mm × 120 mm
    assert standard.output_shape == (3, 200, round(200 * 250 / 120))
    assert isinstance(standard, OfflineTransform)


@pytest.mark.parametrize("layout", ["4x2.5+II", "2x5"])
def test_output_shape_range_and_bytes_are_deterministic(layout: str) -> None:
    chart = ChartImage(layout, size=224, **FAST)
    x = _ecg()
    image = chart.render(x, FS)
    assert image.shape == (3, 224, 224) and image.dtype == np.float32
    assert image.min() >= 0.0 and image.max() <= 1.0
    assert image.min() < 0.5 < image.max()  # ink and paper both present
    again = ChartImage(layout, size=224, **FAST).render(x, FS)
    assert image.tobytes() == again.tobytes() == chart.render(x, FS).tobytes()
    assert chart.render(_ecg(seed=1), FS).tobytes() != image.tobytes()


def test_rhythm_strip_is_lead_ii() -> None:
    chart = _plain(layout="4x2.5+II")
    x = np.zeros((12, 5000), np.float32)
    x[LEADS.index("II")] = 1.0  # lead II: a flat line 1 mV above its baseline
    ink = chart.render(x, FS).min(axis=0) < 0.9
    seconds = 2.5
    for band in range(4):
        for column in range(4):
            t = (column + 0.5) * seconds
            col = int(chart._x(t))
            raised = ink[int(chart._y(-3 * band + 1.0)), col]
            on_baseline = ink[int(chart._y(-3 * band)), col]
            expected = (band == 1 and column == 0) or band == 3  # II's own slot + the strip
            assert raised == expected, (band, column)
            assert on_baseline != expected, (band, column)


def test_two_column_layout_places_leads_column_major() -> None:
    chart = _plain(layout="2x5")
    for lead in range(12):
        x = np.zeros((12, 5000), np.float32)
        x[lead] = 1.0
        ink = chart.render(x, FS).min(axis=0) < 0.9
        column, row = divmod(lead, 6)
        assert ink[int(chart._y(-3 * row + 1.0)), int(chart._x(column * 5 + 2.5))], LEADS[lead]
        assert ink[int(chart._y(-3 * row + 1.0))].sum() < ink.shape[1] * 0.6  # only one column


def test_grid_when_asked() -> None:
    x = np.zeros((12, 5000), np.float32)
    settings = {**FAST, "dpi": 150.0, "lead_labels": False, "frame": False}
    chart = ChartImage(**settings)
    with_grid = chart.render(x, FS)
    without = ChartImage(grid=False, **settings).render(x, FS)
    reddish = (with_grid[0] > 0.9) & (with_grid[1] < 0.8) & (with_grid[2] < 0.8)
    assert reddish.mean() > 0.1
    assert not ((without[0] > 0.9) & (without[1] < 0.8)).any()
    row = int(chart._y(0.75))  # between the first baseline and the top: grid only
    assert (without[:, row] == 1.0).all()  # white paper
    # Major (red) lines every 0.2 s: there the green channel drops most.
    green = with_grid[1, row]
    for k in range(1, 10):
        major, minor = (int(np.floor(float(chart._x(t)))) for t in (0.2 * k, 0.2 * k + 0.08))
        assert green[major - 1 : major + 1].min() < 0.5
        assert green[minor - 1 : minor + 1].min() > green[major - 1 : major + 1].min()


def test_pixel_to_lead_time_matches_the_layout() -> None:
    chart = ChartImage("4x2.5+II", **FAST)
    lead, sample = chart.pixel_to_lead_time(FS)
    assert lead.shape == sample.shape == chart.output_shape[1:]
    for band, names in enumerate([["I", "aVR", "V1", "V4"], ["II", "aVL", "V2", "V5"],
                                  ["III", "aVF", "V3", "V6"], ["II"] * 4]):  # fmt: skip
        for column, name in enumerate(names):
            t = column * 2.5 + 1.0
            r, c = int(chart._y(-3 * band + 0.4)), int(chart._x(t))
            assert LEADS[lead[r, c]] == name
            assert abs(sample[r, c] - t * FS) <= FS / chart.px_per_s + 1
    padded = ChartImage("2x5", pad_inches=0.1, size=64, **FAST)
    lead, sample = padded.pixel_to_lead_time(FS)
    assert lead[0, 0] == -1 and sample[0, 0] == -1  # the white border is no lead
    assert lead[32, 32] >= 0 and 0 <= sample[32, 32] < 5000


@pytest.mark.parametrize("size", [None, 224])
def test_projected_ink_finds_the_drawn_lead_and_time(size: int | None) -> None:
    chart = _plain(layout="4x2.5+II", size=size)
    x = np.zeros((12, 5000), np.float32)
    spiked = x.copy()
    lead, at = LEADS.index("V3"), 3000  # column 2 (5–7.5 s), row 2
    spiked[lead, at - 10 : at + 10] = 1.2
    attribution = chart.render(x, FS) - chart.render(spiked, FS)  # where the spike adds ink
    projected = chart.project(np.abs(attribution), FS, 5000)
    assert projected.shape == (12, 5000)
    found_lead, found_at = np.unravel_index(np.argmax(projected), projected.shape)
    assert LEADS[found_lead] == "V3"
    assert abs(found_at - at) <= 20


def test_transform_output_is_channels_by_pixels() -> None:
    chart = ChartImage(size=[30, 50], **FAST)
    x = _ecg()
    stored, fs = chart(x, FS)
    assert stored.shape == (3, 1500) and fs == FS
    assert chart.output_leads(LEADS) == ("R", "G", "B")
    np.testing.assert_array_equal(chart.to_image(stored), chart.render(x, FS))
    gray = ChartImage(size=[7, 9], channels=1, **FAST)
    stored, _ = gray(x, FS)
    assert stored.shape == (1, 63) and gray.output_leads(LEADS) == ("L",)
    np.testing.assert_array_equal(gray.to_image(stored), gray.render(x, FS))
    with pytest.raises(ConfigValueError, match="LeadSubset"):
        chart.output_leads(("I", "II"))


def test_bad_settings_and_records() -> None:
    with pytest.raises(ConfigValueError, match="layout"):
        ChartImage(layout="3x4")
    with pytest.raises(ConfigValueError, match="not both"):
        ChartImage(size=224, height_px=100)
    with pytest.raises(ConfigValueError, match="max_pixels"):
        ChartImage(dpi=3000)
    with pytest.raises(RecordError, match="12-lead"):
        ChartImage(**FAST).render(np.zeros((8, 5000)), FS)


def test_spec_is_settings_only() -> None:
    chart = ChartImage(size=64, **FAST)
    spec = chart.spec()
    chart.render(_ecg(), FS)  # builds cached layers, which must not leak into the cache key
    assert chart.spec() == spec and spec["name"] == "ChartImage" and spec["size"] == [64, 64]
    assert "_layers" not in repr(chart)


@needs_samples(SAMPLES / "sph")
def test_cache_round_trip_on_real_records(tmp_path: Path) -> None:
    reader = SPH(SAMPLES / "sph")
    meta = reader.metadata()
    chart = ChartImage(size=[48, 64], **FAST)
    cache = build_or_open(
        tmp_path, {"test": "chart"}, meta, reader.read, chart, output_leads=chart.output_leads
    )
    assert len(cache) == len(meta) and cache.leads == ("R", "G", "B")
    assert cache.fixed_length() == 48 * 64
    for i in (0, len(meta) - 1):
        row: pd.Series = meta.iloc[i]
        expected = chart.render(reader.read(row).signal, FS)
        np.testing.assert_array_equal(chart.to_image(cache[i]), expected)
