"""``ecgx bench suite=scale``: every step of a run at MIMIC-IV-ECG's size.

A MIMIC-shaped set is written: ``records`` studies of 12 x 5,000 samples at 500 Hz (WFDB format
16, 200 adu/mV, MIMIC's header layout and nested ``files/p<4>/p<subject>/s<study>/<study>`` names,
``studies_per_patient`` studies per subject), with ``record_list.csv`` and
``machine_measurements.csv`` (two report statements per study). Only ``pool`` distinct ``.dat``
files are written; every study hard-links one of them under its own name beside its own header
(disk: 200,000 distinct records would be 24 GB), so every record is really decoded; the pages
are in the page cache either way, as in the ingest suite. Then:

- **floor**: :func:`ecgx.bench.ingest.floor_wfdb` (header gains, ``np.fromfile``, scaling) on a
  sample of the set, one process: the raw decode floor.
- **cache build**: ``ecgx data cache`` of ``dataset=mimic_iv_ecg`` with an offline resampling to
  100 Hz, built as ``shards`` shards one after another (``ECGX_BUILD_WORKERS=workers`` each),
  then joined; records/s over all of it against the floor (target >= 0.5), the join on its own,
  and disk bytes per record of the cache and of the raw set.
- **index + split** at ``index_rows`` rows: ``record_list.csv`` and ``machine_measurements.csv``
  of that many studies (no signal files), ``metadata()``, ``labels()`` and the patient-grouped
  split in a new process: seconds and its peak RSS.
- **loader**: :func:`ecgx.bench.load.measure_loader` over the built cache against
  :func:`ecgx.bench.load.measure_train_step` of the fastest model (target >= 10x).
- **epoch**: a new process opens the cache as ``ecgx train`` does (metadata, split, normaliser
  fitted on the train split) and reads one whole epoch of the train loader; its peak RSS (target
  < 3 GB) and the growth of its own memory from 10 % into the epoch to its end (flat: ~0).

The set and the cache are deleted at the end unless ``keep=true``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from ecgx.bench.core import Context, Figure, rates
from ecgx.bench.ingest import _environ, floor_wfdb
from ecgx.bench.memory import read_status
from ecgx.errors import ConfigValueError

SUITE = "scale"
LEADS_IN_FILE = ("I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6")
SAMPLES, FS, GAIN = 5000, 500, 200
STATEMENTS = ("Sinus rhythm", "Sinus rhythm", "Sinus rhythm", "Atrial fibrillation",
              "1st degree A-V block", "Left bundle branch block", "Right bundle branch block",
              "Left ventricular hypertrophy", "Normal ECG", "Borderline ECG")  # fmt: skip
GB = 1e9


# -- the set ------------------------------------------------------------------------------------
def write_pool(folder: Path, n: int, seed: int = 0) -> list[tuple[Path, list[int], list[int]]]:
    """``n`` distinct format-16 records (ECG-like: beats, wander, noise): (dat, first sample and
    checksum per lead)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(SAMPLES) / FS
    out = []
    for i in range(n):
        hr = rng.uniform(0.8, 1.8)
        beats = np.exp(-(((t * hr) % 1.0 - 0.3) ** 2) / 0.0008)
        mv = (
            beats[:, None] * rng.uniform(-1.5, 1.5, 12) + 0.1 * np.sin(2 * np.pi * 0.2 * t)[:, None]
        )
        digital = np.round((mv + rng.normal(0, 0.02, (SAMPLES, 12))) * GAIN).astype("<i2")
        dat = folder / f"{i}.dat"
        digital.tofile(dat)
        sums = ((digital.astype(np.int64).sum(axis=0) + 32768) % 65536 - 32768).tolist()
        out.append((dat, digital[0].astype(int).tolist(), sums))
    return out


