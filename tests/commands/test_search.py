"""ecgx search: an Optuna TPE study over smoke training runs, resumable from its storage."""

from __future__ import annotations

import optuna
import pytest
from hydra.utils import instantiate
from mlflow.tracking import MlflowClient
from omegaconf import open_dict

from ecgx.commands.search import STUDY_TAG, TRIAL_TAG, parse_space, sample, search, trial_config
from ecgx.errors import ConfigValueError

FAST = ("debug=smoke", "module.bootstrap_resamples=0", "callbacks.test_predictions=null")


def _study_runs(cfg, study_name: str) -> list:
    client = MlflowClient(cfg.tracking_uri)
    exp = client.get_experiment_by_name(cfg.experiment_name)
    return client.search_runs([exp.experiment_id], f"tags.`{STUDY_TAG}` = '{study_name}'")


def test_bad_space_key_is_named(compose_train) -> None:
    cfg = compose_train("debug=smoke", "hparams_search=tpe")
    with open_dict(cfg):
        cfg.hparams_search.space["module.optimizr.lr"] = {"type": "float", "low": 0.1, "high": 1}
    with pytest.raises(ConfigValueError, match=r"module\.optimizr\.lr"):
        search(cfg)


def test_vision_seed_space_applies_conditional_keys(compose_train) -> None:
    import torch

    cfg = compose_train("debug=smoke", "hparams_search=vision_seed")
    space = parse_space(cfg)
    assert cfg.hparams_search.direction == "max"
    common = {"module.optimizer.lr": 1e-3, "module.optimizer.weight_decay": 1e-5,
              "data.batch_size": 32}  # fmt: skip
    sgd = optuna.trial.FixedTrial({**common, "module.optimizer._target_": "torch.optim.SGD",
                                   "module.optimizer.momentum": 0.5, "module.scheduler": "plateau",
                                   "module.scheduler.factor": 0.3,
                                   "module.scheduler.patience": 4})  # fmt: skip
    tcfg = trial_config(cfg, sample(sgd, space), "/tmp/unused")
    assert "hparams_search" not in tcfg and tcfg.force is True
    assert tcfg.module.optimizer.momentum == 0.5 and tcfg.data.batch_size == 32
    params = [torch.nn.Parameter(torch.zeros(1))]
    optimizer = instantiate(tcfg.module.optimizer)(params=params)
    scheduler = instantiate(tcfg.module.scheduler)(optimizer=optimizer)
    assert isinstance(optimizer, torch.optim.SGD)
    assert isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    assert scheduler.factor == 0.3 and scheduler.mode == "max"

    adamw = optuna.trial.FixedTrial({**common, "module.optimizer._target_": "torch.optim.AdamW",
                                     "module.scheduler": "step", "module.scheduler.step_size": 12,
                                     "module.scheduler.gamma": 0.5})  # fmt: skip
    tcfg = trial_config(cfg, sample(adamw, space), "/tmp/unused")
    assert "momentum" not in tcfg.module.optimizer
    assert tcfg.module.scheduler.step_size == 12 and "factor" not in tcfg.module.scheduler
    instantiate(tcfg.module.scheduler)(optimizer=instantiate(tcfg.module.optimizer)(params=params))


@pytest.mark.slow
def test_search_logs_tagged_runs_and_resumes(compose_train) -> None:
    args = (*FAST, "hparams_search=tpe", "experiment_name=search-test")
    cfg = compose_train(*args, "hparams_search.n_trials=3")
    study = search(cfg)
    name = cfg.hparams_search.study_name
    assert name == "search-test-tpe"
    runs = _study_runs(cfg, name)
    assert len(runs) == 3
    assert sorted(int(r.data.tags[TRIAL_TAG]) for r in runs) == [0, 1, 2]
    assert {r.info.status for r in runs} == {"FINISHED"}
    # The sampled values reached the runs' configs.
    for run in runs:
        trial = study.trials[int(run.data.tags[TRIAL_TAG])]
        assert float(run.data.params["module.optimizer.lr"]) == pytest.approx(
            trial.params["module.optimizer.lr"]
        )
        assert int(run.data.params["data.batch_size"]) == trial.params["data.batch_size"]
    assert len({r.data.params["module.optimizer.lr"] for r in runs}) == 3

    # The same command with n_trials=5 resumes the study: exactly 2 more trials and runs.
    cfg = compose_train(*args, "hparams_search.n_trials=5")
    search(cfg)
    runs = _study_runs(cfg, name)
    assert len(runs) == 5
    assert sorted(int(r.data.tags[TRIAL_TAG]) for r in runs) == [0, 1, 2, 3, 4]
    assert len({r.data.params["module.optimizer.lr"] for r in runs}) == 5
    stored = optuna.load_study(study_name=name, storage=cfg.hparams_search.storage)
    assert len(stored.trials) == 5


@pytest.mark.slow
def test_pruned_trial_run_is_killed_not_running(compose_train) -> None:
    cfg = compose_train(*FAST, "hparams_search=tpe", "hparams_search.n_trials=1",
                        "experiment_name=prune-test")  # fmt: skip
    with open_dict(cfg):  # maximise an AUROC below 2: every trial is pruned at its first epoch
        cfg.hparams_search.pruner = {"_target_": "optuna.pruners.ThresholdPruner", "lower": 2.0}
    study = search(cfg)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.PRUNED]
    runs = _study_runs(cfg, cfg.hparams_search.study_name)
    assert [r.info.status for r in runs] == ["KILLED"]
