"""Explainers scored against ground truth: the generator's masks, the scores, the sanity check."""

from __future__ import annotations

import ast

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from ecgx.explain import ground_truth as G
from ecgx.explain import methods as M
from tests.explain.test_methods import LEADS_ON, WINDOW, _known_segment_data, trained_lenet

__all__ = ["trained_lenet"]  # a fixture, shared with test_methods


def test_generator_writes_where_each_class_lies(synthetic_root) -> None:
    truth = G.load(synthetic_root)
    db = pd.read_csv(synthetic_root / "ptbxl_database.csv")
    assert list(truth.record_ids) == db.ecg_id.astype(str).tolist()
    assert truth.strength.shape == (len(db), 4, 12, 6)
    codes = [ast.literal_eval(c) for c in db.scp_codes]
    mi, qrs = truth.classes.index("MI"), truth.segments.index("QRS")
    anteroseptal = [i for i, c in enumerate(codes) if "ASMI" in c]
    assert len(anteroseptal) >= 3
    strongest = truth.strength[anteroseptal, mi, :, qrs].argmax(1)
    # Anteroseptal infarcts change the QRS of the right chest leads, V1-V4.
    assert np.isin(np.array(truth.leads)[strongest], ["V1", "V2", "V3", "V4"]).mean() >= 0.8
    healthy = [i for i, c in enumerate(codes) if set(c) & {"NORM"} and len(c) <= 2]
    # NORM with only a rhythm statement: nothing put into the signal (bar mislabelled records).
    assert (truth.strength[healthy].reshape(len(healthy), -1).max(1) == 0).mean() >= 0.8


def test_missing_ground_truth_is_named(tmp_path) -> None:
    with pytest.raises(Exception, match="ground_truth.npz"):
        G.load(tmp_path)


def _graded(n: int = 4, seed: int = 0) -> np.ndarray:
    """Strength in [0.5, 1] on a few lead × time cells per record, 0 elsewhere."""
    rng = np.random.default_rng(seed)
    support = rng.random((n, 12, 100)) < 0.15
    return np.where(support, rng.uniform(0.5, 1.0, support.shape), 0.0)


def test_exact_attributions_of_a_linear_model_score_one() -> None:
    graded = _graded()
    weights = torch.from_numpy(graded)

    class Linear(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:  # one record's own weights
            return (x * weights).sum((1, 2))[:, None]

    x = torch.randn(4, 12, 100, dtype=torch.float64)
    a = M.Saliency(Linear()).attribute(x, 0).numpy()  # the gradient: exactly the weights
    s = G.scores(a, graded)
    assert s["pointing_game"] == 1.0
    assert s["relevance_mass"] == pytest.approx(1.0)
    assert s["rank_correlation"] == pytest.approx(1.0)
    assert s["chance_mass"] == pytest.approx((graded > 0).mean())


def test_a_random_ranking_scores_chance() -> None:
    graded = _graded(300, seed=1)
    a = np.random.default_rng(2).standard_normal(graded.shape)
    s = G.scores(a, graded)
    assert s["relevance_mass"] == pytest.approx(s["chance_mass"], abs=0.01)
    assert s["pointing_game"] == pytest.approx(s["chance_mass"], abs=0.07)
    assert abs(s["rank_correlation"]) < 0.02


def test_records_without_ground_truth_are_not_scored() -> None:
    graded = _graded(3)
    graded[1] = 0
    s = G.scores(np.ones_like(graded), graded)
    assert s["ground_truth_records"] == 2
    assert G.scores(np.ones((2, 12, 5)), np.zeros((2, 12, 5))) == {"ground_truth_records": 0.0}


def _known_mask(n: int) -> np.ndarray:
    graded = np.zeros((n, 12, 250))
    graded[:, list(LEADS_ON), WINDOW] = 1.0
    return graded


def test_integrated_gradients_beats_saliency_on_a_trained_model(trained_lenet) -> None:
    x, y = _known_segment_data(32, 4)
    x = x[y == 1]
    graded = _known_mask(len(x))
    ig = G.scores(M.IntegratedGradients(trained_lenet, n_steps=16).attribute(x, 1).numpy(), graded)
    saliency = G.scores(M.Saliency(trained_lenet).attribute(x, 1).numpy(), graded)
    assert ig["relevance_mass"] > saliency["relevance_mass"] > saliency["chance_mass"]


def test_randomising_the_weights_changes_a_faithful_map_not_an_edge_detector(trained_lenet):
    x, _ = _known_segment_data(8, 5)
    before = [p.detach().clone() for p in trained_lenet.parameters()]
    steps = G.cascading_randomisation(
        trained_lenet, lambda net: M.Saliency(net).attribute(x, 1), steps=3
    )
    assert len(steps) == 3 and steps[0][0] == "fc2"  # the output layer first
    assert steps[-1][1] < 0.5
    # A "map" that ignores the model (the input's own magnitude) survives randomisation.
    blind = G.cascading_randomisation(trained_lenet, lambda net: x.abs(), steps=3)
    assert all(rho == pytest.approx(1.0) for _, rho in blind)
    assert all(torch.equal(p, q) for p, q in zip(before, trained_lenet.parameters()))
