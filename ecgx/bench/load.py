"""``ecgx bench suite=load``: batches from the cache, against the fastest model's appetite.

- **train step**: the fastest model of the zoo (``baseline_model``, XAI4ECG's LeNet at its seed
  input 12 x 250) trained for a few steps: forward, loss, backward, Adam; samples/s. This is the
  baseline, measured in the same run on the same device.
- **loader**: ``ECGDataModule.train_dataloader()`` of a composed ``conf/train.yaml`` (PTB-XL
  100 Hz records, ``transform=random_crop``: normalisation, random 2.5 s crops, amplitude
  scaling) iterated after a warm-up epoch, at each of ``num_workers``; batches/s and samples/s,
  the latter as a ratio to the train step (target: at least 10 x, so it never limits training).
- **cache open**: a new Python process opening the existing cache as ``ecgx train`` does on a
  hit (lock, spec, index, metadata; the signals memory-mapped) until the first record is read,
  on a cache of ``open_records`` records (PTB-XL's size by default).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from ecgx.bench.core import Context, Figure, compose_train, rates, repeat
from ecgx.bench.ingest import frozen_gc, prepare_set, samples_dir
from ecgx.errors import ConfigValueError

log = logging.getLogger(__name__)

SUITE = "load"

# Run in a new interpreter: imports are not timed (every ecgx command has them already), the
# open is, from the call to the first record's values in memory.
_OPEN_SCRIPT = """
import json, sys, time
from ecgx.data.cache import build_or_open

def _not_on_a_hit(*args):
    raise RuntimeError("cache miss: the cache was to be opened, not built")

