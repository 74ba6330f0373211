"""``ecgx bench suite=scale`` in its quick mode: every figure measured on a small MIMIC-shaped
set, the set and its cache deleted afterwards."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from ecgx.bench.scale import write_mimic_like
from ecgx.commands.bench import compose_bench, run_bench
from ecgx.datasets.mimic_iv_ecg import MIMICIVECG


def test_quick_scale(tmp_path: Path) -> None:
    cfg = compose_bench(["suite=scale", "quick=true", "device=cpu", f"output_dir={tmp_path / 'o'}",
                         f"workdir={tmp_path / 'work'}", "scale.num_workers=[0]"])  # fmt: skip
    report = run_bench(cfg)[0]
    assert report.errors == {}
    figures = {f.name: f for f in report.figures}
    assert {"floor", "cache build", "cache build 500 Hz", "shard build", "join",
            "cache bytes/record", "raw bytes/record", "index + split", "index + split peak RSS",
            "train step xai_lenet", "loader w0 samples", "epoch peak RSS"} <= set(figures)  # fmt: skip
    for fig in figures.values():
        assert fig.values and all(v > 0 and math.isfinite(v) for v in fig.values), fig.name
    build = figures["cache build"]
    assert build.ratio == pytest.approx(build.median / figures["floor"].median)
    assert build.params["fs_cached"] == 100 and build.params["samples_cached"] == 1000
    assert figures["cache bytes/record"].median > 12 * 1000 * 4  # float32 at 100 Hz + index
    assert len(figures["shard build"].values) == 2  # quick: 2 shards
    assert figures["index + split"].params["rows"] == 2000
    epoch = figures["epoch peak RSS"]
    assert epoch.params["train"] > 0 and isinstance(epoch.met, bool)
    assert not (tmp_path / "work" / "scale").exists()  # keep=false: the set and cache deleted


def test_mimic_like_set_reads_as_mimic(tmp_path: Path) -> None:
    root = write_mimic_like(tmp_path / "m", 12, 3, per_patient=4)
    reader = MIMICIVECG(root, task="none")
    meta = reader.metadata()
    assert len(meta) == 12 and meta["patient_id"].nunique() == 3
    assert meta["path"].iloc[5] == "files/p1000/p10000001/s40000005/40000005"
    rec = reader.read(meta.iloc[5].to_dict())
    assert rec.signal.shape == (12, 5000) and rec.fs == 500
    # hard links of the pool: the same bytes under a study's own name
    dat = root / (meta["path"].iloc[5] + ".dat")
    assert dat.stat().st_nlink >= 2 and dat.stat().st_size == 12 * 5000 * 2
    assert np.isfinite(rec.signal).all() and np.abs(rec.signal).max() < 10  # mV
