"""Suite ``memory``: peak memory of training on a cache of full PTB-XL size at 500 Hz.

A signal cache of 21,837 records × 12 leads × 5,000 samples (≈ 5.2 GB of float32) is written
straight into the cache's on-disk format (:mod:`ecgx.data.cache`: a repeated block of noise
written in chunks, never the whole array in memory), under the key the data module computes
for a PTB-XL root holding only the metadata tables, so ``ecgx train`` opens it as a cache hit.
A child ``ecgx train`` (compact ResNet, batch 32, a few hundred steps, the real data module over
that cache) is then sampled through ``/proc/<pid>/status``:

* peak RSS (``VmHWM``, and ``ru_maxrss`` from ``wait4``), which counts the pages of the
  memory-mapped cache the process has read; they are page cache the kernel can reclaim;
* peak anonymous RSS (``RssAnon``): the process's own memory, which should grow with the batch,
  not with the dataset;
* peak ``RssFile``: the mapped cache pages (and libraries) resident at once.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from ecgx.bench.core import Context, Figure, compose_train
from ecgx.paths import project_root

SUITE = "memory"
LEADS = 12
GB = 1e9  # decimal, as the issue states its sizes (5.2 GB of float32)
# Superdiagnostic statements (PTB-XL's scp_statements.csv columns the reader uses).
STATEMENTS = (
    ("NORM", "NORM", "NORM"),
    ("IMI", "MI", "IMI"),
    ("NDT", "STTC", "STTC"),
    ("LVH", "HYP", "LVH"),
    ("CLBBB", "CD", "CLBBB"),
)


def run(cfg: Any, ctx: Context) -> list[Figure]:
    n = int(cfg.quick_records if ctx.quick else cfg.records)
    steps = int(cfg.quick_steps if ctx.quick else cfg.steps)
    samples = int(cfg.samples)
    work = ctx.workdir / "memory"
    overrides = train_overrides(cfg, work, steps)

    t0 = time.perf_counter()
    cache = write_synthetic_cache(work / "ptbxl-meta", overrides, n, samples)
    write_s = time.perf_counter() - t0
    size = (cache / "signals.f32").stat().st_size

    peak = train_child(overrides, work / "train.log", float(cfg.timeout_s),
                       float(cfg.sample_every_s))  # fmt: skip
    target = f"<= {float(cfg.target_gb):g}"
    shape = f"{n:,} × {LEADS} × {samples:,}"
    return [
        Figure(SUITE, "cache size", "GB", [size / GB],
               note=f"{shape} float32, written in {write_s:.1f} s", params={"records": n}),
        Figure(SUITE, "peak RSS (VmHWM)", "GB", [peak["VmHWM"] / GB], target=target,
               note=f"`ecgx train`, compact ResNet, batch {int(cfg.batch_size)}, {steps} steps and "
               f"{int(cfg.val_batches)} validation batches; includes any file pages the "
               "process maps (records are read with preadv, so the cache's are not)"),
        Figure(SUITE, "peak RSS (ru_maxrss)", "GB", [peak["ru_maxrss"] / GB]),
        Figure(SUITE, "peak anonymous RSS (RssAnon)", "GB", [peak["RssAnon"] / GB],
               target=target, note="the process's own memory: grows with the batch, not the "
               "dataset"),
        Figure(SUITE, "peak file-backed RSS (RssFile)", "GB", [peak["RssFile"] / GB]),
        Figure(SUITE, f"training {steps} steps (whole process)", "s", [peak["seconds"]]),
    ]  # fmt: skip


def train_overrides(cfg: Any, work: Path, steps: int) -> list[str]:
    return [
        "dataset=ptbxl",
        f"dataset.root={work / 'ptbxl-meta'}",
        "dataset.sampling_rate=500",
        f"paths.cache_dir={work / 'cache'}",
        f"paths.log_dir={work / 'logs'}",
        f"paths.output_dir={work / 'out'}",
        "model=compact_resnet",
        f"data.batch_size={int(cfg.batch_size)}",
        "logger=none",  # memory of the data path and training, not of MLflow
        "test=false",
        # One epoch cut to `steps` batches, then a few validation batches (eval batch 256):
        # stopping mid-epoch would leave early stopping without its metric.
        "trainer.max_epochs=1",
        f"++trainer.limit_train_batches={steps}",
        f"++trainer.limit_val_batches={int(cfg.val_batches)}",
        *[str(o) for o in cfg.get("overrides") or []],
    ]


# -- the cache --------------------------------------------------------------------------------
def write_metadata(root: Path, n: int, seed: int = 0) -> None:
    """PTB-XL's two tables for ``n`` records (no signal files: the cache stands in for them)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "scp_statements.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["", "description", "diagnostic", "form", "rhythm", "diagnostic_class",
                    "diagnostic_subclass"])  # fmt: skip
        for code, klass, sub in STATEMENTS:
            w.writerow([code, code, 1.0, "", "", klass, sub])
    codes = [s[0] for s in STATEMENTS]
    with open(root / "ptbxl_database.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ecg_id", "patient_id", "age", "sex", "scp_codes", "strat_fold",
                    "filename_lr", "filename_hr"])  # fmt: skip
        for i in range(1, n + 1):
            picked = rng.choice(codes, size=int(rng.integers(1, 3)), replace=False)
            scp = {str(c): 100.0 for c in picked}
            w.writerow([i, float(i // 2), int(rng.integers(20, 90)), int(rng.integers(0, 2)),
                        repr(scp), 1 + i % 10, f"records100/{i:05d}_lr",
                        f"records500/{i:05d}_hr"])  # fmt: skip


def write_synthetic_cache(root: Path, overrides: list[str], n: int, samples: int) -> Path:
    """Write the metadata tables under ``root`` and the signal cache the data module of
    ``overrides`` looks for; returns the cache folder."""
    from hydra.utils import instantiate

    from ecgx.data import cache as fmt

    write_metadata(root, n)
    datamodule = instantiate(_compose(overrides).data)
    spec = datamodule.cache_spec()
    cache_dir = Path(datamodule.cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    final = cache_dir / fmt.cache_key(spec)
    tmp = cache_dir / f".{final.name}.tmp-bench"
    tmp.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    # A block of noise records written again and again: the bytes differ little, the size and
    # the access pattern are PTB-XL's.
    block = (0.1 * rng.standard_normal((64, LEADS, samples))).astype(np.float32)
    with open(tmp / fmt.SIGNALS, "wb") as f:
        for start in range(0, n, len(block)):
            f.write(block[: min(len(block), n - start)].tobytes())
    lengths = np.full(n, samples, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths * LEADS)]).astype(np.int64)
    np.savez(tmp / fmt.INDEX, offsets=offsets, lengths=lengths)
    meta = datamodule.dataset.metadata()
    meta["labels"] = meta["labels"].map(json.dumps)
    meta.to_csv(tmp / fmt.META, index=False)
    info = {**spec, "fs": 500.0, "leads": list(_leads()), "n_records": n, "skipped": [],
            "build_seconds": 0.0}  # fmt: skip
    (tmp / fmt.SPEC).write_text(json.dumps(info, indent=1, default=str))
    if final.exists():
        import shutil

        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def _leads() -> tuple[str, ...]:
    from ecgx.formats.record import LEADS as CANONICAL

    return tuple(CANONICAL)


