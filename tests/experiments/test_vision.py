"""experiments/vision/: smoke runs on a generated Chapman-layout set, charts rendered small.

Stage-2 files (``required: [init_from]``) start from a stage-1 smoke run of the same backbone, found in
MLflow by its run id as a user would pass it; the search preset runs one Optuna trial.
"""

from __future__ import annotations

import pytest
from omegaconf import open_dict

from ecgx.experiment_files import read_experiment
from tests.experiments.conftest import EXPERIMENTS, experiment_names

# 2D backbones (ConvNeXt-B: 88 M parameters) on charts: 64 x 64 pictures rendered at a low dpi,
# one small batch per stage, no extra checkpoint. The experiment files stay as published.
SMALL = ("transform.offline.0.size=[64,64]", "transform.offline.0.dpi=60",
         "model.image_size=[64,64]", "data.batch_size=4", "data.eval_batch_size=8",
         "trainer.limit_train_batches=1", "trainer.limit_val_batches=1",
         "trainer.limit_test_batches=1", "trainer.min_epochs=1",
         "callbacks.model_checkpoint.save_last=false", "module.bootstrap_resamples=0")  # fmt: skip
LIGHT_EXPLAIN = ("explainer.records=2", "explainer.plots=1", "explainer.sensitivity_records=0",
                 "explainer.faithfulness_steps=4")  # fmt: skip
STAGE1 = "vision/chapman_stage1_head"


def _text(name: str) -> str:
    return (EXPERIMENTS / f"{name}.yaml").read_text()


@pytest.fixture(scope="session")
def stage1_runs() -> dict[str, str]:
    """Stage-1 run id per backbone, shared by the stage-2 files of this session."""
    return {}


@pytest.mark.slow
@pytest.mark.parametrize("name", experiment_names("vision"))
def test_experiment_runs(name, run_experiment, compose_experiment, latest_run_id,
                         stage1_runs) -> None:  # fmt: skip
    extra = SMALL + (LIGHT_EXPLAIN if "explainer" in _text(name) else ())
    if read_experiment(name).missing:  # stage 2 needs its stage-1 run
        model = _model_choice(compose_experiment, name)
        if model not in stage1_runs:
            run_experiment(STAGE1, f"model={model}", *SMALL)
            stage1_runs[model] = latest_run_id("vision-chapman")
        extra += (f"init_from={stage1_runs[model]}",)
    if "hparams_search" in _text(name):
        from ecgx.search import search

        cfg = compose_experiment(name, *extra, "hparams_search.n_trials=1")
        with open_dict(cfg):
            cfg.hparams_search.storage = f"sqlite:///{cfg.paths.log_dir}/optuna-smoke.db"
            cfg.hparams_search.study_name = f"smoke-{name.replace('/', '-')}"
        study = search(cfg)
        assert study.trials[-1].state.name in ("COMPLETE", "PRUNED")
        assert study.trials[-1].user_attrs.get("mlflow_run_id")
        return
    metrics = run_experiment(name, *extra)
    assert "test/macro_f1" in metrics and "test/accuracy" in metrics
    if "explainer" in _text(name):
        assert any(k.startswith("explain/guided_grad_cam/") for k in metrics), sorted(metrics)


def _model_choice(compose_experiment, name: str) -> str:
    from hydra.core.hydra_config import HydraConfig

    compose_experiment(name, "init_from=none", *SMALL)
    return str(HydraConfig.get().runtime.choices["model"])
