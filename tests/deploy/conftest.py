"""One smoke run shared by the deploy tests: trained at the synthetic set's 100 Hz without a
Resample (so another rate is refused), on a lead subset (so the logged model takes those leads
alone and an export folds the selection in), its model logged and registered."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from tests.conftest import composer

REGISTERED = "ecg-smoke"
SUBSET = ["I", "II", "aVF", "V1", "V5"]


@dataclass
class TrainedRun:
    compose: Callable[..., DictConfig]
    client: MlflowClient
    run_id: str
    tracking_uri: str
    folder: Path


@pytest.fixture(scope="session")  # one training for every deploy test module
def trained_run(tmp_path_factory: pytest.TempPathFactory, synthetic_root: Path) -> TrainedRun:
    from ecgx.commands.train import train

    folder = tmp_path_factory.mktemp("deploy-run")
    compose = composer(folder, synthetic_root)
    subset = "{_target_:ecgx.transforms.signal.LeadSubset,leads:[" + ",".join(SUBSET) + "]}"
    cfg = compose("debug=smoke", "experiment_name=deploy", f"register={REGISTERED}",
                  f"transform.offline=[{subset}]")  # fmt: skip
    train(cfg)
    client = MlflowClient(cfg.tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("deploy").experiment_id])
    return TrainedRun(compose, client, run.info.run_id, str(cfg.tracking_uri), folder)