def _compose(overrides: list[str]) -> Any:
    from ecgx.paths import config_dir

    os.environ.setdefault("ECGX_ROOT", str(config_dir().parent))
    # paths.output_dir interpolates ${hydra:...}; it is overridden, so no Hydra run is needed.
    return compose_train(overrides)


# -- the child --------------------------------------------------------------------------------
_FIELDS = ("VmHWM", "VmRSS", "RssAnon", "RssFile")


def read_status(pid: int) -> dict[str, int]:
    """Memory lines of ``/proc/<pid>/status`` in bytes (empty once the process is gone)."""
    out: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in _FIELDS:
            out[key] = int(value.split()[0]) * 1024  # kB
    return out


def train_child(overrides: list[str], log: Path, timeout: float, every: float) -> dict[str, float]:
    """Run ``ecgx train`` and return the peaks of its memory (bytes) and its wall seconds."""
    from ecgx.bench.sweep import ecgx_command

    log.parent.mkdir(parents=True, exist_ok=True)
    peaks = dict.fromkeys(_FIELDS, 0)
    env = {**os.environ}
    env.setdefault("ECGX_ROOT", str(project_root()))
    t0 = time.perf_counter()
    with open(log, "w") as out:
        child = subprocess.Popen([*ecgx_command(), "train", *overrides], stdout=out,
                                 stderr=subprocess.STDOUT, env=env)  # fmt: skip
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                for key, value in read_status(child.pid).items():
                    peaks[key] = max(peaks[key], value)
                stop.wait(every)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            # wait4 gives this child's own ru_maxrss (RUSAGE_CHILDREN would mix in others).
            status, usage = _wait(child, timeout)
        finally:
            stop.set()
            sampler.join()
    seconds = time.perf_counter() - t0
    if status != 0:
        tail = log.read_text()[-2000:]
        raise RuntimeError(f"ecgx train (memory) exited with {status}; {log}:\n{tail}")
    return {**{k: float(v) for k, v in peaks.items()},
            "ru_maxrss": float(usage.ru_maxrss) * 1024, "seconds": seconds}  # fmt: skip


def _wait(child: subprocess.Popen, timeout: float) -> tuple[int, Any]:
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid == child.pid:
            child.returncode = os.waitstatus_to_exitcode(status)
            return child.returncode, usage
        if time.monotonic() > deadline:
            child.kill()
            _, status, usage = os.wait4(child.pid, 0)
            child.returncode = os.waitstatus_to_exitcode(status)
            raise TimeoutError(f"ecgx train (memory) ran past {timeout:g} s")
        time.sleep(0.05)
