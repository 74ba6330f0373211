"""Experiment files read without composing: required keys, own sweeps, folder multirun plans."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from ecgx.commands.experiment_files import expand_glob, plan_folder_multirun, read_experiment
from ecgx.errors import ConfigValueError
from ecgx.paths import config_dir
from ecgx.training.preflight import check_required


def test_required_and_sweep_are_inherited_from_parent_files() -> None:
    # vision/resnet18 -> vision/chapman_stage2_finetune (required: [init_from]) -> stage 1
    assert read_experiment("vision/resnet18").missing == ["init_from"]
    assert read_experiment("vision/chapman_stage1_head").missing == []
    # a dotted key: the T-wave regression needs the PTB-XL+ features table
    assert read_experiment("xai4ecg/twave_regression_lenet").missing == ["dataset.features_csv"]
    assert read_experiment("seresnet18/cinc2020_5fold").sweep == {"split.fold": "0,1,2,3,4"}
    assert read_experiment("imle_net/ptbxl_superdiagnostic").sweep == {}


def test_folder_plan_leaves_out_files_that_need_a_value_and_runs_own_sweeps_per_file() -> None:
    imle = plan_folder_multirun(expand_glob("glob(imle_net/*)"), given=set())
    assert imle.skipped == {"imle_net/ptbxl_mi_subdisease": ["init_from"]}
    assert "imle_net/ptbxl_superdiagnostic" in imle.names and not imle.per_file
    given = plan_folder_multirun(expand_glob("glob(imle_net/*)"), given={"init_from"})
    assert given.skipped == {} and "imle_net/ptbxl_mi_subdisease" in given.names
    cpsc = plan_folder_multirun(expand_glob("glob(cpsc2018/*)"), given=set())
    assert cpsc.per_file  # single_lead and classical_baselines sweep on their own


def test_glob_without_match_names_the_files() -> None:
    with pytest.raises(ConfigValueError, match="no experiment file matches"):
        expand_glob("glob(nope/*)")
    assert expand_glob("imle_net/ptbxl_attention") == ["imle_net/ptbxl_attention"]


def test_a_fine_tune_without_init_from_is_refused_by_name() -> None:
    """``???`` cannot do this (merged over train.yaml's null it stays null): ``required`` does."""
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=imle_net/ptbxl_mi_subdisease"])
        given = compose("train", overrides=["experiment=imle_net/ptbxl_mi_subdisease",
                                            "init_from=/some/run.ckpt"])  # fmt: skip
    with pytest.raises(ConfigValueError, match=r"init_from: this experiment requires a value"):
        check_required(cfg)
    check_required(given)


def test_folder_multirun_runs_each_files_own_sweep_in_one_sweep_folder(monkeypatch) -> None:
    import subprocess
    import sys

    from ecgx import cli
    from ecgx.commands import experiment_files as ef

    args = ef.experiment_overrides(["-m", "experiment=glob(cpsc2018/*)", "dataset.root=/d"])
    jobs = ef.folder_multirun(args)
    assert [j[2] for j in jobs] == [f"experiment={n}" for n in expand_glob("glob(cpsc2018/*)")]
    assert len({j[3] for j in jobs}) == 1  # one hydra.sweep.dir: one ecgx.sweep_id
    # Hydra takes the per-file overrides, and the file's own sweep is there to run in full
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=jobs[-1][1:], return_hydra_config=True)
    assert cfg.hydra.sweeper.params == {"transform.offline.0.leads": read_experiment(
        "cpsc2018/single_lead").sweep["transform.offline.0.leads"]}  # fmt: skip
    sweep = OmegaConf.to_container(cfg.hydra.sweep)  # unresolved: job.num exists at run time
    assert sweep["subdir"] == "cpsc2018/single_lead/${hydra.job.num}"

    calls = []

    def fake_run(cmd, **_):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 1 if "single_lead" in cmd[-3] else 0)

    monkeypatch.setattr(subprocess, "run", fake_run)
    with pytest.raises(SystemExit, match="failed: cpsc2018/single_lead"):
        cli.main(["train", "-m", "experiment=glob(cpsc2018/*)", "dataset.root=/d"])
    assert len(calls) == len(jobs) and calls[0][:4] == [sys.executable, "-m", "ecgx.cli", "train"]


def test_folder_multirun_without_own_sweeps_stays_one_hydra_multirun() -> None:
    from ecgx.commands import experiment_files as ef

    args = ef.experiment_overrides(["-m", "experiment=glob(imle_net/*)"])
    assert ef.folder_multirun(args) is None
    assert "imle_net/ptbxl_mi_subdisease" not in args[1]  # left out: needs init_from
    single = ef.experiment_overrides(["experiment=glob(imle_net/*)"])
    assert ef.folder_multirun(single) is None and "ptbxl_mi_subdisease" in single[0]
