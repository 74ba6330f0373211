"""experiments/vision/: smoke runs (the study helper extends this file)."""

from __future__ import annotations

import pytest

from tests.experiments.conftest import EXPERIMENTS, experiment_names


def _standalone(name: str) -> bool:
    return "init_from: ???" not in (EXPERIMENTS / f"{name}.yaml").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in experiment_names("vision") if _standalone(n)])
def test_experiment_runs(run_experiment, name: str) -> None:
    assert run_experiment(name)
