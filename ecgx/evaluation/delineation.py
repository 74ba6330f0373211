"""How well a delineation finds P, QRS and T boundaries, against cardiologists' (LUDB).

The usual protocol of delineation studies (Martínez et al., IEEE TBME 2004): an annotated
boundary is found when the delineation puts the same wave's boundary within ``tolerance_ms``
of it (150 ms); its error is detected − annotated. Detections are counted against the span the
cardiologists annotated only (LUDB leaves the first and last beats of a record unannotated), so
a wave found there is not a false positive.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from ecgx.explain.delineation import Delineation

TOLERANCE_MS = 150.0
_FIELDS = {"P": ("p_on", "p_off"), "QRS": ("qrs_on", "qrs_off"), "T": ("t_on", "t_off")}


def _match(truth: np.ndarray, found: np.ndarray, tolerance: float) -> np.ndarray:
    """For each annotated boundary, the error to the nearest detected one (NaN if none within
    ``tolerance``); each detection serves one annotation at most (greedy, nearest first)."""
    errors = np.full(len(truth), np.nan)
    if not len(found):
        return errors
    pairs = sorted((abs(f - t), i, j) for i, t in enumerate(truth) for j, f in enumerate(found)
                   if abs(f - t) <= tolerance)  # fmt: skip
    used_t, used_f = set(), set()
    for _, i, j in pairs:
        if i not in used_t and j not in used_f:
            errors[i] = found[j] - truth[i]
            used_t.add(i)
            used_f.add(j)
    return errors


def score_delineation(
    detected: Delineation, truth: pd.DataFrame, lead: str = "", tolerance_ms: float = TOLERANCE_MS
) -> pd.DataFrame:
    """One row per wave and boundary (onset, offset): annotated count, sensitivity, positive
    predictive value, mean and SD of the error in ms. ``truth``: columns wave, onset, offset
    (sample indices, as :func:`ecgx.datasets.ludb.wave_boundaries` gives them)."""
    fs = detected.fs
    tolerance = tolerance_ms * fs / 1000.0
    rows = []
    for wave, (on_field, off_field) in _FIELDS.items():
        annotated = truth[truth["wave"] == wave]
        for point, field, column in (("onset", on_field, "onset"),
                                     ("offset", off_field, "offset")):  # fmt: skip
            found = np.asarray(getattr(detected, field), dtype=float)
            found = found[found >= 0]
            t = annotated[column].to_numpy(dtype=float)
            if len(t):  # detections outside the annotated span are not judged
                found = found[(found >= t.min() - tolerance) & (found <= t.max() + tolerance)]
            errors = _match(t, found, tolerance) * 1000.0 / fs
            hits = int(np.isfinite(errors).sum())
            rows.append({
                "lead": lead, "wave": wave, "point": point, "n_annotated": len(t),
                "n_detected": len(found), "hits": hits,
                "sensitivity": hits / len(t) if len(t) else np.nan,
                "ppv": hits / len(found) if len(found) else np.nan,
                "mean_error_ms": float(np.nanmean(errors)) if hits else np.nan,
                "sd_error_ms": float(np.nanstd(errors)) if hits else np.nan,
                "_errors": errors[np.isfinite(errors)],
            })  # fmt: skip
    return pd.DataFrame(rows)


def summarise(scores: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """Per wave and boundary over many leads/records: pooled counts, sensitivity, PPV and the
    mean ± SD of every matched error."""
    table = pd.concat(list(scores), ignore_index=True)
    out = []
    for (wave, point), part in table.groupby(["wave", "point"], sort=False):
        errors = np.concatenate(part["_errors"].to_list()) if len(part) else np.zeros(0)
        annotated, detected, hits = (int(part[c].sum()) for c in ("n_annotated", "n_detected",
                                                                     "hits"))  # fmt: skip
        out.append({
            "wave": wave, "point": point, "n_annotated": annotated,
            "sensitivity": hits / annotated if annotated else np.nan,
            "ppv": hits / detected if detected else np.nan,
            "mean_error_ms": float(errors.mean()) if len(errors) else np.nan,
            "sd_error_ms": float(errors.std()) if len(errors) else np.nan,
        })  # fmt: skip
    return pd.DataFrame(out)


def neurokit_delineation(signal: np.ndarray, fs: float) -> Delineation:
    """NeuroKit2's delineation of one lead (its R peaks, then its discrete-wavelet delineation):
    the well-kept reference :func:`score_delineation` compares ecgx's own one with. Needs the
    optional ``neurokit2`` package (``pip install -e '.[delineation]'``)."""
    import warnings

    try:
        import neurokit2 as nk
    except ImportError as err:
        from ecgx.errors import ConfigValueError

        raise ConfigValueError("method=neurokit2 needs neurokit2: pip install -e '.[delineation]'"
                               ) from err  # fmt: skip
    with warnings.catch_warnings():  # its NaN-boundary and frequency notices, not ours
        warnings.simplefilter("ignore")
        _, peaks = nk.ecg_peaks(signal, sampling_rate=fs)
        _, waves = nk.ecg_delineate(signal, peaks, sampling_rate=fs, method="dwt")

    def field(key: str) -> np.ndarray:
        values = np.asarray(waves.get(key, []), dtype=float)
        return np.nan_to_num(values, nan=-1).astype(np.int64)

    return Delineation(
        fs=float(fs), r_peaks=np.asarray(peaks["ECG_R_Peaks"], dtype=np.int64),
        qrs_on=field("ECG_R_Onsets"), qrs_off=field("ECG_R_Offsets"),
        p_on=field("ECG_P_Onsets"), p_peak=field("ECG_P_Peaks"), p_off=field("ECG_P_Offsets"),
        t_on=field("ECG_T_Onsets"), t_peak=field("ECG_T_Peaks"), t_off=field("ECG_T_Offsets"),
        n_samples=int(np.asarray(signal).shape[-1]),
    )  # fmt: skip


def score_ludb(root: str, method: str = "ecgx", records: list[str] | None = None) -> pd.DataFrame:
    """A delineation method against LUDB's cardiologists, pooled over every lead of ``records``
    (all under ``root`` by default): ``ecgx`` delineates each record once from all 12 leads (as
    the glocal attribution uses it), ``neurokit2`` each lead on its own."""
    from ecgx.datasets.ludb import LUDB, wave_boundaries
    from ecgx.explain.delineation import delineate
    from ecgx.formats.record import LEADS

    if method not in ("ecgx", "neurokit2"):
        from ecgx.errors import ConfigValueError

        raise ConfigValueError(f"method={method!r}: expected ecgx or neurokit2")
    reader = LUDB(root)
    reader.ensure()
    meta = reader.metadata()
    if records is not None:
        meta = meta[meta["record_id"].isin(records)]
    scores = []
    for row in meta.to_dict("records"):
        record = reader.read(row)
        shared = delineate(record.signal, record.fs) if method == "ecgx" else None
        for k, lead in enumerate(LEADS):
            found = shared or neurokit_delineation(record.signal[k], record.fs)
            truth = wave_boundaries(reader.root, row["record_id"], lead)
            scores.append(score_delineation(found, truth, lead))
    return summarise(scores)
