"""Shared fixtures: configs are composed the way `ecgx train` composes them, never built by hand."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SAMPLES = SHARED / "ecg-samples"
PTBXL_SAMPLES = SAMPLES / "ptbxl"

os.environ.setdefault("ECGX_ROOT", str(ROOT))
# Keep tests on 2 cores predictable and quiet: under pytest-xdist (`make test`) every worker
# process is one core's worth, so its torch (and the `ecgx` processes it starts) get one thread;
# two threads per worker on two cores would make OpenMP's spin-waits fight each other.
# Set, not defaulted, in a worker: the controller process loaded this file first and its
# default of 2 is what the workers inherit.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
else:
    os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
os.environ.pop("MLFLOW_TRACKING_URI", None)

SMALL_SET = {"n_records": 300, "seed": 0, "sampling_rates": [100]}


@pytest.fixture(scope="session", autouse=True)
def _scratch_under_pytest_basetemp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """What the code under test puts in the temporary folder (a command's output folder outside
    a Hydra job, a model's scratch copy), and what the ``ecgx`` processes it starts put there,
    goes under pytest's basetemp, which pytest prunes, instead of piling up in /tmp run after
    run (300 folders a suite before)."""
    folder = str(tmp_path_factory.mktemp("tmp"))
    before_env, before_dir = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"], tempfile.tempdir = folder, folder
    yield
    tempfile.tempdir = before_dir
    if before_env is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = before_env


def needs_samples(path: Path = SAMPLES) -> pytest.MarkDecorator:
    return pytest.mark.skipif(not path.is_dir(), reason=f"{path} absent")


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic PTB-XL-layout set shared by the whole session."""
    from ecgx.datasets.synthetic import generate_ptbxl_like

    root = tmp_path_factory.mktemp("synthetic") / "synthetic-ptbxl"
    return generate_ptbxl_like(root, **SMALL_SET)


@pytest.fixture
def compose_train(tmp_path: Path, synthetic_root: Path) -> Callable[..., DictConfig]:
    """``compose_train(*overrides)``: conf/train.yaml on the small synthetic set, writing every
    output (cache, logs, MLflow store) under this test's tmp_path; ``config="explain"``
    composes conf/explain.yaml with the same outputs."""
    return composer(tmp_path, synthetic_root)


def composer(tmp_path: Path, synthetic_root: Path) -> Callable[..., DictConfig]:
    """What ``compose_train`` is, for a folder of the caller's (e.g. a module-scoped run)."""

    def _compose(*overrides: str, config: str = "train") -> DictConfig:
        base = [
            f"paths.cache_dir={tmp_path / 'cache'}",
            f"paths.log_dir={tmp_path / 'logs'}",
            f"paths.output_dir={tmp_path / 'out'}",
            f"tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
        ]
        if config == "train":
            base.append(f"dataset.root={synthetic_root}")
        with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
            cfg = compose(config, overrides=[*base, *overrides], return_hydra_config=True)
        # As inside `ecgx train`: the job sees its group choices through HydraConfig, and
        # the composed config without the hydra node.
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            cfg.pop("hydra")
        return cfg

    return _compose
