"""Explainers scored against the synthetic generator's ground truth.

The synthetic PTB-XL-layout set writes ``ground_truth.npz`` beside its records: per record and
superclass (MI, STTC, CD, HYP) the RMS change each class's findings made to each lead's waves,
by waveform segment (``strength``, (records, classes, leads, segments)). Joined with ecgx's
delineation of the record (which samples are P, PR, QRS, ST, T, TP) it gives a graded
lead × time map of where the class's evidence is; its cells at ≥ ``threshold`` × the record's
strongest form the true mask. Scores (written here: captum has no ground-truth metrics):

- pointing game (Zhang et al. 2018): the sample of largest |attribution| lies in the mask;
- relevance mass (Arras et al. 2022): share of |attribution| inside the mask; chance is the
  mask's share of the record, reported beside it;
- rank correlation: Spearman's ρ between |attribution| and the graded map;
- model randomisation (Adebayo et al. 2018): the layers' weights are re-drawn from the output
  down, cascading; Spearman's ρ of |attribution| before and after must fall.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import nn

from ecgx.errors import ConfigValueError

FILE = "ground_truth.npz"


@dataclass
class GroundTruth:
    record_ids: np.ndarray  # (N,) str
    classes: list[str]
    leads: list[str]
    segments: list[str]
    strength: np.ndarray  # (N, classes, leads, segments)

    def lead_segment(self, record_ids: list[str], classes: list[str]) -> np.ndarray:
        """(B, leads, segments) strength of each record's class; zero where the class has no
        ground truth (NORM, or a class the record's signal does not carry)."""
        position = {r: i for i, r in enumerate(self.record_ids)}
        missing = [r for r in record_ids if r not in position]
        if missing:
            raise ConfigValueError(f"{FILE}: no ground truth for records {missing[:5]}")
        out = np.zeros((len(record_ids), len(self.leads), len(self.segments)))
        for b, (rid, cls) in enumerate(zip(record_ids, classes, strict=True)):
            if cls in self.classes:
                out[b] = self.strength[position[rid], self.classes.index(cls)]
        return out


def load(root: str | Path) -> GroundTruth:
    path = Path(root) / FILE
    if not path.is_file():
        raise ConfigValueError(
            f"explainer.ground_truth: {path} does not exist; only ecgx's synthetic set writes "
            f"it (regenerate an older synthetic set by deleting its folder)"
        )
    with np.load(path) as z:
        return GroundTruth(z["ecg_id"].astype(str), [str(c) for c in z["classes"]],
                           [str(v) for v in z["leads"]], [str(s) for s in z["segments"]],
                           z["strength"].astype(np.float64))  # fmt: skip


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
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.array([spearmanr(np.abs(x).ravel(), g.ravel()).statistic
                         for x, g in zip(a, graded, strict=True)])  # fmt: skip


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
) -> list[tuple[str, float]]:
    """Adebayo et al.'s cascading model randomisation: re-initialise the layers with weights
    from the output towards the input, and after each of ``steps`` evenly spaced stops the
    Spearman ρ between |attribution| of the trained and of the randomised model, per record
    then averaged. ``attribute(net)`` explains the fixed records with ``net``."""
    reference = np.abs(attribute(model).numpy())
    net = copy.deepcopy(model).eval()
    layers = [
        (n, m)
        for n, m in net.named_modules()
        if hasattr(m, "reset_parameters") and any(True for _ in m.parameters(False))
    ]
    if not layers:
        raise ConfigValueError(f"{type(model).__name__} has no layers with weights to randomise")
    layers.reverse()  # the output side first
    stops = sorted({int(round(k)) for k in np.linspace(1, len(layers), min(steps, len(layers)))})
    torch.manual_seed(seed)
    out, done = [], 0
    for stop in stops:
        for _, module in layers[done:stop]:
            module.reset_parameters()
        done = stop
        randomised = np.abs(attribute(net).numpy())
        out.append(
            (layers[stop - 1][0], float(np.nanmean(rank_correlation(randomised, reference))))
        )
    return out
