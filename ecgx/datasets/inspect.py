"""``ecgx data inspect``: what a data config produces, before any training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from ecgx.paths import config_dir


def compose_data(overrides: list[str]) -> object:
    """The DataModule of ``conf/train.yaml`` with these overrides (e.g. ``dataset=ptbxl``)."""
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=["paths.output_dir=.", *overrides])
    return instantiate(cfg.data)


def label_counts(datamodule: object) -> pd.DataFrame:
    """Records and positives per class, one column per split."""
    y = datamodule.targets
    table = {}
    for name, idx in datamodule.indices.items():
        table[name] = [len(idx), *y[idx].sum(axis=0).astype(int).tolist()]
    return pd.DataFrame(table, index=["records", *datamodule.class_names])


def label_matrix(datamodule: object) -> pd.DataFrame:
    """record_id, split, one 0/1 column per class (records of the task only)."""
    meta = datamodule.cache.meta
    parts = []
    for name, idx in datamodule.indices.items():
        frame = pd.DataFrame(
            datamodule.targets[idx].astype(np.int8), columns=datamodule.class_names
        )
        frame.insert(0, "split", name)
        frame.insert(0, "record_id", meta["record_id"].iloc[idx].to_numpy())
        parts.append(frame)
    return pd.concat(parts, ignore_index=True)


def inspect(overrides: list[str], output: str | Path | None = None) -> str:
    datamodule = compose_data(overrides)
    datamodule.prepare_data()
    datamodule.setup("fit")
    cache = datamodule.cache
    lines = [
        f"dataset: {type(datamodule.dataset).__name__} {datamodule.dataset.signal_spec()}",
        f"cache: {cache.path} ({len(cache)} records, {cache.num_leads} leads, {cache.fs:g} Hz, "
        f"length {cache.fixed_length() or 'varies'})",
        f"classes ({datamodule.num_classes}): {', '.join(datamodule.class_names)}",
        f"left out (no label in the task): {datamodule.dropped_unlabelled}",
        f"skipped (unreadable): {len(cache.skipped)}",
        *[f"  {s['record_id']}: {s['error']}" for s in cache.skipped[:20]],
        "",
        label_counts(datamodule).to_string(),
    ]
    if output:
        label_matrix(datamodule).to_csv(output, index=False)
        lines.append(f"\nlabel matrix written: {output}")
    return "\n".join(lines)


def build_cache(overrides: list[str], shard: str | None = None, workers: int | None = None) -> str:
    """``ecgx data cache``: build (or resume) the cache of a data config, or one shard of it."""
    datamodule = compose_data(overrides)
    if shard is not None:
        report = datamodule.build_shard(shard, workers)
        if not report.chunks:
            return f"shard {report.shard}: the cache is already built and joined"
        left = report.missing_shards
        return (
            f"shard {report.shard}: {report.records} records in {report.chunks} chunks, "
            f"{report.decoded} read by this run in {report.seconds:.1f}s\n"
            + (f"unfinished: {', '.join(left)}" if left else
               "every shard is finished: `ecgx data cache` with the same overrides joins them")
        )  # fmt: skip
    if workers is not None:
        import os

        os.environ["ECGX_BUILD_WORKERS"] = str(workers)
    datamodule.prepare_data()
    cache = datamodule.cache
    return (f"cache: {cache.path} ({len(cache)} records, {cache.num_leads} leads, {cache.fs:g} Hz, "
            f"{len(cache.skipped)} skipped, {(cache.path / 'signals.f32').stat().st_size:,} bytes)")  # fmt: skip
