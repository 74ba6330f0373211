"""Launcher presets (conf/launcher): each composes, 2-job sweeps through joblib and submitit
land in one MLflow sweep, and DDP inside a local multirun is refused up front."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from hydra import compose, initialize_config_dir
from hydra.types import RunMode
from omegaconf import OmegaConf

from ecgx.errors import ConfigValueError
from ecgx.training.preflight import refuse_ddp_in_local_multirun
from tests.commands.test_cli import _isolated, ecgx
from tests.conftest import ROOT

PRESETS = {
    "local": "basic_launcher.BasicLauncher",
    "joblib": "joblib_launcher.JoblibLauncher",
    "submitit_local": "submitit_launcher.LocalLauncher",
    "slurm": "submitit_launcher.SlurmLauncher",
}


def _hydra(*overrides: str):
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_composes(preset: str, compose_train) -> None:
    cfg = compose_train(f"launcher={preset}")  # the job config is unaffected
    assert "hydra" not in cfg and cfg.trainer.devices == 1
    launcher = _hydra(f"launcher={preset}").hydra.launcher
    assert launcher._target_.endswith(PRESETS[preset])


def test_default_is_basic_and_presets_carry_their_settings() -> None:
    assert _hydra().hydra.launcher._target_.endswith(PRESETS["local"])
    joblib = _hydra("launcher=joblib").hydra.launcher
    assert joblib.n_jobs == 2 and joblib.backend == "loky"
    assert _hydra("launcher=joblib", "hydra.launcher.n_jobs=4").hydra.launcher.n_jobs == 4
    slurm = _hydra("launcher=slurm", "trainer=ddp_sim", "hydra.launcher.partition=gpu")
    launcher = OmegaConf.to_container(slurm.hydra.launcher, resolve=True)
    assert launcher["partition"] == "gpu"
    assert launcher["gpus_per_node"] == launcher["tasks_per_node"] == 2  # ${trainer.devices}
    assert launcher["nodes"] == 1 and launcher["max_num_timeout"] > 0
    assert launcher["timeout_min"] > 0 and launcher["mem_gb"] > 0
    assert launcher["array_parallelism"] > 0


def _hc(mode: RunMode, preset: str) -> SimpleNamespace:
    target = _hydra(f"launcher={preset}").hydra.launcher._target_
    return SimpleNamespace(mode=mode, launcher=OmegaConf.create({"_target_": target}))


@pytest.mark.parametrize(
    ("trainer", "preset", "refused"),
    [
        ({"strategy": "ddp_spawn", "devices": 2}, "local", True),
        ({"strategy": "ddp", "devices": 2}, "joblib", True),
        ({"strategy": "ddp_spawn", "devices": 1}, "joblib", True),
        ({"strategy": "auto", "devices": [0, 1]}, "local", True),
        ({"strategy": "ddp", "devices": 2}, "submitit_local", False),
        ({"strategy": "ddp", "devices": 2}, "slurm", False),
        ({"devices": 1}, "local", False),
        ({"strategy": "ddp", "devices": 1}, "joblib", False),
    ],
)
def test_ddp_guard(trainer: dict, preset: str, refused: bool) -> None:
    cfg = OmegaConf.create({"trainer": trainer})
    refuse_ddp_in_local_multirun(cfg, _hc(RunMode.RUN, preset))  # single runs: always fine
    if not refused:
        refuse_ddp_in_local_multirun(cfg, _hc(RunMode.MULTIRUN, preset))
        return
    with pytest.raises(ConfigValueError, match="launcher=submitit_local or launcher=slurm"):
        refuse_ddp_in_local_multirun(cfg, _hc(RunMode.MULTIRUN, preset))


def test_ddp_in_local_multirun_fails_before_data(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    run = ecgx("train", "-m", "trainer=ddp_sim", "seed=0,1",
               *_isolated(tmp_path, tmp_path / "never-read"))  # fmt: skip
    assert run.returncode != 0
    assert "ddp_spawn" in run.stderr and "launcher=submitit_local" in run.stderr
    assert not (tmp_path / "never-read").exists() and not (tmp_path / "mlflow.db").exists()
    assert time.perf_counter() - t0 < 60


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["joblib", "submitit_local"])
def test_two_job_sweep(preset: str, tmp_path: Path, synthetic_root: Path) -> None:
    from mlflow.tracking import MlflowClient

    # No store yet: both parallel jobs find none, and ecgx creates it once under a file lock
    # (MLflow's own migrations would collide: "table experiments already exists").
    run = ecgx("train", "-m", f"launcher={preset}", "debug=smoke", "seed=0,1",
               "module.bootstrap_resamples=0", f"experiment_name={preset}-sweep",
               *_isolated(tmp_path, synthetic_root), timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name(f"{preset}-sweep").experiment_id])
    assert len(runs) == 2
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert len({r.data.tags["ecgx.sweep_id"] for r in runs}) == 1
    assert sorted(r.data.params["choice/launcher"] for r in runs) == [preset, preset]
