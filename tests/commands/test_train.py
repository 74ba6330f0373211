"""A smoke training run end to end into a temporary MLflow store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from ecgx.commands.train import train


@pytest.mark.slow
def test_smoke_run_logs_config_metrics_and_artifacts(compose_train, tmp_path) -> None:
    cfg = compose_train("debug=smoke", "experiment_name=smoke-test")
    metrics = train(cfg)
    assert 0.0 <= metrics["test/macro_auroc"] <= 1.0

    client = MlflowClient(cfg.tracking_uri)
    exp = client.get_experiment_by_name("smoke-test")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "compact_resnet-s0"
    params = run.data.params
    assert params["model._target_"] == "ecgx.models.compact_resnet.CompactResNet1d"
    assert params["dataset.task"] == "superdiagnostic"
    assert params["module.optimizer.lr"] == "0.001"
    assert params["data/classes"] == "CD,HYP,MI,NORM,STTC"
    assert int(params["data/n_train"]) > int(params["data/n_test"]) > 0
    for key in ("test/macro_auroc", "test/macro_f1", "test/loss", "test/auroc_NORM",
                "val/macro_auroc", "train/loss"):  # fmt: skip
        assert key in run.data.metrics, key
    assert run.data.metrics["test/macro_auroc"] == pytest.approx(metrics["test/macro_auroc"])
    m = run.data.metrics
    for key in ("test/fmax_ptbxl", "test/fmax_sample", "test/mean_accuracy", "test/macro_auprc",
                "test/macro_f1_tuned", "test/threshold_NORM", "test/f1_tuned_MI"):  # fmt: skip
        assert key in m, key
    assert m["test/macro_auroc_ci_low"] <= m["test/macro_auroc"] <= m["test/macro_auroc_ci_high"]
    assert len(run.data.tags["ecgx.config_hash"]) == 16
    assert "ecgx.sweep_id" not in run.data.tags  # a single run belongs to no sweep

    def files(path: str = "") -> set[str]:
        found = set()
        for item in client.list_artifacts(run.info.run_id, path):
            found |= files(item.path) if item.is_dir else {item.path}
        return found

    logged = files()
    assert {"config.yaml", "plots/roc_test.png", "predictions/test_predictions.csv",
            "data/splits.csv"} <= logged  # fmt: skip
    assert any(p.startswith("checkpoints/") and p.endswith(".ckpt") for p in logged)
    local = client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))
    assert yaml.safe_load(Path(local).read_text())["model"]["_target_"].endswith("CompactResNet1d")
    png = client.download_artifacts(run.info.run_id, "plots/roc_test.png", str(tmp_path))
    assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    history = client.get_metric_history(run.info.run_id, "val/macro_auroc")
    assert len(history) >= 1
    overrides = json.loads(run.data.tags["ecgx.overrides"])
    assert {"debug=smoke", "experiment_name=smoke-test"} <= set(overrides)
    assert run.data.params["choice/model"] == "compact_resnet"


@pytest.mark.slow
def test_regression_smoke_run(compose_train, synthetic_root, tmp_path) -> None:
    """PTB-XL+-style targets (a table keyed by ecg_id) through MSE, MAE/R² and predictions."""
    import numpy as np
    import pandas as pd

    from ecgx.formats.record import LEADS

    db = pd.read_csv(synthetic_root / "ptbxl_database.csv")
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"ecg_id": db["ecg_id"], "HR": rng.normal(70, 5, len(db))})
    for lead in LEADS:
        table[f"T_Amp_{lead}"] = rng.normal(0.2, 0.05, len(db))
    table.loc[3, "T_Amp_V2"] = np.nan  # a record with a missing target is left out
    features = tmp_path / "unig_features.csv"
    table.to_csv(features, index=False)

    cfg = compose_train("debug=smoke", "experiment_name=regression-test",
                        "dataset.task=regression", f"dataset.features_csv={features}",
                        "dataset.target_columns=[T_Amp_*]", "module.task=regression",
                        "monitor=val/loss", "monitor_mode=min")  # fmt: skip
    metrics = train(cfg)
    assert {"test/r2", "test/mae", "test/mae_T_Amp_V6", "test/r2_T_Amp_I"} <= set(metrics)
    assert "test/macro_auroc" not in metrics
    client = MlflowClient(cfg.tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("regression-test").experiment_id])
    assert run.data.params["data/classes"] == ",".join(f"T_Amp_{lead}" for lead in LEADS)
    assert int(run.data.params["data/n_unlabelled_dropped"]) == 1
    local = client.download_artifacts(run.info.run_id, "predictions/test_predictions.csv",
                                      str(tmp_path))  # fmt: skip
    preds = pd.read_csv(local)
    assert {"pred_T_Amp_I", "true_T_Amp_I"} <= set(preds.columns)
    truth = table.set_index("ecg_id").loc[preds["record_id"], "T_Amp_I"].to_numpy()
    np.testing.assert_allclose(preds["true_T_Amp_I"], truth, rtol=1e-6)


@pytest.mark.slow
def test_fine_tune_from_a_run_with_a_new_head(compose_train, tmp_path) -> None:
    """MI sub-disease fine-tuning as config: init_from=<run id>, 3-class softmax head."""
    import torch

    from ecgx.training.module import load_pretrained

    base = compose_train("debug=smoke", "experiment_name=base")
    train(base)
    client = MlflowClient(base.tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("base").experiment_id])

    cfg = compose_train("debug=smoke", "experiment_name=mi-sub", f"init_from={run.info.run_id}",
                        "dataset.task=mi_subdisease", "split=mi_subdisease",
                        "split.norm_train=40", "split.norm_test=10", "module.task=multiclass")  # fmt: skip
    metrics = train(cfg)
    assert {"test/macro_auroc", "test/accuracy", "test/auroc_ASMI"} <= set(metrics)

    # The trunk comes from the superdiagnostic run, the 3-class head does not.
    from ecgx.models.compact_resnet import CompactResNet1d
    from ecgx.tracking.runs import resolve_checkpoint

    ckpt = resolve_checkpoint(run.info.run_id, base.tracking_uri)
    net = CompactResNet1d(num_classes=3)
    fresh = load_pretrained(net, ckpt)
    assert fresh == ["head.bias", "head.weight"]
    trained = torch.load(ckpt, weights_only=True)["state_dict"]
    assert torch.equal(net.stem[0].weight, trained["net.stem.0.weight"])


@pytest.mark.slow
def test_ddp_sim_logs_one_run_with_its_artifacts(compose_train) -> None:
    """Two CPU processes (ddp_spawn, gloo): one MLflow run, metrics and artifacts from rank 0."""
    cfg = compose_train("debug=smoke", "trainer=ddp_sim", "experiment_name=ddp-test")
    metrics = train(cfg)
    assert 0.0 <= metrics["test/macro_auroc"] <= 1.0
    client = MlflowClient(cfg.tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("ddp-test").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["trainer.strategy"] == "ddp_spawn"
    logged = {a.path for folder in ("plots", "predictions", "checkpoints")
              for a in client.list_artifacts(run.info.run_id, folder)}  # fmt: skip
    assert "plots/roc_test.png" in logged and "predictions/test_predictions.csv" in logged
    assert any(p.endswith(".ckpt") for p in logged)


@pytest.mark.slow
def test_two_stage_fine_tuning_of_a_chart_model(compose_train) -> None:
    """Stage 1 trains the head of a 2D model on rendered charts; stage 2 starts from it."""
    import torch

    chart = ["model=mobilenetv3_small", "transform=chart_layout1", "transform.offline.0.dpi=60",
             "transform.offline.0.size=[64,64]", "model.image_size=[64,64]", "debug=smoke"]  # fmt: skip
    stage1 = compose_train(*chart, "module.train_head_only=true", "experiment_name=two-stage")
    train(stage1)
    client = MlflowClient(stage1.tracking_uri)
    exp = client.get_experiment_by_name("two-stage")
    (first,) = client.search_runs([exp.experiment_id])
    ckpt = [a.path for a in client.list_artifacts(first.info.run_id, "checkpoints")][0]
    state = torch.load(client.download_artifacts(first.info.run_id, ckpt), weights_only=True)
    torch.manual_seed(0)  # the seed train() used: the backbone must still be at its init
    from ecgx.models.catalog import build

    init = build("mobilenetv3_small", in_channels=3, num_classes=5, image_size=(64, 64))
    trained = {k.removeprefix("net."): v for k, v in state["state_dict"].items()}
    assert torch.equal(trained["features.0.0.weight"], init.state_dict()["features.0.0.weight"])
    assert not torch.equal(trained["classifier.3.weight"], init.state_dict()["classifier.3.weight"])

    stage2 = compose_train(
        *chart,
        f"init_from={first.info.run_id}",
        "experiment_name=two-stage",
        "explainer=saliency",
        "explainer.method.abs=true",
        "explainer.records=4",
        "explainer.plots=1",
    )
    metrics = train(stage2)
    assert 0 <= metrics["test/macro_auroc"] <= 1
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"])
    assert len(runs) == 2
    # Chart explanations: the picture with its map, and the map projected onto lead x time.
    logged = {a.path for a in client.list_artifacts(runs[0].info.run_id, "explain/saliency")}
    assert "explain/saliency/population_class_x_lead.png" in logged
    assert sum("/record_" in p for p in logged) == 1
    npz = client.download_artifacts(runs[0].info.run_id,
                                    "explain/saliency/projected_lead_time.npz")  # fmt: skip
    import numpy as np

    projected = np.load(npz)["attributions"]
    assert projected.shape == (4, 12, 1000)  # 10 s at 100 Hz, canonical leads
    assert (projected >= 0).all() and projected.sum() > 0
