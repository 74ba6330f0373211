"""Sweep resume: a config whose MLflow run already FINISHED is skipped unless force=true."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from ecgx.commands.train import train
from ecgx.tracking.mlflow_run import config_hash

FAST = ("debug=smoke", "module.bootstrap_resamples=0", "callbacks.test_predictions=null")


def test_config_hash_ignores_paths_and_force(compose_train, tmp_path) -> None:
    cfg = compose_train("debug=smoke")
    other = cfg.copy()
    OmegaConf.update(other, "paths.output_dir", str(tmp_path / "elsewhere"))
    OmegaConf.update(other, "force", True)
    assert config_hash(other) == config_hash(cfg)
    OmegaConf.update(other, "module.optimizer.lr", 0.5)
    assert config_hash(other) != config_hash(cfg)


def test_config_hash_ignores_how_the_store_is_spelled(compose_train, tmp_path) -> None:
    # The logger node resolves ${tracking_uri}: the same store spelled twice is one config.
    plain = compose_train("debug=smoke", f"tracking_uri=sqlite:///{tmp_path}/mlflow.db")
    dotted = compose_train("debug=smoke", f"tracking_uri=sqlite:///{tmp_path}/./mlflow.db")
    assert plain.logger.tracking_uri != dotted.logger.tracking_uri
    assert config_hash(plain) == config_hash(dotted)


@pytest.mark.slow
def test_finished_config_is_skipped_unless_forced(compose_train) -> None:
    # Multirun jobs skip finished configs by themselves; a single run does so when asked.
    args = (*FAST, "experiment_name=resume-test", "skip_finished=true")
    first = train(compose_train(*args))
    cfg = compose_train(*args)
    client = MlflowClient(cfg.tracking_uri)
    exp_id = client.get_experiment_by_name("resume-test").experiment_id

    again = train(cfg)
    assert len(client.search_runs([exp_id])) == 1
    assert cfg.monitor in again
    for key in set(first) & set(again):
        assert again[key] == pytest.approx(first[key]), key
    assert {k for k in first if k.startswith("test/")} <= set(again)

    train(compose_train(*args, "force=true"))
    runs = client.search_runs([exp_id])
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    train(compose_train(*FAST, "experiment_name=resume-test"))  # a plain single run trains
    assert len(client.search_runs([exp_id])) == 3
