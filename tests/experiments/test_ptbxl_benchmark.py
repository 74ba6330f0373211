"""experiments/ptbxl_benchmark/: the PTB-XL benchmark's three models (Strodthoff et al. 2021) in
smoke mode, the benchmark's training protocol as composed, and its six label tasks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from ecgx.commands.experiment_files import experiment_overrides
from ecgx.datasets.ptbxl import PTBXL
from tests.experiments.conftest import experiment_names

STUDY = "ptbxl_benchmark"
# The benchmark's tasks (helme reproduce_results.py), swept with dataset.task=... (file comments)
TASKS = ("all", "diagnostic", "subdiagnostic", "superdiagnostic", "form", "rhythm")
# xresnet1d101 is the heaviest: small batches keep each smoke run at seconds.
SMOKE = ("data.batch_size=8", "data.eval_batch_size=16", "trainer.limit_train_batches=2")


def test_folder_multirun_lists_every_file() -> None:
    (expanded,) = experiment_overrides([f"experiment=glob({STUDY}/*)"])
    assert expanded == f"experiment={','.join(experiment_names(STUDY))}"
    assert len(experiment_names(STUDY)) == 3


@pytest.mark.parametrize("name", experiment_names(STUDY))
def test_protocol_composes(compose_experiment: Callable[..., DictConfig], name: str) -> None:
    """AdamW 1e-2 / 1e-2 with a one-cycle schedule over 50 epochs (fastai's fit_one_cycle),
    batch 128, no early stopping, 2.5 s crops, a global z-score: each file as the benchmark."""
    cfg = compose_experiment(name, smoke=False)
    assert cfg.experiment_name == "ptbxl-benchmark" and cfg.dataset.sampling_rate == 100
    assert cfg.trainer.max_epochs == 50 and cfg.data.batch_size == 128
    assert cfg.callbacks.early_stopping is None
    net = nn.Linear(2, 2)
    optimizer = instantiate(cfg.module.optimizer)(params=net.parameters())
    assert type(optimizer).__name__ == "AdamW"
    assert optimizer.defaults["weight_decay"] == 0.01
    scheduler = instantiate(cfg.module.scheduler)(optimizer=optimizer)
    assert type(scheduler).__name__ == "OneCycleLR" and scheduler.total_steps == 50
    transform = instantiate(cfg.transform)
    assert [type(t).__name__ for t in transform.online] == ["RandomCrop"]
    assert transform.online[0].length == 250 and transform.normalize.per_lead is False


def test_every_task_has_classes(synthetic_root: Path) -> None:
    """The six task names of the documented sweep are all accepted by the PTB-XL reader."""
    for task in TASKS:
        reader = PTBXL(synthetic_root, task=task)
        y, classes, keep = reader.labels(reader.metadata())
        assert classes and y.shape[1] == len(classes) and keep.any(), task


@pytest.mark.slow
@pytest.mark.parametrize("name", experiment_names(STUDY))
def test_experiment_runs(run_experiment: Callable[..., dict], name: str) -> None:
    metrics = run_experiment(name, *SMOKE)
    assert {"test/macro_auroc", "test/fmax_ptbxl"} <= set(metrics)


@pytest.mark.slow
def test_task_sweep_point_runs(run_experiment: Callable[..., dict]) -> None:
    """A task other than the file's own, as one job of the documented task sweep."""
    metrics = run_experiment(f"{STUDY}/resnet1d_wang", *SMOKE, "dataset.task=form")
    assert "test/macro_auroc" in metrics
