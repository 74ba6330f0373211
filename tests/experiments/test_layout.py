"""Every study folder of experiments/ is smoke-tested, and every file is a global override."""

from __future__ import annotations

import pytest

from ecgx.commands.experiment_files import experiment_overrides
from tests.experiments.conftest import EXPERIMENTS, experiment_names


def test_every_study_folder_has_a_smoke_test() -> None:
    here = EXPERIMENTS.parents[0] / "tests" / "experiments"
    missing = [d.name for d in EXPERIMENTS.iterdir()
               if d.is_dir() and not (here / f"test_{d.name}.py").is_file()]  # fmt: skip
    assert not missing, f"experiments/{missing}: add tests/experiments/test_<study>.py"


def test_every_file_is_a_global_package() -> None:
    for path in EXPERIMENTS.rglob("*.yaml"):
        assert path.read_text().startswith("# @package _global_"), path


@pytest.mark.parametrize("study", ["seresnet18", "cpsc2018", "vision"])
def test_a_glob_over_one_folder_expands_to_its_files(study: str) -> None:
    # `ecgx train -m 'experiment=glob(<study>/*)'` runs every file of the folder, and only those.
    (override,) = experiment_overrides([f"experiment=glob({study}/*)"])
    assert override == f"experiment={','.join(experiment_names(study))}"
    assert len(experiment_names(study)) >= 3
