"""Suite ``memory``: the synthetic cache opens as the data module's cache; peaks are sampled."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from ecgx.bench import memory
from ecgx.commands.bench import compose_bench
from tests.helpers.bench import quick_figures


def test_synthetic_cache_is_the_data_modules_cache(tmp_path: Path) -> None:
    cfg = OmegaConf.create({"batch_size": 8, "val_batches": 1, "overrides": []})
    overrides = memory.train_overrides(cfg, tmp_path, steps=2)
    folder = memory.write_synthetic_cache(tmp_path / "ptbxl-meta", overrides, n=70, samples=400)
    assert (folder / "signals.f32").stat().st_size == 70 * 12 * 400 * 4

    # No record files exist: anything but a cache hit would fail reading them.
    datamodule = instantiate(memory._compose(overrides).data)
    datamodule.setup("fit")
    cache = datamodule.cache
    assert cache.path == folder and len(cache) == 70 and cache.fixed_length() == 400
    assert cache.fs == 500.0 and cache.num_leads == 12
    assert datamodule.class_names == ["CD", "HYP", "MI", "NORM", "STTC"]
    sizes = {k: len(v) for k, v in datamodule.indices.items()}
    assert sizes == {"train": 56, "val": 7, "test": 7}  # strat_fold = 1 + id % 10
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["signal"].shape == (8, 12, 400)
    assert np.isfinite(batch["signal"].numpy()).all() and batch["target"].sum() > 0


def test_status_of_a_live_and_of_a_gone_process() -> None:
    mine = memory.read_status(os.getpid())
    assert set(mine) == {"VmHWM", "VmRSS", "RssAnon", "RssFile"}
    assert mine["VmHWM"] >= mine["VmRSS"] > 0 and mine["RssAnon"] > 0
    assert memory.read_status(2**22 + 1) == {}  # above pid_max's default: no such process


@pytest.mark.slow
def test_memory_suite_quick(tmp_path: Path) -> None:
    cfg = compose_bench(["memory.quick_records=200", "memory.quick_steps=4",
                         "memory.samples=2000"]).memory  # fmt: skip
    figures = quick_figures(memory, cfg, tmp_path)
    assert figures["cache size"].median == pytest.approx(200 * 12 * 2000 * 4 / 1e9)
    hwm, anon = figures["peak RSS (VmHWM)"], figures["peak anonymous RSS (RssAnon)"]
    assert hwm.target == anon.target == "<= 3"
    assert hwm.met is not None and anon.met is not None
    assert 0.1 < anon.median <= hwm.median + 1e-3  # torch alone is well over 100 MB
    # wait4's figure is the kernel's own peak; the sampled VmHWM can only miss the very end
    assert figures["peak RSS (ru_maxrss)"].median >= 0.9 * hwm.median
    log = (tmp_path / "memory" / "train.log").read_text()
    assert "cache hit" in log and "`max_epochs=1` reached" in log
