"""Suite ``evaluation``: a robustness preset and the ground-truth scores against their floors."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from ecgx.bench import evaluation
from tests.helpers.bench import quick_figures


@pytest.mark.slow
def test_quick_evaluation_suite_times_each_part_against_its_floor(
    tmp_path: Path, synthetic_root: Path
) -> None:
    cfg = OmegaConf.load(Path(__file__).parents[2] / "conf" / "bench" / "evaluation.yaml")
    cfg.dataset_root = str(synthetic_root)
    figures = quick_figures(evaluation, cfg, tmp_path)
    floor, table = figures["robustness floor"], figures["robustness default"]
    # quick: the preset's first 3 perturbations plus the clean pass, each one forward
    assert floor.params["evaluations"] == 4 == table.params["evaluations"]
    assert table.ratio_to == "robustness floor" and table.ratio == pytest.approx(
        table.median / floor.median
    )
    scored = figures["saliency: ecgx explain with ground truth"]
    assert scored.ratio_to == "saliency: ecgx explain without ground truth"
    scores = figures["saliency: attribution + ground-truth scores"]
    assert scores.ratio_to == "saliency: attribution" and scores.target == "<= 1.2"
    assert scores.met is not None and scored.target is None
    assert figures["saliency: randomisation check"].params["records"] == 4
    assert figures["saliency: attribution"].params["records"] == 4
