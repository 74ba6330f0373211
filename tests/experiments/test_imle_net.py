"""experiments/imle_net/: smoke runs (the study helper extends this file)."""

from __future__ import annotations

import pytest

from tests.experiments.conftest import experiment_names


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", [n for n in experiment_names("imle_net") if "mi_subdisease" not in n]
)
def test_experiment_runs(run_experiment, name: str) -> None:
    metrics = run_experiment(name)
    assert "test/macro_auroc" in metrics
