"""Segment-level attribution and soft-segmentation loading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ecgx.explain.delineation import SEGMENTS
from ecgx.explain.segments import (
    load_soft_segmentation,
    mean_segment_attribution,
    segment_attribution,
)


def test_hand_worked_case() -> None:
    # 2 leads, 4 samples, 2 segments; the second mask is soft.
    a = np.array([[1.0, -2.0, 3.0, -4.0], [0.0, 1.0, 0.0, 1.0]])
    s = np.array([[1.0, 1.0, 0.0, 0.0], [0.0, 0.5, 1.0, 0.5]])
    m = segment_attribution(a, s)
    # lead 0: (1 + 2) / 2 = 1.5 ; (2*0.5 + 3 + 4*0.5) / 2 = 3.0
    # lead 1: (0 + 1) / 2 = 0.5 ; (0.5 + 0 + 0.5) / 2 = 0.5
    np.testing.assert_allclose(m, [[1.5, 3.0], [0.5, 0.5]])


def test_absent_segment_is_nan_and_mean_skips_it() -> None:
    a = np.ones((2, 1, 3))
    s = np.zeros((2, 2, 3))
    s[0, 0] = [1, 1, 0]
    s[0, 1] = [0, 0, 1]
    s[1, 0] = [1, 1, 1]  # record 1 lacks segment 1
    a[0] *= 2.0
    per = segment_attribution(a, s)
    assert per.shape == (2, 1, 2)
    assert np.isnan(per[1, 0, 1])
    mean = mean_segment_attribution(per)
    np.testing.assert_allclose(mean, [[1.5, 2.0]])  # segment 1 from record 0 only
    all_absent = mean_segment_attribution(np.full((3, 1, 1), np.nan))
    assert np.isnan(all_absent).all()


def test_shared_and_per_lead_masks() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 2, 5))
    s = rng.uniform(size=(4, 5))
    shared = segment_attribution(a, s)
    per_lead = segment_attribution(a, np.broadcast_to(s, (3, 2, 4, 5)))
    np.testing.assert_allclose(shared, per_lead)
    np.testing.assert_allclose(segment_attribution(a[1], s), shared[1])
    expected = (np.abs(a[2, 1]) * s[3]).sum() / s[3].sum()
    assert shared[2, 1, 3] == pytest.approx(expected)


def test_mismatched_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="do not fit"):
        segment_attribution(np.ones((2, 5)), np.ones((3, 4)))
    with pytest.raises(ValueError, match="non-negative"):
        segment_attribution(np.ones((2, 5)), -np.ones((3, 5)))


def test_load_seed_layout_uint8_with_mapping(tmp_path: Path) -> None:
    # XAI4ECG layout: (samples, leads, 24 fine classes), uint8 probabilities x 255.
    seg = np.zeros((10, 12, 24), dtype=np.uint8)
    seg[:4, :, 0] = 255  # fine class 0 -> P
    seg[4:, :, 1] = 102  # fine class 1 -> QRS at 0.4
    seg[4:, :, 2] = 153  # fine class 2 -> QRS at 0.6, together 1.0
    path = tmp_path / "seg.npy"
    np.save(path, seg)
    masks = load_soft_segmentation(path, 10, SEGMENTS, mapping={0: "P", 1: "QRS", 2: "QRS"})
    assert masks.shape == (12, len(SEGMENTS), 10)
    np.testing.assert_allclose(masks[:, SEGMENTS.index("P"), :4], 1.0)
    np.testing.assert_allclose(masks[:, SEGMENTS.index("QRS"), 4:], 1.0)
    assert masks[:, SEGMENTS.index("T")].sum() == 0


def test_load_classes_by_samples_float_npz(tmp_path: Path) -> None:
    seg = np.eye(len(SEGMENTS))[np.arange(12) % len(SEGMENTS)].T  # (6, 12)
    path = tmp_path / "seg.npz"
    np.savez(path, segmentation=seg, other=np.zeros(1))
    masks = load_soft_segmentation(path, 12, SEGMENTS, key="segmentation")
    np.testing.assert_array_equal(masks, seg)
    with pytest.raises(ValueError, match=r"seg\.npz.*key="):
        load_soft_segmentation(path, 12, SEGMENTS)


@pytest.mark.parametrize(
    ("array", "match"),
    [
        (np.zeros((6, 11)), r"\(6, 11\)"),  # wrong number of samples
        (np.zeros((12, 6)), r"\(12, 6\)"),  # transposed
        (np.zeros((6, 12, 2, 1)), r"\(6, 12, 2, 1\)"),
        (np.full((6, 12), 1.5), r"1\.5"),
        (np.full((6, 12), -0.1), r"-0\.1"),
        (np.ones((6, 12), dtype=np.int64), "int64"),
        (np.zeros((5, 12)), "5 classes"),
    ],
)
def test_load_errors_name_the_file(tmp_path: Path, array: np.ndarray, match: str) -> None:
    path = tmp_path / "bad_segmentation.npy"
    np.save(path, array)
    with pytest.raises(ValueError, match="bad_segmentation.npy") as err:
        load_soft_segmentation(path, 12, SEGMENTS)
    assert err.match(match)


def test_load_bad_mapping_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "fine.npy"
    np.save(path, np.zeros((24, 12)))
    with pytest.raises(ValueError, match=r"fine\.npy.*'QT'"):
        load_soft_segmentation(path, 12, SEGMENTS, mapping={0: "QT"})
    with pytest.raises(ValueError, match=r"fine\.npy.*30"):
        load_soft_segmentation(path, 12, SEGMENTS, mapping={30: "P"})
