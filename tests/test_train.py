"""A smoke training run end to end into a temporary MLflow store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from ecgx.train import train


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
