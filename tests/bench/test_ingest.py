"""``ecgx bench suite=ingest``: the three ways measured on real (else synthetic) records."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import wfdb

from ecgx.bench.core import Report
from ecgx.bench.ingest import (
    cinc_from_ptbxl,
    floor_mat,
    floor_wfdb,
    replicate_cinc,
    replicate_ptbxl,
    seed_way,
)
from ecgx.commands.bench import compose_bench, run_bench
from ecgx.datasets.cinc import CinC
from ecgx.datasets.ptbxl import PTBXL
from tests.conftest import PTBXL_SAMPLES, SAMPLES, needs_samples

CINC_SAMPLES = SAMPLES / "cinc2020_cpsc"


def _run(tmp_path: Path, *overrides: str) -> Report:
    cfg = compose_bench(["suite=ingest", "quick=true", f"output_dir={tmp_path / 'out'}",
                         f"workdir={tmp_path / 'work'}", *overrides])  # fmt: skip
    report, folder = run_bench(cfg)
    assert (folder / "bench.md").is_file()
    return report


def _check_set(report: Report, name: str) -> None:
    figures = {f.name: f for f in report.figures if f.name.startswith(f"{name} ")}
    assert {f"{name} seed", f"{name} floor", f"{name} ecgx", f"{name} ecgx vs floor"} <= set(
        figures
    )
    for fig in figures.values():
        assert fig.unit == "records/s" and fig.values
        assert all(v > 0 and math.isfinite(v) for v in fig.values)
    ecgx = figures[f"{name} ecgx"]
    assert ecgx.ratio_to == f"{name} seed" and ecgx.target == ">= 5"
    assert ecgx.ratio == pytest.approx(ecgx.median / figures[f"{name} seed"].median)
    vs_floor = figures[f"{name} ecgx vs floor"]
    assert vs_floor.ratio_to == f"{name} floor" and vs_floor.target == ">= 0.5"
    assert vs_floor.ratio == pytest.approx(ecgx.median / figures[f"{name} floor"].median)
    assert isinstance(ecgx.met, bool) and isinstance(vs_floor.met, bool)
    assert ecgx.params["records"] == 24  # conf/bench/ingest.yaml quick.records


@needs_samples(PTBXL_SAMPLES)
@needs_samples(CINC_SAMPLES)
def test_quick_ingest_on_the_real_samples(tmp_path: Path) -> None:
    report = _run(tmp_path)
    assert report.errors == {}
    for name in ("ptbxl100", "ptbxl500", "cinc"):
        _check_set(report, name)
    assert report.get("ingest", "ptbxl100 ecgx").params["source"] == str(PTBXL_SAMPLES)
    assert report.get("ingest", "cinc ecgx").params["source"] == str(CINC_SAMPLES)
    assert {f.params["data"] for f in report.figures} == {"real"}
    assert not [f for f in report.figures if f.name.startswith("synthetic")]  # not under quick


def test_quick_ingest_falls_back_to_synthetic_records(tmp_path: Path) -> None:
    report = _run(
        tmp_path, f"ingest.samples_dir={tmp_path / 'absent'}", "ingest.sets=[ptbxl100,cinc]"
    )
    assert report.errors == {}
    _check_set(report, "ptbxl100")
    _check_set(report, "cinc")
    assert {f.params["data"] for f in report.figures} == {"synthetic"}


def test_unknown_set_is_named(tmp_path: Path) -> None:
    report = _run(tmp_path, "ingest.sets=[ptbxl100,ptbxl250]")
    assert "ingest.sets: unknown ['ptbxl250']" in report.errors["ingest"]


@needs_samples(PTBXL_SAMPLES)
def test_replicas_and_floor_read_like_wfdb(tmp_path: Path) -> None:
    root = replicate_ptbxl(PTBXL_SAMPLES, tmp_path / "ptbxl", 5, (100, 500))
    meta = PTBXL(root, sampling_rate=500).metadata()
    assert list(meta["record_id"]) == ["1", "2", "3", "4", "5"]
    first = wfdb.rdsamp(str(PTBXL_SAMPLES / "records500/00000/00001_hr"))[0]
    for rate, suffix in ((100, "lr"), (500, "hr")):
        records = [root / f"records{rate}/00000/0000{i}_{suffix}" for i in range(1, 6)]
        # The floor is a real decode: it equals wfdb on every record, renamed headers included.
        for floor, seed in zip(floor_wfdb(records), seed_way(records), strict=True):
            np.testing.assert_array_equal(floor, seed.astype(np.float32))
    record = PTBXL(root, sampling_rate=500).read(meta.iloc[0].to_dict())
    np.testing.assert_array_equal(record.signal, first.T.astype(np.float32))

    cinc = replicate_cinc(CINC_SAMPLES, tmp_path / "cinc", 3) if CINC_SAMPLES.is_dir() else None
    synthetic = cinc_from_ptbxl(root, tmp_path / "cinc-synthetic", 2)
    for folder in filter(None, (cinc, synthetic)):
        records = sorted(p.with_suffix("") for p in folder.glob("*.hea"))
        for floor, seed in zip(floor_mat(records), seed_way(records), strict=True):
            np.testing.assert_array_equal(floor.T, seed.astype(np.float32))
        assert len(CinC(folder, edition=2020).metadata()) == len(records)
    np.testing.assert_array_equal(floor_mat([synthetic / "A000001"])[0].T, first.astype(np.float32))
