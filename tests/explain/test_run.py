"""The explainer run: aggregation, training-time explanation and ``ecgx explain``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from ecgx.commands.explain import explain_run
from ecgx.commands.train import train
from ecgx.errors import ConfigValueError
from ecgx.explain.run import lead_shares, pick_targets, population_matrix


def test_lead_shares_and_population_by_class() -> None:
    a = np.zeros((3, 2, 4))
    a[0, 0] = [1, -1, 0, 0]  # record 0: all on lead 0
    a[1, :, 0] = [1, 3]  # record 1: 1/4 on lead 0, 3/4 on lead 1
    a[2, 1, 2] = -5  # record 2: all on lead 1
    shares = lead_shares(a)
    np.testing.assert_allclose(shares, [[1, 0], [0.25, 0.75], [0, 1]])
    matrix, present = population_matrix(shares, np.array([2, 2, 0]), num_classes=3)
    assert present == [0, 2]
    np.testing.assert_allclose(matrix, [[0, 1], [0.625, 0.375]])
    assert lead_shares(np.zeros((1, 2, 3))).sum() == 0  # no attribution: no share, no NaN


def test_pick_targets() -> None:
    probs = torch.tensor([[0.1, 0.9], [0.8, 0.3]])
    truth = torch.tensor([[1, 0], [0, 0]])
    assert pick_targets(probs, truth, "predicted", ["A", "B"]).tolist() == [1, 0]
    assert pick_targets(probs, truth, "true", ["A", "B"]).tolist() == [0, 0]  # none: predicted
    assert pick_targets(probs, truth, "B", ["A", "B"]).tolist() == [1, 1]
    with pytest.raises(ConfigValueError, match="explainer.target"):
        pick_targets(probs, truth, "C", ["A", "B"])


@pytest.mark.slow
def test_train_explains_at_the_end_and_ecgx_explain_adds_to_the_run(compose_train) -> None:
    cfg = compose_train("debug=smoke", "experiment_name=explain-test", "explainer=saliency",
                        "explainer.records=6", "explainer.plots=1")  # fmt: skip
    metrics = train(cfg)
    assert 0 <= metrics["explain/saliency/deletion_auc"] <= 1
    client = MlflowClient(cfg.tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("explain-test").experiment_id])
    run_id = run.info.run_id
    logged = {a.path for a in client.list_artifacts(run_id, "explain/saliency")}
    for name in ("attributions.npz", "population_class_x_lead.png", "glocal_lead_x_segment.png",
                 "deletion_insertion.png"):  # fmt: skip
        assert f"explain/saliency/{name}" in logged, name
    assert sum(p.endswith(".png") and "/record_" in p for p in logged) == 1
    for key in (
        "deletion_auc",
        "insertion_auc",
        "random_deletion_auc",
        "segment_share_QRS",
        "infidelity",
        "sensitivity_max",
    ):
        assert f"explain/saliency/{key}" in run.data.metrics, key

    explain_cfg = compose_train(f"run_id={run_id}", "explainer=grad_cam", "explainer.records=4",
                                "explainer.plots=0", config="explain")  # fmt: skip
    result = explain_run(explain_cfg)
    assert result.attributions.shape == (4, 12, 1000)  # 10 s at 100 Hz
    assert (result.attributions >= 0).all()
    ids = client.get_run(run_id).data.metrics
    assert "explain/grad_cam/insertion_auc" in ids
    tcav = explain_run(compose_train(f"run_id={run_id}", "explainer=tcav",
                                     "explainer.target=NORM", "explainer.n_random_sets=3",
                                     "explainer.records=8", "explainer.concepts.wide_qrs.value=80",
                                     "explainer.concept_size=10", "explainer.random_pool=40",
                                     config="explain"))  # fmt: skip
    for concept in ("wide_qrs", "old_age"):
        assert 0 <= tcav.metrics[f"{concept}/stages/score"] <= 1
        assert 0 <= tcav.metrics[f"{concept}/stages/p_value"] <= 1
    logged = {a.path for a in client.list_artifacts(run_id, "explain/tcav")}
    assert {"explain/tcav/tcav.csv", "explain/tcav/tcav_scores.png"} <= logged
    # LRP runs on the residual default model; every explainer is scored against the synthetic
    # set's ground truth and the run's leaderboard lists them all.
    lrp = explain_run(compose_train(f"run_id={run_id}", "explainer=lrp", "explainer.records=12",
                                    "explainer.target='true'", "explainer.plots=0",
                                    "explainer.sensitivity_records=0",
                                    "explainer.randomisation_steps=2", config="explain"))  # fmt: skip
    assert lrp.metrics["ground_truth_records"] > 0  # records whose true class has a signature
    assert 0 < lrp.metrics["chance_mass"] < 1 and 0 <= lrp.metrics["pointing_game"] <= 1
    assert -1 <= lrp.metrics["randomisation_all_layers"] <= 1
    metrics = client.get_run(run_id).data.metrics
    assert metrics["explain/lrp/relevance_mass"] == pytest.approx(lrp.metrics["relevance_mass"])
    board = pd.read_csv(client.download_artifacts(run_id, "explain/leaderboard.csv"))
    assert set(board.explainer) == {"saliency", "grad_cam", "lrp"}
    row = board.set_index("explainer").loc["lrp"]
    assert row.relevance_mass == pytest.approx(lrp.metrics["relevance_mass"])
    assert row.deletion_auc == pytest.approx(lrp.metrics["deletion_auc"])


def test_imle_net_attention_run_writes_the_three_levels(compose_train, tmp_path) -> None:
    from hydra.utils import instantiate

    from ecgx.explain.run import explain
    from ecgx.models.catalog import build

    cfg = compose_train("model=imle_net", "explainer=attention", "explainer.records=3",
                        "explainer.plots=1", "explainer.faithfulness=false")  # fmt: skip
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("test")
    net = build("imle_net", in_channels=12, num_classes=datamodule.num_classes)
    result = explain(cfg.explainer, net, datamodule, "multilabel", tmp_path / "out")
    names = {p.name for p in result.files}
    rid = result.record_ids[0]
    for level in ("beat", "rhythm", "channel"):
        assert f"attention_{level}_{rid}.png" in names
        assert (tmp_path / "out" / f"attention_{level}_{rid}.png").stat().st_size > 5_000
    assert result.attributions.min() >= 0 and result.attributions.max() <= 1
    assert "segment_share_QRS" in result.metrics and "deletion_auc" not in result.metrics


def test_glocal_uses_user_soft_segmentations(compose_train, tmp_path) -> None:
    """Soft masks given as files replace the delineation; XAI4ECG's uint8 (samples, leads,
    classes) layout with fine classes mapped onto the six segments."""
    from omegaconf import OmegaConf

    from ecgx.explain.run import _glocal, _segment_masks

    n = 100
    seg = np.zeros((n, 12, 3), dtype=np.uint8)
    seg[:40, :, 0] = 255  # fine class 0 -> QRS on samples 0..39
    seg[40:, :, 2] = 255  # fine class 2 -> T on samples 40..99
    np.save(tmp_path / "r1.npy", seg)
    node = OmegaConf.create({"segmentation_dir": str(tmp_path),
                             "segmentation_mapping": {0: "QRS", 2: "T"}})  # fmt: skip
    masks = _segment_masks(node, ["r1"], np.zeros((1, 12, n)), 100.0)
    a = np.zeros((1, 12, n))
    a[0, 3, 10] = 4.0  # all attribution on aVR inside the QRS mask
    metrics = _glocal(a, masks, [f"L{i}" for i in range(12)], "x", tmp_path, [])
    assert metrics["segment_share_QRS"] == pytest.approx(1.0)
    assert metrics["segment_share_T"] == 0.0 and metrics["segment_share_P"] == 0.0
    with pytest.raises(ConfigValueError, match="r2"):
        _segment_masks(node, ["r2"], np.zeros((1, 12, n)), 100.0)
