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


def test_generator_writes_where_each_segment_lies(synthetic_root) -> None:
    import wfdb

    from ecgx.datasets.synthetic import BEAT_FIELDS
    from ecgx.explain.delineation import delineate
    from ecgx.transforms.signal import TimeAxis

    truth = G.load(synthetic_root)
    assert truth.duration_s == 10 and truth.beat_bounds.shape[1] == len(BEAT_FIELDS)
    ids = [str(i) for i in range(1, 13)]
    masks = truth.segment_masks(ids, TimeAxis(0.0, 100.0, 1000))
    assert masks.shape == (12, 6, 1000) and (masks.sum(1) == 1).all()
    qrs = truth.segments.index("QRS")
    for k, rid in enumerate(ids):
        x = wfdb.rdsamp(str(synthetic_root / f"records100/00000/{int(rid):05d}_lr"))[0].T
        found = delineate(x, 100.0)
        # The delineation's R peaks lie in the generator's QRS, and its QRS samples mostly do.
        assert masks[k, qrs, found.r_peaks].all(), rid
        ecgx_qrs = found.mask(1000)[qrs] > 0
        assert masks[k, qrs, ecgx_qrs].mean() > 0.85, rid


def test_segments_follow_the_views_time_axis(synthetic_root) -> None:
    """The masks of a transformed view are the record's masks moved as the view's samples were:
    a centre crop is a slice, a 500 Hz time line decimated by 5 lands on the 100 Hz one,
    padding has no segment, and a view that is not a time series (a chart) has no axis."""
    from ecgx.transforms.chart import ChartImage
    from ecgx.transforms.signal import FixedLength, RandomCrop, Resample, TimeAxis
    from ecgx.transforms.signal import TransformPipeline as Pipeline

    truth = G.load(synthetic_root)
    ids = ["3", "7"]
    whole = truth.segment_masks(ids, TimeAxis(0.0, 100.0, 1000))
    crop = Pipeline(online=[RandomCrop(250)])
    axis = crop.eval_time_axis(TimeAxis(0.0, 100.0, 1000))
    assert axis == TimeAxis(3.75, 100.0, 250)
    assert np.array_equal(truth.segment_masks(ids, axis), whole[..., 375:625])
    read_500 = TimeAxis(0.0, 500.0, 5000)
    down = Pipeline([Resample(100), FixedLength(1200, "center")])
    axis = down.eval_time_axis(read_500)
    assert axis == TimeAxis(-1.0, 100.0, 1200)
    padded = truth.segment_masks(ids, axis)
    assert np.array_equal(padded[..., 100:1100], whole) and not padded[..., :100].any()
    assert not padded[..., 1100:].any()
    assert Pipeline([ChartImage()]).eval_time_axis(read_500) is None


def test_rank_correlation_is_spearmans_rho_with_ties_and_constant_maps() -> None:
    from scipy.stats import rankdata, spearmanr

    rng = np.random.default_rng(3)
    a = rng.standard_normal((6, 12, 40)).astype(np.float32)
    a[:, :, :8] = 0  # ties in |attribution| (a dead region)
    graded = np.repeat(rng.integers(0, 4, (6, 12, 4)) * 0.5, 10, axis=2)  # few levels
    graded[4] = 0.7  # constant map: no ranking
    flat = np.abs(a).reshape(6, -1)
    assert np.array_equal(G.average_ranks(flat), rankdata(flat, axis=1))
    few = np.abs(rng.standard_normal((3, 480)).astype(np.float32))  # a few ties, in runs of 2-3
    few[0, [5, 9]] = few[0, 7]
    few[2, 100] = few[2, 200]
    assert np.array_equal(G.average_ranks(few), rankdata(few, axis=1))
    assert np.array_equal(G.average_ranks(few.astype(np.float64)), rankdata(few, axis=1))
    assert np.array_equal(G.average_ranks(graded), rankdata(graded.reshape(6, -1), axis=1))
    rho = G.rank_correlation(a, graded)
    expected = [spearmanr(flat[i], graded[i].ravel()).statistic for i in (0, 1, 2, 3, 5)]
    np.testing.assert_allclose(rho[[0, 1, 2, 3, 5]], expected, atol=1e-12)
    assert np.isnan(rho[4])


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
    before = {k: v.detach().clone() for k, v in trained_lenet.state_dict().items()}
    saliency = lambda net: M.Saliency(net).attribute(x, 1)  # noqa: E731
    steps = G.cascading_randomisation(trained_lenet, saliency, steps=3)
    assert len(steps) == 3 and steps[0][0] == "fc2"  # the output layer first
    assert steps[-1][1] < 0.5
    # A run passes the attributions it already has as the trained model's: the same answer.
    again = G.cascading_randomisation(trained_lenet, saliency, steps=3,
                                      reference=saliency(trained_lenet))  # fmt: skip
    assert again == steps
    # A "map" that ignores the model (the input's own magnitude) survives randomisation.
    blind = G.cascading_randomisation(trained_lenet, lambda net: x.abs(), steps=3)
    assert all(rho == pytest.approx(1.0) for _, rho in blind)
    # Re-drawn in place, then the trained weights and BatchNorm statistics are put back.
    after = trained_lenet.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_an_explain_run_takes_the_segments_of_its_own_view(compose_train) -> None:
    """``ecgx explain``'s masks on a centre-cropped view: the generator's segments of those
    2.5 s, not a delineation (which the crop's edges would cut)."""
    from hydra.utils import instantiate

    from ecgx.explain.run import _inputs, truth_masks
    from ecgx.transforms.signal import TimeAxis

    dm = instantiate(compose_train("transform=random_crop").data)
    dm.prepare_data()
    dm.setup("test")
    rows = dm.indices["test"][:3]
    _, raw = _inputs(dm, rows)
    ids = dm.cache.meta["record_id"].iloc[rows].astype(str).tolist()
    truth = G.load(dm.dataset.root)
    got = truth_masks(truth, ids, dm, raw.shape[-1])
    assert raw.shape[-1] == 250
    assert np.array_equal(got, truth.segment_masks(ids, TimeAxis(0, 100.0, 1000))[..., 375:625])
    truth.beat_bounds = None  # a set written before the bounds: the delineation stands in
    assert truth_masks(truth, ids, dm, 250) is None
