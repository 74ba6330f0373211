"""experiments/imle_net/: the IMLE-Net study (spec A) in smoke mode: every standalone file runs,
the MI sub-disease fine-tune starts from the superdiagnostic run, the attention maps are logged,
and ``ecgx compare layout=study`` gives the study's table (rows = the 5 models)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from ecgx.commands.compare import main as compare_main
from ecgx.commands.experiment_files import experiment_overrides, read_experiment
from ecgx.commands.train import train
from ecgx.tracking.mlflow_run import config_hash, finished_run
from tests.experiments.conftest import experiment_names

STUDY = "imle_net"
# The seed models are heavy at 1000 samples (IMLE-Net: 240 beat windows through a 12-conv
# encoder; ResNet101-1D: 157 M parameters, a 600 MB checkpoint): one small batch per stage and no
# threshold tuning (a pass over the whole validation split) keep a smoke run at seconds.
# skip_finished lets the compare and fine-tune tests reuse a run an earlier test finished.
SMOKE = ("data.batch_size=4", "data.eval_batch_size=8", "trainer.limit_train_batches=1",
         "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
         "module.tune_thresholds=false", "skip_finished=true")  # fmt: skip
SMALLER = {"resnet101": ("data.batch_size=2", "data.eval_batch_size=4")}
# The attention explainer on two records; faithfulness curves would re-run IMLE-Net per step.
EXPLAIN_SMOKE = ("explainer.records=2", "explainer.plots=1", "explainer.faithfulness=false")
MODELS = {"imle_net", "mousavi", "rajpurkar", "ecgnet", "resnet101_1d"}
# The IMLE-Net README's columns (spec A9): macro ROC-AUC, mean accuracy, max (sample) F1.
STUDY_METRICS = ("test/macro_auroc", "test/mean_accuracy", "test/fmax_sample")


def _smoke(name: str) -> tuple[str, ...]:
    extra = next((v for k, v in SMALLER.items() if name.endswith(k)), ())
    return (*SMOKE, *extra, *(EXPLAIN_SMOKE if "attention" in name else ()))


def _standalone(name: str) -> bool:
    return not read_experiment(name).missing  # e.g. a fine-tune needs init_from


def _model_files() -> list[str]:
    return [n for n in experiment_names(STUDY) if n.startswith(f"{STUDY}/ptbxl_superdiagnostic")]


def test_folder_multirun_lists_every_file(compose_experiment: Callable[..., DictConfig]) -> None:
    """``experiment=glob(imle_net/*)`` expands to every file; each standalone one composes with
    its model, the five model files into one MLflow experiment (the compare table's)."""
    (expanded,) = experiment_overrides([f"experiment=glob({STUDY}/*)"])
    assert expanded == f"experiment={','.join(experiment_names(STUDY))}"
    models = {}
    for name in _model_files():
        cfg = compose_experiment(name, smoke=False)
        assert cfg.experiment_name == "ptbxl-superdiagnostic"
        assert cfg.dataset.task == "superdiagnostic" and cfg.dataset.sampling_rate == 100
        assert cfg.trainer.max_epochs == 60 and cfg.data.batch_size == 32
        models[name] = cfg.model._target_.rsplit(".", 1)[-1]
    assert len(set(models.values())) == len(MODELS), models
    torch_models = [compose_experiment(f"{STUDY}/ptbxl_superdiagnostic_{m}", smoke=False)
                    for m in ("ecgnet", "resnet101")]  # fmt: skip
    assert all(cfg.callbacks.early_stopping is None for cfg in torch_models)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in experiment_names(STUDY) if _standalone(n)])
def test_experiment_runs(
    compose_experiment: Callable[..., DictConfig], run_experiment: Callable[..., dict], name: str
) -> None:
    metrics = run_experiment(name, *_smoke(name))
    assert {"test/macro_auroc", "test/mean_accuracy", "test/fmax_sample"} <= set(metrics)
    if "attention" in name:
        # IMLE-Net's beat / rhythm / channel attention plots, under explain/attention/ of the run
        run_id = _finished_run_id(compose_experiment, name)
        client = MlflowClient(compose_experiment(name).tracking_uri)
        files = [Path(a.path).name for a in client.list_artifacts(run_id, "explain/attention")]
        for level in ("beat", "rhythm", "channel"):
            assert any(f.startswith(f"attention_{level}_") for f in files), files


def _finished_run_id(compose_experiment: Callable[..., DictConfig], name: str) -> str:
    cfg = compose_experiment(name, *_smoke(name))
    train(cfg)  # skipped when this session already finished the same config
    run = finished_run(cfg.tracking_uri, cfg.experiment_name, config_hash(cfg))
    assert run is not None, name
    return run.info.run_id


@pytest.mark.slow
def test_mi_subdisease_fine_tunes_from_the_superdiagnostic_run(
    compose_experiment: Callable[..., DictConfig], run_experiment: Callable[..., dict]
) -> None:
    parent = _finished_run_id(compose_experiment, f"{STUDY}/ptbxl_superdiagnostic")
    name = f"{STUDY}/ptbxl_mi_subdisease"
    metrics = run_experiment(name, *_smoke(name), f"init_from={parent}")
    assert "test/macro_auroc" in metrics and "test/accuracy" in metrics
    cfg = compose_experiment(name, *_smoke(name), f"init_from={parent}")
    run = finished_run(cfg.tracking_uri, cfg.experiment_name, config_hash(cfg))
    assert run.data.params["init_from"] == parent
    assert run.data.params["data/classes"] == "ASMI,IMI,NORM"


@pytest.mark.slow
def test_compare_gives_the_study_table(
    compose_experiment: Callable[..., DictConfig], smoke_store: Path, tmp_path: Path
) -> None:
    """``ecgx compare experiment=ptbxl-superdiagnostic layout=study`` over the five model runs:
    one row per model, the README's three metrics as columns."""
    for name in _model_files():
        _finished_run_id(compose_experiment, name)
    out = tmp_path / "table.md"
    compare_main([f"tracking_uri=sqlite:///{smoke_store / 'mlflow.db'}",
                  "experiment=ptbxl-superdiagnostic", "layout=study", "format=markdown",
                  f"metrics={','.join(STUDY_METRICS)}", f"output={out}"])  # fmt: skip
    header, _, *rows = out.read_text().strip().splitlines()
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert columns[:2] == ["model", "n"]
    assert columns[2:5] == [m.removeprefix("test/") for m in STUDY_METRICS]
    models = {r.strip("|").split("|")[0].strip() for r in rows}
    assert models == MODELS
