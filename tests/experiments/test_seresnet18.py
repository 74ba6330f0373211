"""experiments/seresnet18/: smoke runs on the real CinC samples, and the sweeps they define."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from tests.conftest import ROOT
from tests.experiments.conftest import experiment_names, sweep_jobs

# SE-ResNet18 at 4,096 samples: one small batch per stage is enough to check a file runs.
LIGHT = ("data.batch_size=4", "data.eval_batch_size=8", "trainer.limit_train_batches=1",
         "trainer.limit_val_batches=1", "trainer.limit_test_batches=1")  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("name", experiment_names("seresnet18"))
def test_experiment_runs(run_experiment, name: str) -> None:
    metrics = run_experiment(name, *LIGHT)
    assert "test/macro_auroc" in metrics
    # CinC data: the challenge score is computed on every split and picks the 2020 checkpoint.
    assert "test/challenge_score" in metrics
    assert "val/challenge_score" in metrics


def _job_value(job: list[str], key: str) -> str:
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=job)
    value = cfg
    for part in key.split("."):
        value = value[part]
    return str(value)


def test_five_folds_sweep() -> None:
    jobs = sweep_jobs("seresnet18/cinc2020_5fold")
    assert [_job_value(j, "split.fold") for j in jobs] == ["0", "1", "2", "3", "4"]
    # The original's protocol, not the defaults it overrides.
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=jobs[0])
    assert cfg.dataset.edition == 2020 and cfg.dataset.classes == "scored"
    assert cfg.monitor == "val/challenge_score"
    assert cfg.module.scheduler._target_.endswith("MultiStepLR")
    assert list(cfg.module.scheduler.milestones) == [20, 40, 60]
    assert cfg.split.within == "source" and cfg.split.seed == 2020


def test_each_source_held_out() -> None:
    jobs = sweep_jobs("seresnet18/cinc2021_leave_source_out")
    held_out = [_job_value(j, "split.test_source") for j in jobs]
    assert held_out == ["CPSC_CPSC-Extra", "ChapmanShaoxing_Ningbo", "PTB_PTBXL", "INCART",
                        "G12EC"]  # fmt: skip
    # A command-line value narrows the sweep to it (the 5 x 4 database-wise variant).
    jobs = sweep_jobs("seresnet18/cinc2021_leave_source_out", "split.test_source=G12EC",
                      "split.val_source=INCART,PTB_PTBXL")  # fmt: skip
    assert [_job_value(j, "split.val_source") for j in jobs] == ["INCART", "PTB_PTBXL"]
    assert {_job_value(j, "split.test_source") for j in jobs} == {"G12EC"}
