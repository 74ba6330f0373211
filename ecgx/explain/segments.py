"""Segment-level ("glocal") attribution: how much attribution falls on each waveform segment.

XAI4ECG (spec 3.4) aggregates |attribution| per lead and segment with a soft segmentation s_k:
``M[lead, k] = sum_t |a[lead, t]| * s_k[t] / sum_t s_k[t]``, i.e. the mask-weighted mean of
|a| over segment k, then averages M over records into a lead x segment heatmap. Masks come from
`ecgx.explain.delineation.Delineation.mask` or from a user's own soft segmentation
(`load_soft_segmentation`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np


def segment_attribution(attribution: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Mask-weighted mean of |attribution| per lead and segment.

    Shapes (L leads, K segments, T samples, B records):

    * attribution (L, T) with masks (K, T) -> (L, K); with masks (L, K, T) -> (L, K), one
      segmentation per lead.
    * attribution (B, L, T) with masks (K, T) (the same masks for every record), (B, K, T) or
      per lead (B, L, K, T) -> (B, L, K).

    A segment absent from a record (its mask sums to 0 there, e.g. no P wave in atrial
    fibrillation) is NaN for that record rather than 0, so that `mean_segment_attribution`
    averages it over the records that have it instead of pulling the mean towards 0.
    """
    a = np.asarray(attribution, dtype=np.float64)
    s = np.asarray(masks, dtype=np.float64)
    single = a.ndim == 2
    if single:
        a = a[None]
        if s.ndim in (2, 3):  # (K, T) or per-lead (L, K, T) masks of this one record
            s = s[None]
    if a.ndim != 3:
        raise ValueError(
            f"attribution must be (leads, samples) or (records, leads, samples), got {a.shape}"
        )
    b, n_leads, t = a.shape
    if s.ndim == 2:
        s = np.broadcast_to(s, (b, *s.shape))
    if s.ndim not in (3, 4) or s.shape[-1] != t or s.shape[0] != b:
        raise ValueError(f"masks of shape {np.shape(masks)} do not fit attribution {a.shape}")
    if s.ndim == 4 and s.shape[1] != n_leads:
        raise ValueError(f"per-lead masks {np.shape(masks)} do not match {n_leads} leads")
    if not np.isfinite(a).all():
        raise ValueError("attribution contains NaN or infinite values")
    if not np.isfinite(s).all() or (s < 0).any():
        raise ValueError("masks must be finite and non-negative")

    mag = np.abs(a)
    if s.ndim == 3:
        num = np.einsum("blt,bkt->blk", mag, s)
        den = s.sum(axis=-1)[:, None, :]
    else:
        num = np.einsum("blt,blkt->blk", mag, s)
        den = s.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    out = np.broadcast_to(out, (b, n_leads, out.shape[-1])).copy()
    return out[0] if single else out


def mean_segment_attribution(per_record: np.ndarray) -> np.ndarray:
    """Average (B, L, K) per-record segment attribution over records, ignoring NaN (segments a
    record lacks). A segment absent from every record stays NaN."""
    m = np.asarray(per_record, dtype=np.float64)
    if m.ndim != 3:
        raise ValueError(f"expected (records, leads, segments), got {m.shape}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns -> NaN, on purpose
        return np.nanmean(m, axis=0)


def _read_array(path: Path, key: str | None) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such segmentation file")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return np.load(path, allow_pickle=False)
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            names = list(z.keys())
            if key is None:
                if len(names) != 1:
                    raise ValueError(f"{path}: holds arrays {names}; say which with key=")
                key = names[0]
            if key not in names:
                raise ValueError(f"{path}: no array {key!r} (has {names})")
            return z[key]
    raise ValueError(f"{path}: expected a .npy or .npz file")


def load_soft_segmentation(
    path: str | Path,
    n_samples: int,
    segments: Sequence[str],
    mapping: Mapping[int, str] | None = None,
    *,
    key: str | None = None,
) -> np.ndarray:
    """Read a user's soft segmentation of one record for `segment_attribution`.

    The file (.npy, or .npz with one array or the array `key`) holds either
    (samples, leads, classes) -- the layout of XAI4ECG's 1000 x 12 x 24 segmentations -- or
    (classes, samples). uint8 values are scaled by 1/255 (XAI4ECG stores probabilities so);
    float or bool values must lie in [0, 1]. Other integer types are refused, since 0/1 and
    0/255 coding cannot be told apart.

    Without `mapping`, the classes are `segments` in order (so their counts must agree). With
    `mapping` {fine class index: segment name}, e.g. XAI4ECG's 24 fine classes onto `SEGMENTS`,
    each segment's mask is the sum of its fine classes, clipped to 1; fine classes not in the
    mapping are dropped, and a segment no class maps to is all zero (NaN attribution).

    Returns float64 masks (K, n_samples), or (leads, K, n_samples) for the per-lead layout.
    Raises ValueError naming the file and the offending shape or value.
    """
    path = Path(path)
    segments = list(segments)
    raw = _read_array(path, key)
    if raw.dtype == np.uint8:
        arr = raw.astype(np.float64) / 255.0
    elif raw.dtype == np.bool_ or np.issubdtype(raw.dtype, np.floating):
        arr = raw.astype(np.float64)
    else:
        raise ValueError(
            f"{path}: dtype {raw.dtype} is neither uint8 (0-255) nor float/bool in [0, 1]"
        )

    if arr.ndim == 3:
        if arr.shape[0] != n_samples:
            raise ValueError(
                f"{path}: shape {arr.shape} is not (samples={n_samples}, leads, classes)"
            )
        arr = np.moveaxis(arr, 0, -1)  # -> (leads, classes, samples)
    elif arr.ndim == 2:
        if arr.shape[1] != n_samples:
            raise ValueError(f"{path}: shape {arr.shape} is not (classes, samples={n_samples})")
    else:
        raise ValueError(
            f"{path}: shape {arr.shape}; expected (samples, leads, classes) or (classes, samples)"
        )
    if not np.isfinite(arr).all():
        raise ValueError(f"{path}: contains NaN or infinite values")
    lo, hi = float(arr.min(initial=0.0)), float(arr.max(initial=0.0))
    if lo < 0.0 or hi > 1.0 + 1e-6:
        raise ValueError(f"{path}: values span [{lo:g}, {hi:g}], outside [0, 1]")

    n_classes = arr.shape[-2]
    if mapping is None:
        if n_classes != len(segments):
            raise ValueError(
                f"{path}: {n_classes} classes but {len(segments)} segments {segments}; "
                "pass mapping= to collapse fine classes"
            )
        return np.clip(arr, 0.0, 1.0)

    out = np.zeros((*arr.shape[:-2], len(segments), n_samples))
    for fine, name in mapping.items():
        if not 0 <= int(fine) < n_classes:
            raise ValueError(f"{path}: mapping index {fine} outside 0..{n_classes - 1}")
        if name not in segments:
            raise ValueError(f"{path}: mapping names {name!r}, not one of {segments}")
        out[..., segments.index(name), :] += arr[..., int(fine), :]
    return np.clip(out, 0.0, 1.0)