def write_mimic_like(root: Path, n: int, pool: int, per_patient: int, seed: int = 0,
                     signals: bool = True) -> Path:  # fmt: skip
    """The MIMIC-IV-ECG release layout for ``n`` studies (see the module's note); without
    ``signals`` only the two tables (the index at a size whose files would not fit)."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    subjects = 10_000_000 + np.arange(n) // per_patient
    studies = 40_000_000 + np.arange(n)
    paths = [f"files/p{str(s)[:4]}/p{s}/s{st}/{st}" for s, st in zip(subjects, studies)]
    pd.DataFrame({"subject_id": subjects, "study_id": studies, "file_name": studies,
                  "ecg_time": "2180-07-23 08:44:00", "path": paths}).to_csv(
        root / "record_list.csv", index=False)  # fmt: skip
    reports = rng.integers(0, len(STATEMENTS), (n, 2))
    table = {"subject_id": subjects, "study_id": studies,
             "report_0": np.asarray(STATEMENTS)[reports[:, 0]],
             "report_1": np.asarray(STATEMENTS)[reports[:, 1]],
             "rr_interval": 857, "p_onset": 40, "p_end": 150, "qrs_onset": 170, "qrs_end": 258,
             "t_end": 518}  # fmt: skip
    pd.DataFrame(table).to_csv(root / "machine_measurements.csv", index=False)
    if signals:
        written = write_pool(root / "pool", pool, seed)
        choice = rng.integers(0, pool, n)
        for path, k in zip(paths, choice):
            dat, first, sums = written[k]
            study = path.rsplit("/", 1)[1]
            folder = root / path.rsplit("/", 1)[0]
            folder.mkdir(parents=True, exist_ok=True)
            lines = [f"{study} 12 {FS} {SAMPLES} 08:44:00 23/07/2180"] + [
                f"{study}.dat 16 {GAIN}.0(0)/mV 16 0 {first[j]} {sums[j]} 0 {name}"
                for j, name in enumerate(LEADS_IN_FILE)
            ]
            (folder / f"{study}.hea").write_text("\n".join(lines) + "\n# <subject_id>: x\n")
            os.link(dat, folder / f"{study}.dat")
    return root


# -- the suite ----------------------------------------------------------------------------------
def run(cfg: DictConfig, ctx: Context) -> list[Figure]:
    sizes = {k: int(v) for k, v in (cfg.quick if ctx.quick else cfg.sizes).items()}
    if sizes["records"] < 1 or sizes["shards"] < 1 or sizes["workers"] < 1:
        raise ConfigValueError(f"scale: records, shards and workers must be >= 1, got {sizes}")
    work = ctx.workdir / SUITE
    try:
        return _run(cfg, ctx, sizes, work)
    finally:
        if not cfg.keep:
            shutil.rmtree(work, ignore_errors=True)


def _run(cfg: DictConfig, ctx: Context, sizes: dict[str, int], work: Path) -> list[Figure]:
    from ecgx.bench.core import compose_train
    from ecgx.paths import project_root

    n = sizes["records"]
    t0 = time.perf_counter()
    root = write_mimic_like(work / "mimic-iv-ecg", n, sizes["pool"], sizes["per_patient"])
    write_s = time.perf_counter() - t0
    params = {"records": n, "pool": sizes["pool"], "per_patient": sizes["per_patient"],
              "shards": sizes["shards"], "workers": sizes["workers"]}  # fmt: skip
    overrides = ["dataset=mimic_iv_ecg", f"dataset.root={root}", *cfg.transform_overrides,
                 f"paths.root_dir={project_root()}", f"paths.cache_dir={work / 'cache'}"]  # fmt: skip
    train_cfg = compose_train(overrides)

    records = [root / p for p in _paths(root, sizes["floor_records"])]
    floor_s = _timed(lambda: floor_wfdb(records))
    figures = [Figure(SUITE, "floor", "records/s", rates(len(records), [floor_s]),
                      note=f"raw format-16 decode (ingest's floor_wfdb), one process, "
                      f"{len(records):,} records spread over the set", params=params)]  # fmt: skip
    figures.append(native_figure(cfg, sizes, work, params))
    figures += build_figures(train_cfg, n, sizes, work, params)
    figures += index_figures(cfg, work, sizes["index_rows"], sizes["per_patient"])
    figures += loader_figures(cfg, train_cfg, sizes, ctx, params)
    figures.append(epoch_figure(overrides, cfg, sizes, work, params))
    figures.append(
        Figure(
            SUITE,
            "write set",
            "s",
            [write_s],
            params=params,
            note="the synthetic set's tables, headers and hard links (not ecgx)",
        )
    )
    return figures


def _paths(root: Path, k: int) -> list[str]:
    import pandas as pd

    paths = pd.read_csv(root / "record_list.csv", usecols=["path"])["path"]
    step = max(1, len(paths) // max(k, 1))
    return list(paths.iloc[::step][:k])


def _timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def native_figure(cfg: DictConfig, sizes: dict[str, int], work: Path, params: dict) -> Figure:
    """The build with no offline transform (500 Hz kept: 240 KB/record, so on a smaller set):
    what the build adds to the decode itself, resampling aside."""
    from hydra.utils import instantiate

    from ecgx.bench.core import compose_train
    from ecgx.paths import project_root

    k = sizes["native_records"]
    root = write_mimic_like(work / "native", k, sizes["pool"], sizes["per_patient"], seed=1)
    dm = instantiate(compose_train(["dataset=mimic_iv_ecg", f"dataset.root={root}",
                                    "transform=random_crop", f"paths.root_dir={project_root()}",
                                    f"paths.cache_dir={work / 'cache-native'}"]).data)  # fmt: skip
    with _environ({"ECGX_BUILD_WORKERS": str(sizes["workers"])}):
        seconds = _timed(dm.prepare_data)
    if dm.cache is None or len(dm.cache) != k or dm.cache.fs != FS:
        raise RuntimeError(f"scale: the 500 Hz build holds {dm.cache and len(dm.cache)} of {k}")
    shutil.rmtree(work / "cache-native", ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)
    return Figure(SUITE, "cache build 500 Hz", "records/s", rates(k, [seconds]),
                  ratio_to="floor", target=">= 0.5", params={**params, "records": k},
                  note=f"{k:,} records cached as stored (no resampling), "
                  f"{sizes['workers']} workers, chunked and joined as the full build")  # fmt: skip


def build_figures(train_cfg: DictConfig, n: int, sizes: dict[str, int], work: Path,
                  params: dict) -> list[Figure]:  # fmt: skip
    """The cache built shard after shard, then joined, as ``ecgx data cache`` does it."""
    from hydra.utils import instantiate

    from ecgx.data.shards import n_chunks

    shards, workers = sizes["shards"], sizes["workers"]
    datamodule = instantiate(train_cfg.data)
    shard_s, shard_n = [], []
    for i in range(shards):
        report = datamodule.build_shard(f"{i}/{shards}", workers)
        if report.decoded != report.records:
            raise RuntimeError(f"scale: shard {i}/{shards} read {report.decoded} of "
                               f"{report.records} records (a stale parts folder in {work})")  # fmt: skip
        shard_s.append(report.seconds)
        shard_n.append(report.records)
    with _environ({"ECGX_BUILD_WORKERS": str(workers)}):
        join_s = _timed(datamodule.prepare_data)
    cache = datamodule.cache
    if cache is None or len(cache) != n:
        raise RuntimeError(f"scale: the cache holds {0 if cache is None else len(cache)} of {n}")
    cache_bytes = sum(f.stat().st_size for f in cache.path.iterdir())
    signal_bytes = (cache.path / "signals.f32").stat().st_size
    root = work / "mimic-iv-ecg"
    headers = [root / f"{p}.hea" for p in _paths(root, 1000)]
    # the .dat each study would have on its own, plus its header
    raw = n * (SAMPLES * 12 * 2 + sum(h.stat().st_size for h in headers) / len(headers))
    total = sum(shard_s) + join_s
    p = {**params, "fs_cached": cache.fs, "samples_cached": cache.fixed_length()}
    return [
        Figure(SUITE, "cache build", "records/s", rates(n, [total]), ratio_to="floor",
               target=">= 0.5", params=p,
               note=f"{shards} shards one after another, {workers} workers each, then the join: "
               f"decode, resample 500 -> {cache.fs:g} Hz, write; vs the one-process floor"),
        Figure(SUITE, "shard build", "records/s", [k / s for k, s in zip(shard_n, shard_s)], params=p,
               note="each shard on its own (what one node of N does)"),
        Figure(SUITE, "join", "s", [join_s], params=p,
               note=f"{n_chunks(n):,} chunk markers of {n:,} records merged, "
               f"{signal_bytes / GB:.2f} GB concatenated "
               f"({signal_bytes / GB / join_s:.2f} GB/s)"),
        Figure(SUITE, "cache bytes/record", "bytes", [cache_bytes / n], params=p,
               note=f"signals {signal_bytes / n:,.0f} + index, metadata and spec"),
        Figure(SUITE, "raw bytes/record", "bytes", [raw / n], params=p,
               note="format-16 .dat (12 x 5000 x 2) + header, as MIMIC-IV-ECG stores them"),
    ]  # fmt: skip


_INDEX_SCRIPT = """
import json, resource, sys, time
import numpy as np
from hydra.utils import instantiate
from ecgx.bench.core import compose_train

