"""A run logged before the package layout changed still rebuilds."""

from __future__ import annotations

from pathlib import Path

from hydra.utils import get_class

from ecgx.tracking.runs import MOVED_MODULES, load_config


def test_old_target_paths_are_rewritten_to_importable_ones(tmp_path: Path) -> None:
    old = tmp_path / "config.yaml"
    old.write_text(
        "data:\n  _target_: ecgx.data.datamodule.ECGDataModule\n"
        "  dataset:\n    _target_: ecgx.data.ptbxl.PTBXL\n"
        "  split:\n    _target_: ecgx.data.splits.FoldSplit\n"
        "  transform:\n    _target_: ecgx.data.transforms.TransformPipeline\n"
        "    offline:\n    - _target_: ecgx.data.chart.ChartImage\n"
        "module:\n  _target_: ecgx.module.ECGClassifier\n  note: ecgx.module.x stays text\n"
    )
    cfg = load_config(old)
    targets = [cfg.data._target_, cfg.data.dataset._target_, cfg.data.split._target_,
               cfg.data.transform._target_, cfg.data.transform.offline[0]._target_,
               cfg.module._target_]  # fmt: skip
    assert targets[0] == "ecgx.data.datamodule.ECGDataModule"  # did not move
    assert targets[1:] == ["ecgx.datasets.ptbxl.PTBXL", "ecgx.splits.splitters.FoldSplit",
                           "ecgx.transforms.signal.TransformPipeline",
                           "ecgx.transforms.chart.ChartImage", "ecgx.training.module.ECGClassifier"]  # fmt: skip
    for target in targets:
        get_class(target)  # importable
    assert cfg.module.note == "ecgx.module.x stays text"  # only _target_ values are rewritten
    assert all(old.endswith(".") and new.endswith(".") for old, new in MOVED_MODULES.items())
