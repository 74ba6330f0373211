"""experiments/vision/: smoke runs on a generated Chapman-layout set, charts rendered small.

Stage-2 files (``required: [init_from]``): chapman_stage2_finetune starts from a stage-1 smoke
run, found in MLflow by its run id as a user would pass it; the per-backbone files from a state
dict of their backbone. The search preset runs one Optuna trial.
"""

from __future__ import annotations

import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import open_dict

from ecgx.commands.experiment_files import read_experiment
from tests.experiments.conftest import EXPERIMENTS, experiment_names

# 2D backbones (ConvNeXt-B: 88 M parameters) on charts: 64 x 64 pictures rendered at a low dpi,
# one small batch per stage, no extra checkpoint. The experiment files stay as published.
SMALL = ("transform.offline.0.size=[64,64]", "transform.offline.0.dpi=60",
         "model.image_size=[64,64]", "data.batch_size=4", "data.eval_batch_size=8",
         "trainer.limit_train_batches=1", "trainer.limit_val_batches=1",
         "trainer.limit_test_batches=1", "trainer.min_epochs=1",
         "module.bootstrap_resamples=0")  # fmt: skip
LIGHT_EXPLAIN = ("explainer.records=2", "explainer.plots=1", "explainer.sensitivity_records=0",
                 "explainer.faithfulness_steps=4")  # fmt: skip
STAGE1 = "vision/chapman_stage1_head"
# Files whose protocol is the same for every backbone (ConvNeXt-B by default) smoke on the
# smallest one; ConvNeXt-B itself runs in vision/convnext_base.
ANY_BACKBONE = {STAGE1, "vision/chapman_stage2_finetune", "vision/chapman_stage2_search",
                "vision/guided_grad_cam"}  # fmt: skip
SMALL_BACKBONE = "model=mobilenetv3_small"


def _text(name: str) -> str:
    return (EXPERIMENTS / f"{name}.yaml").read_text()


@pytest.fixture(scope="session")
def stage1_runs() -> dict[str, str]:
    """Stage-1 run id per backbone, shared by the stage-2 files of this session."""
    return {}


@pytest.mark.slow
@pytest.mark.parametrize("name", experiment_names("vision"))
def test_experiment_runs(name, run_experiment, compose_experiment, latest_run_id,
                         stage1_runs, tmp_path) -> None:  # fmt: skip
    extra = SMALL + (LIGHT_EXPLAIN if "explainer" in _text(name) else ())
    extra += (SMALL_BACKBONE,) if name in ANY_BACKBONE else ()
    if read_experiment(name).missing == ["init_from"]:  # stage 2 starts from stage 1
        cfg = compose_experiment(name, "init_from=none", *extra)
        if name == "vision/chapman_stage2_finetune":
            # The hand-over as a user does it: the stage-1 run's id.
            model = str(HydraConfig.get().runtime.choices["model"])
            if model not in stage1_runs:
                run_experiment(STAGE1, f"model={model}", *SMALL)  # the same backbone
                stage1_runs[model] = latest_run_id("vision-chapman")
            extra += (f"init_from={stage1_runs[model]}",)
        else:
            # The other stage-2 files start from a state-dict file of their backbone (init_from
            # takes both): a stage-1 run per backbone would double the study's smoke time.
            weights = tmp_path / "stage1.pth"
            torch.save(instantiate(cfg.model).state_dict(), weights)
            extra += (f"init_from={weights}",)
    if "hparams_search" in _text(name):
        from ecgx.commands.search import search

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
