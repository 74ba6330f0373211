"""Suite ``deploy``: a smoke run's logged model, its logging seconds and size are reported."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from ecgx.bench import deploy
from tests.helpers.bench import quick_figures


@pytest.mark.slow
def test_quick_deploy_suite_reports_the_logged_model(tmp_path: Path, synthetic_root: Path) -> None:
    cfg = OmegaConf.load(Path(__file__).parents[2] / "conf" / "bench" / "deploy.yaml")
    cfg.dataset_root = str(synthetic_root)  # the session's set: not generated again
    figures = quick_figures(deploy, cfg, tmp_path)
    assert set(figures) == {"compact_resnet: log_model in a run",
                            "compact_resnet: logged model size"}  # fmt: skip
    # The weights alone of the compact ResNet (495 k float32 parameters) are ~1.9 MB.
    assert 1.9 < figures["compact_resnet: logged model size"].median < 20
    assert "checkpoint" in figures["compact_resnet: logged model size"].note
