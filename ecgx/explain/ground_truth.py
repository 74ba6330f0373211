"""Explainers scored against the synthetic generator's ground truth.

The synthetic PTB-XL-layout set writes ``ground_truth.npz`` beside its records: per record and
superclass (MI, STTC, CD, HYP) the RMS change each class's findings made to each lead's waves,
by waveform segment (``strength``, (records, classes, leads, segments)), and every beat's
P, QRS and T on/offsets as the generator drew them (``beat_bounds``, s). Those bounds, carried
through the run's transforms onto the explained view (:meth:`GroundTruth.segment_masks`), say
which samples are P, PR, QRS, ST, T and TP (sets written before the bounds were: ecgx's
delineation of the view instead); joined with the strengths they give a graded lead × time
map of where the class's evidence is; its cells at ≥ ``threshold`` × the record's strongest
form the true mask. Scores (written here: captum has no ground-truth metrics):

- pointing game (Zhang et al. 2018): the sample of largest |attribution| lies in the mask;
- relevance mass (Arras et al. 2022): share of |attribution| inside the mask; chance is the
  mask's share of the record, reported beside it;
- rank correlation: Spearman's ρ between |attribution| and the graded map;
- model randomisation (Adebayo et al. 2018): the layers' weights are re-drawn from the output
  down, cascading; Spearman's ρ of |attribution| before and after must fall.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ecgx.errors import ConfigValueError
from ecgx.transforms.signal import TimeAxis

FILE = "ground_truth.npz"


@dataclass
class GroundTruth:
    record_ids: np.ndarray  # (N,) str
    classes: list[str]
    leads: list[str]
    segments: list[str]
    strength: np.ndarray  # (N, classes, leads, segments)
    beat_record: np.ndarray | None = None  # (beats,) row of record_ids
    beat_bounds: np.ndarray | None = None  # (beats, 6) p/qrs/t on, off in s from sample 0
    duration_s: float | None = None  # of every record

    def rows(self, record_ids: list[str]) -> np.ndarray:
        position = {r: i for i, r in enumerate(self.record_ids)}
        missing = [r for r in record_ids if r not in position]
        if missing:
            raise ConfigValueError(f"{FILE}: no ground truth for records {missing[:5]}")
        return np.array([position[r] for r in record_ids], dtype=np.int64)

    def segment_masks(self, record_ids: list[str], axis: TimeAxis) -> np.ndarray | None:
        """(B, segments, axis.n) one-hot masks of the segments on a view whose sample i lies
        at ``axis.start_s + i / axis.fs`` s of the record (padding: no segment); None for a
        set written without beat bounds. Where two beats' waves overlap, QRS wins over T
        and P, and they over the PR and ST intervals."""
        if self.beat_bounds is None or self.beat_record is None or self.duration_s is None:
            return None
        rows = self.rows(record_ids)
        order = np.argsort(self.beat_record, kind="stable")
        sorted_rec = self.beat_record[order]
        first = np.searchsorted(sorted_rec, rows, "left")
        last = np.searchsorted(sorted_rec, rows, "right")
        beat = np.concatenate([order[a:b] for a, b in zip(first, last, strict=True)])
        which = np.repeat(np.arange(len(rows)), last - first)
        # Sample i covers [t_i, t_i+1): a boundary at t starts at the first sample at/after t.
        edge = np.ceil((self.beat_bounds[beat].astype(np.float64) - axis.start_s) * axis.fs
                       - 1e-6).clip(0, axis.n).astype(np.int64)  # fmt: skip
        p_on, p_off, q_on, q_off, t_on, t_off = edge.T
        label = np.full((len(rows), axis.n), self.segments.index("TP"), dtype=np.int8)
        paint = [("PR", p_off, q_on), ("ST", q_off, t_on), ("P", p_on, p_off),
                 ("T", t_on, t_off), ("QRS", q_on, q_off)]  # fmt: skip
        for name, lo, hi in paint:  # later entries win where beats overlap
            label[_covered(which, lo, hi, label.shape)] = self.segments.index(name)
        inside = _covered(np.arange(len(rows)),
                          np.full(len(rows), _edge(0.0, axis)),
                          np.full(len(rows), _edge(self.duration_s, axis)), label.shape)  # fmt: skip
        masks = np.zeros((len(rows), len(self.segments), axis.n))
        b, t = np.nonzero(inside)
        masks[b, label[b, t], t] = 1.0
        return masks

    def lead_segment(self, record_ids: list[str], classes: list[str]) -> np.ndarray:
        """(B, leads, segments) strength of each record's class; zero where the class has no
        ground truth (NORM, or a class the record's signal does not carry)."""
        rows = self.rows(record_ids)
        out = np.zeros((len(record_ids), len(self.leads), len(self.segments)))
        for b, (row, cls) in enumerate(zip(rows, classes, strict=True)):
            if cls in self.classes:
                out[b] = self.strength[row, self.classes.index(cls)]
        return out


def _edge(t: float, axis: TimeAxis) -> int:
    return int(np.clip(np.ceil((t - axis.start_s) * axis.fs - 1e-6), 0, axis.n))


def _covered(
    which: np.ndarray, lo: np.ndarray, hi: np.ndarray, shape: tuple[int, int]
) -> np.ndarray:
    """(records, samples) True inside any interval [lo, hi) of its record (``which``): one
    difference array and a cumulative sum instead of a loop over intervals."""
    d = np.zeros((shape[0], shape[1] + 1), dtype=np.int32)
    keep = hi > lo
    np.add.at(d, (which[keep], lo[keep]), 1)
    np.add.at(d, (which[keep], hi[keep]), -1)
    return d.cumsum(1)[:, : shape[1]] > 0


def load(root: str | Path) -> GroundTruth:
    path = Path(root) / FILE
    if not path.is_file():
        raise ConfigValueError(
            f"explainer.ground_truth: {path} does not exist; only ecgx's synthetic set writes "
            f"it (regenerate an older synthetic set by deleting its folder)"
        )
    with np.load(path) as z:
        beats = "beat_bounds" in z.files
        return GroundTruth(z["ecg_id"].astype(str), [str(c) for c in z["classes"]],
                           [str(v) for v in z["leads"]], [str(s) for s in z["segments"]],
                           z["strength"].astype(np.float64),
                           z["beat_record"].astype(np.int64) if beats else None,
                           z["beat_bounds"] if beats else None,
                           float(z["duration_s"]) if beats else None)  # fmt: skip


def graded_map(lead_segment: np.ndarray, segment_masks: np.ndarray) -> np.ndarray:
    """(B, leads, K) strengths over (B, K, T) or (B, leads, K, T) segment masks -> (B, leads, T)."""
    if segment_masks.ndim == 3:
        return np.einsum("blk,bkt->blt", lead_segment, segment_masks)
    return np.einsum("blk,blkt->blt", lead_segment, segment_masks)


def true_mask(graded: np.ndarray, threshold: float = 0.25) -> np.ndarray:
    """Cells at ≥ ``threshold`` × the record's largest strength (none for an all-zero map)."""
    peak = graded.reshape(len(graded), -1).max(1)
    return (graded >= threshold * peak[:, None, None]) & (peak[:, None, None] > 0)


def pointing_game(a: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(B,) 1.0 where the largest |attribution| lies in the mask."""
    flat = np.abs(a).reshape(len(a), -1)
    return mask.reshape(len(a), -1)[np.arange(len(a)), flat.argmax(1)].astype(float)


def relevance_mass(a: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(B,) share of |attribution| inside the mask (NaN for an all-zero attribution)."""
    mag = np.abs(a).reshape(len(a), -1)
    total = mag.sum(1)
    inside = (mag * mask.reshape(len(a), -1)).sum(1)
    return np.divide(inside, total, out=np.full(len(a), np.nan), where=total > 0)


def rank_correlation(a: np.ndarray, graded: np.ndarray) -> np.ndarray:
    """(B,) Spearman's ρ between |attribution| and the graded ground-truth map (NaN where
    either is constant: no ranking to compare)."""
    # The graded map is constant over long runs of each lead: the stable sort (timsort, which
    # merges runs) ranks it ~15× faster than the default one, which is faster on attributions.
    return ranks_correlation(average_ranks(np.abs(a)), average_ranks(graded, kind="stable"))


def average_ranks(x: np.ndarray, kind: str = "quicksort") -> np.ndarray:
    """(B, …) -> (B, cells): each record's cells ranked 1..cells, ties sharing their mean rank
    (scipy's ``rankdata(method="average")`` row by row; ``kind``: numpy's sort). Written here
    because scipy ranks one row per call, in float64: one sort over the batch in the maps' own
    precision is what makes the scores and the randomisation check cheap beside a gradient."""
    x = x.reshape(len(x), -1)
    b, n = x.shape
    if x.dtype == np.float32 and kind == "quicksort" and not np.signbit(x).any():
        order, s = _sorted_float32(x)
    else:
        order = np.argsort(x, axis=1, kind=kind)  # type: ignore[call-overload]
        s = np.take_along_axis(x, order, axis=1)
    tie = s[:, 1:] == s[:, :-1]  # sorted cells col and col + 1 are equal
    if np.count_nonzero(tie) > b * n // 16:  # mostly ties (a graded map): every run numbered
        new = np.ones((b, n), dtype=bool)
        new[:, 1:] = ~tie
        flat = new.ravel()
        starts = np.flatnonzero(flat)
        counts = np.diff(np.append(starts, b * n))
        ranked = ((starts % n) + (counts + 1) / 2)[np.cumsum(flat) - 1].reshape(b, n)
    else:
        ranked = _sparse_tie_ranks(tie, b, n)
    out = np.empty((b, n))
    np.put_along_axis(out, order, ranked, axis=1)
    return out


def _sparse_tie_ranks(tie: np.ndarray, b: int, n: int) -> np.ndarray:
    """Ranks of sorted rows with a few ties (an attribution map's): positions 1..n, each run
    of equal cells given its mean rank, touching only the tied cells."""
    ranked = np.tile(np.arange(1.0, n + 1), (b, 1))
    row, col = np.nonzero(tie)
    if len(row):
        first = np.ones(len(row), dtype=bool)
        first[1:] = (row[1:] != row[:-1]) | (col[1:] != col[:-1] + 1)
        size = np.diff(np.append(np.flatnonzero(first), len(row))) + 1
        start = col[first]
        cells = np.arange(size.sum()) - np.repeat(np.cumsum(size) - size, size)
        ranked[np.repeat(row[first], size), np.repeat(start, size) + cells] = np.repeat(
            start + (size + 1) / 2, size
        )
    return ranked


def _sorted_float32(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """argsort and sorted values of non-negative float32 rows from one sort of int64 keys:
    a non-negative float's bits order as its value, so (bits << index width) | index sorts
    values with their cells attached. numpy's vectorised sort of the keys is faster than its
    argsort of the floats (2.5 against 3.2 ms for 8 × 12,000 cells here)."""
    width = max(1, int(x.shape[1] - 1).bit_length())
    keys = x.view(np.int32).astype(np.int64) << width
    keys |= np.arange(x.shape[1], dtype=np.int64)
    keys.sort(axis=1)
    order = keys & ((1 << width) - 1)
    values = (keys >> width).astype(np.int32).view(np.float32)
    return order, values


def ranks_correlation(ra: np.ndarray, rb: np.ndarray) -> np.ndarray:
    """(B,) Pearson's r of two rank arrays row by row (Spearman's ρ); NaN for a constant row."""
    ra = ra - ra.mean(1, keepdims=True)
    rb = rb - rb.mean(1, keepdims=True)
    norm = np.sqrt(np.einsum("ij,ij->i", ra, ra) * np.einsum("ij,ij->i", rb, rb))
    out = np.full(len(ra), np.nan)
    np.divide(np.einsum("ij,ij->i", ra, rb), norm, out=out, where=norm > 0)
    return np.clip(out, -1.0, 1.0)


def scores(a: np.ndarray, graded: np.ndarray, threshold: float = 0.25) -> dict[str, float]:
    """Mean scores over the records that have ground truth, with the chance level of each."""
    mask = true_mask(graded, threshold)
    has = mask.reshape(len(mask), -1).any(1)
    if not has.any():
        return {"ground_truth_records": 0.0}
    a, graded, mask = a[has], graded[has], mask[has]
    area = mask.reshape(len(mask), -1).mean(1)
    return {
        "ground_truth_records": float(has.sum()),
        "pointing_game": float(np.mean(pointing_game(a, mask))),
        "relevance_mass": float(np.nanmean(relevance_mass(a, mask))),
        "chance_mass": float(area.mean()),  # also the pointing game's chance
        "rank_correlation": float(np.nanmean(rank_correlation(a, graded))),
    }


def cascading_randomisation(
    model: nn.Module,
    attribute: Callable[[nn.Module], torch.Tensor],
    steps: int = 4,
    seed: int = 0,
    reference: torch.Tensor | np.ndarray | None = None,
) -> list[tuple[str, float]]:
    """Adebayo et al.'s cascading model randomisation: re-initialise the layers with weights
    from the output towards the input, and after each of ``steps`` evenly spaced stops the
    Spearman ρ between |attribution| of the trained and of the randomised model, per record
    then averaged. ``attribute(net)`` explains the fixed records with ``net``; ``reference``:
    the trained model's attributions of them where the caller has them already (else one
    more ``attribute(model)``)."""
    layers = [
        (n, m)
        for n, m in model.named_modules()
        if hasattr(m, "reset_parameters") and any(True for _ in m.parameters(False))
    ]
    if not layers:
        raise ConfigValueError(f"{type(model).__name__} has no layers with weights to randomise")
    layers.reverse()  # the output side first
    stops = sorted({int(round(k)) for k in np.linspace(1, len(layers), min(steps, len(layers)))})
    if reference is None:
        reference = attribute(model)
    if isinstance(reference, torch.Tensor):
        reference = reference.detach().numpy()
    reference = average_ranks(np.abs(reference))  # ranked once for every stop
    # The layers are re-drawn in place and the trained weights put back afterwards: a copy of
    # the module (its Python objects) cost as much as the attribution of a small model.
    trained = {k: v.detach().clone() for k, v in model.state_dict().items()}
    was_training = model.training
    model.eval()
    torch.manual_seed(seed)
    out, done = [], 0
    try:
        for stop in stops:
            for _, module in layers[done:stop]:
                module.reset_parameters()
            done = stop
            randomised = average_ranks(np.abs(attribute(model).numpy()))
            rho = ranks_correlation(randomised, reference)
            out.append((layers[stop - 1][0], float(np.nanmean(rho)) if np.isfinite(rho).any()
                        else float("nan")))  # fmt: skip
    finally:
        with torch.no_grad():
            model.load_state_dict(trained)
        model.train(was_training)
    return out