cache_dir, spec = sys.argv[1], json.loads(sys.argv[2])
t0 = time.perf_counter()
cache = build_or_open(cache_dir, spec, _not_on_a_hit, _not_on_a_hit, _not_on_a_hit)
first = float(cache[0].sum())
print(json.dumps({"seconds": time.perf_counter() - t0, "records": len(cache), "first": first}))
"""


def run(cfg: DictConfig, ctx: Context) -> list[Figure]:
    sizes = {k: int(v) for k, v in (cfg.quick if ctx.quick else cfg.sizes).items()}
    workers = [int(w) for w in cfg.num_workers]
    if not workers or min(workers) < 0:
        raise ConfigValueError(f"load.num_workers={workers}: a list of counts >= 0")
    import ecgx.data.datamodule  # noqa: F401 - Lightning and torch imported before the freeze

    with frozen_gc():
        step = measure_train_step(str(cfg.baseline_model), int(cfg.model_batch),
                                  sizes["steps"], ctx)  # fmt: skip
        figures = [step]
        work = ctx.workdir / SUITE
        data = prepare_set("ptbxl100", samples_dir(cfg), work,
                           {"records": sizes["records"], "synthetic_base": sizes["synthetic_base"]},
                           sampling_rates=(100,))  # fmt: skip
        transform = list(cfg.transform_overrides)
        train_cfg = _compose([*data.overrides, *transform], work / "cache")
        for n_workers in workers:
            figures += measure_loader(train_cfg, transform, n_workers, int(cfg.batch_size),
                                      sizes["batches"], ctx, step.name, data.params)  # fmt: skip
        figures.append(measure_open(train_cfg, sizes["open_records"], ctx, work))
    return figures


def measure_train_step(name: str, batch: int, steps: int, ctx: Context) -> Figure:
    """samples/s of training ``name`` at its seed input shape: forward, BCE, backward, Adam."""
    import torch

    from ecgx.models import catalog
    from ecgx.paths import config_dir

    if not (config_dir() / "model" / f"{name}.yaml").is_file():
        raise ConfigValueError(f"load.baseline_model={name!r}: not a model of conf/model")
    device = torch.device(ctx.device)
    torch.manual_seed(0)
    model = catalog.build(name).to(device).train()
    leads, samples = model.input_shape
    x = torch.randn(batch, leads, samples, device=device)
    y = (torch.rand(batch, model.seed_num_classes, device=device) < 0.3).float()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def train() -> None:
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    seconds = repeat(train, ctx.repeats)
    return Figure(SUITE, f"train step {name}", "samples/s", rates(steps * batch, seconds),
                  note=f"{name} at {leads} x {samples}, batch {batch}, forward + BCE + backward + "
                  f"Adam on {ctx.device}, {ctx.threads} torch threads: the fastest model's "
                  "training speed, the loader's baseline",
                  params={"model": name, "batch": batch, "steps": steps,
                          "input": [leads, samples], "device": ctx.device})  # fmt: skip


def _compose(overrides: list[str], cache_dir: Path) -> DictConfig:
    from ecgx.paths import project_root

    return compose_train([*overrides, f"paths.root_dir={project_root()}",
                          f"paths.cache_dir={cache_dir}"])  # fmt: skip


def measure_loader(
    train_cfg: DictConfig,
    transform: list[str],
    num_workers: int,
    batch_size: int,
    batches: int,
    ctx: Context,
    baseline: str,
    params: dict[str, Any],
) -> list[Figure]:
    """batches/s and samples/s of the train loader, after a warm-up pass that starts the
    (persistent) workers."""
    import torch
    from hydra.utils import instantiate

    datamodule = instantiate(train_cfg.data, batch_size=batch_size, num_workers=num_workers)
    datamodule.prepare_data()
    datamodule.setup("fit")
    torch.manual_seed(0)
    loader = datamodule.train_dataloader()
    n = min(batches, len(loader))
    if n < 1:
        raise ConfigValueError(f"load: the train split holds no full batch of {batch_size}")
    shape: list[int] = []

    def consume() -> None:
        for i, batch in enumerate(loader):
            if i == 0:
                shape[:] = list(batch["signal"].shape)
            if i + 1 == n:
                break

    seconds = repeat(consume, ctx.repeats)
    if shape[1:] != [datamodule.num_leads, datamodule.input_length]:
        raise RuntimeError(f"load: batches of shape {shape}, expected (batch, "
                           f"{datamodule.num_leads}, {datamodule.input_length})")  # fmt: skip
    how = f"num_workers={num_workers}, batch {batch_size}, {n} batches of {shape[1:]} per pass"
    common = {**params, "num_workers": num_workers, "batch_size": batch_size, "batches": n,
              "transform": transform}  # fmt: skip
    return [
        Figure(SUITE, f"loader w{num_workers} batches", "batches/s", rates(n, seconds),
               note=f"ECGDataModule.train_dataloader(), {' '.join(transform)}: {how}",
               params=common),
        Figure(SUITE, f"loader w{num_workers} samples", "samples/s",
               rates(n * batch_size, seconds), ratio_to=baseline, target=">= 10", params=common),
    ]  # fmt: skip


def measure_open(train_cfg: DictConfig, n_records: int, ctx: Context, work: Path) -> Figure:
    """Seconds from calling the cache open in a new process to the first record's values, on a
    cache of ``n_records`` real records (the set's own, repeated to that count)."""
    from hydra.utils import instantiate

    from ecgx.data.cache import build_or_open
    from ecgx.formats.record import Record

    datamodule = instantiate(train_cfg.data)
    datamodule.prepare_data()
    source = datamodule.cache
    meta = source.meta.iloc[np.arange(n_records) % len(source)].reset_index(drop=True)
    meta["record_id"] = [str(i + 1) for i in range(n_records)]
    by_id = {rid: i % len(source) for i, rid in enumerate(meta["record_id"])}

    def read(row: Any) -> Record:
        # The stored signals of the smaller set, so the opened cache holds real records.
        return Record(row["record_id"], np.asarray(source[by_id[row["record_id"]]]),
                      source.fs, source.leads)  # fmt: skip

    spec = {"bench": "load/open", "records": n_records, "from": datamodule.cache_spec()}
    folder = work / "open-cache"
    build_or_open(folder, spec, meta, read, lambda x, fs: (x, fs))
    seconds = []
    for _ in range(ctx.repeats):  # the cache was just written: its pages are in memory
        done = subprocess.run([sys.executable, "-c", _OPEN_SCRIPT, str(folder), json.dumps(spec)],
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"load: cache open in a new process failed: {done.stderr[-2000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        if result["records"] != n_records:
            raise RuntimeError(f"load: opened {result['records']} records, built {n_records}")
        seconds.append(result["seconds"])
    return Figure(SUITE, "cache open", "s", seconds, target="<= 0.1",
                  note=f"a warm cache of {n_records:,} records (PTB-XL 100 Hz) opened in a new "
                  "process, from the call to the first record read (imports not counted)",
                  params={"records": n_records})  # fmt: skip