cfg = compose_train(json.loads(sys.argv[1]))
# What the data module does in setup(), without importing it (torch, Lightning): the reader
# and the split alone.
dataset, split = instantiate(cfg.dataset), instantiate(cfg.split)
t0 = time.perf_counter()
meta = dataset.metadata()
t1 = time.perf_counter()
y, classes, keep = dataset.labels(meta)
kept = np.flatnonzero(keep)
t2 = time.perf_counter()
parts = split(meta.iloc[kept].reset_index(drop=True), y[kept])
t3 = time.perf_counter()
print(json.dumps({"rows": len(meta), "kept": len(kept), "metadata": t1 - t0, "labels": t2 - t1,
                  "split": t3 - t2, "sizes": {k: len(v) for k, v in parts.items()},
                  "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def index_figures(cfg: DictConfig, work: Path, rows: int, per_patient: int) -> list[Figure]:
    """metadata + labels + split of ``rows`` studies in a new process: seconds and peak RSS."""
    from ecgx.paths import project_root

    root = write_mimic_like(work / "index", rows, 0, per_patient, signals=False)
    overrides = ["dataset=mimic_iv_ecg", f"dataset.root={root}",
                 f"paths.root_dir={project_root()}"]  # fmt: skip
    done = subprocess.run([sys.executable, "-c", _INDEX_SCRIPT, json.dumps(overrides)],
                          capture_output=True, text=True, timeout=float(cfg.timeout_s))  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"scale: index + split failed: {done.stderr[-2000:]}")
    r = json.loads(done.stdout.strip().splitlines()[-1])
    if r["rows"] != rows or sum(r["sizes"].values()) != r["kept"]:
        raise RuntimeError(f"scale: index of {r['rows']} rows, split {r['sizes']} of {r['kept']}")
    p = {"rows": rows, "per_patient": per_patient, **r["sizes"]}
    return [
        Figure(SUITE, "index + split", "s", [r["metadata"] + r["labels"] + r["split"]], params=p,
               note=f"{rows:,} rows: metadata() {r['metadata']:.1f} s, labels() "
               f"{r['labels']:.1f} s, patient-grouped split {r['split']:.1f} s (new process)"),
        Figure(SUITE, "index + split peak RSS", "GB", [r["rss"] / GB], params=p),
    ]  # fmt: skip


def loader_figures(cfg: DictConfig, train_cfg: DictConfig, sizes: dict[str, int], ctx: Context,
                   params: dict) -> list[Figure]:  # fmt: skip
    """The load suite's loader and train-step figures, over this cache."""
    from ecgx.bench.load import measure_loader, measure_train_step

    step = measure_train_step(str(cfg.baseline_model), 32, sizes["steps"], ctx)
    figures = [step]
    for w in cfg.num_workers:
        figures += measure_loader(train_cfg, list(cfg.transform_overrides), int(w),
                                  int(cfg.batch_size), sizes["batches"], ctx, step.name,
                                  params)  # fmt: skip
    for fig in figures:  # the load suite's figures, named as this suite's
        fig.suite = SUITE
    return figures


_EPOCH_SCRIPT = """
import json, sys, time
import torch
from hydra.utils import instantiate
from ecgx.bench.core import compose_train

cfg = compose_train(json.loads(sys.argv[1]))
dm = instantiate(cfg.data, num_workers=int(sys.argv[2]))
dm.prepare_data()
dm.setup("fit")
loader = dm.train_dataloader()
n, t0 = 0, time.time()
print(json.dumps({"event": "start", "t": t0, "batches": len(loader)}), flush=True)
for batch in loader:
    n += len(batch["signal"])
print(json.dumps({"event": "end", "t": time.time(), "samples": n,
                  "train": len(dm.indices["train"])}), flush=True)
"""


def epoch_figure(overrides: list[str], cfg: DictConfig, sizes: dict[str, int], work: Path,
                 params: dict) -> Figure:  # fmt: skip
    """Peak RSS of a process reading one epoch of the train loader, and how its own memory
    grows over the epoch, from ``/proc/<pid>/status`` every ``sample_every_s``."""
    trace: list[tuple[float, int, int]] = []  # (time, VmRSS, RssAnon)
    child = subprocess.Popen([sys.executable, "-c", _EPOCH_SCRIPT, json.dumps(overrides),
                              str(int(cfg.epoch_workers))], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            status = read_status(child.pid)
            if status:
                trace.append((time.time(), status.get("VmRSS", 0), status.get("RssAnon", 0)))
            stop.wait(float(cfg.sample_every_s))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        out, err = child.communicate(timeout=float(cfg.timeout_s))
    finally:
        stop.set()
        sampler.join()
    if child.returncode != 0:
        raise RuntimeError(f"scale: the epoch process failed: {err[-2000:]}")
    events = {e["event"]: e for e in map(json.loads, out.strip().splitlines()[-2:])}
    start, end = events["start"]["t"], events["end"]["t"]
    if events["end"]["samples"] != events["end"]["train"]:
        raise RuntimeError(f"scale: the epoch read {events['end']['samples']} samples, "
                           f"the train split holds {events['end']['train']}")  # fmt: skip
    peak = max(rss for _, rss, _ in trace)
    tenth = start + 0.1 * (end - start)
    early = [anon for t, _, anon in trace if start <= t <= tenth] or [
        next((anon for t, _, anon in trace if t >= start), trace[-1][2])
    ]
    late = [anon for t, _, anon in trace if t >= tenth] or [trace[-1][2]]
    growth = (max(late) - max(early)) / GB
    return Figure(SUITE, "epoch peak RSS", "GB", [peak / GB], target=f"<= {float(cfg.target_gb):g}",
                  params={**params, "train": events["end"]["train"],
                          "epoch_workers": int(cfg.epoch_workers), "growth_gb": growth},
                  note=f"one epoch of {events['end']['train']:,} train records in "
                  f"{end - start:.0f} s (open, split and normaliser fit before it); its own "
                  f"memory (RssAnon) grew {growth * 1000:+.0f} MB from 10 % into the epoch to "
                  "its end (flat in the number of records: ~0)")  # fmt: skip
