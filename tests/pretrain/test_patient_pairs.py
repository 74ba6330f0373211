"""Contrastive pretraining across records of one patient, end to end (ecgx train)."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from ecgx.commands.train import train


@pytest.mark.slow
def test_contrastive_pretraining_pairs_records_of_one_patient(compose_train) -> None:
    cfg = compose_train("pretrain=contrastive", "pretrain.objective.views.pairs=patient",
                        "model.d_model=16", "model.n_layers=1", "transform=random_crop",
                        "debug=smoke", "experiment_name=pretrain-pairs")  # fmt: skip
    metrics = train(cfg)
    client = MlflowClient(cfg.tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("pretrain-pairs").experiment_id])
    assert run.info.status == "FINISHED" and metrics["test/loss"] > 0
    params = run.data.params
    assert params["data.pairs"] == params["pretrain.objective.views.pairs"] == "patient"
    # Records whose patient has another record in the train split: the cross-record pairs.
    assert 0 < int(params["data/n_train_with_partner"]) < int(params["data/n_train"])
