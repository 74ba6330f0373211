"""Read once, then memory-map.

The output of a reader plus the offline transforms is stored under
``<cache_dir>/<key>/`` where ``key`` hashes everything that determines it (reader spec, offline
transform specs, format version). Later runs and every job of a sweep open it in milliseconds.
A build writes into a temporary sibling and renames it into place, under a file lock, so
parallel jobs build it once and a killed build never leaves a cache a later run would use.

Records of any length are stored back to back in one flat float32 file with offsets; when all
records have the same shape the store is also a zero-copy (N, leads, samples) view.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from filelock import FileLock

from ecgx.data.record import Record, RecordError, flat_leads
from ecgx.errors import ConfigValueError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
SIGNALS = "signals.f32"
INDEX = "index.npz"
META = "meta.csv"
SPEC = "spec.json"


def file_stamp(path: Path) -> list[int]:
    """Size and modification time: part of a reader's signal spec for its index files, so a
    regenerated or updated dataset at the same root never reuses an old cache."""
    stat = Path(path).stat()
    return [stat.st_size, stat.st_mtime_ns]


def listing_stamp(paths: Iterable[Path | str]) -> str:
    """A digest of a file listing: records added or removed under a root change the key."""
    names = sorted(Path(p).as_posix() for p in paths)
    return f"{len(names)}:" + hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]


def cache_key(spec: dict) -> str:
    blob = json.dumps({"format": FORMAT_VERSION, **spec}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class SignalCache:
    """An opened cache: ``cache[i]`` is record i as (leads, samples) float32 (read-only)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.spec = json.loads((self.path / SPEC).read_text())
        index = np.load(self.path / INDEX)
        self.offsets = index["offsets"]
        self.lengths = index["lengths"]
        self.fs = float(self.spec["fs"])
        self.leads = tuple(self.spec["leads"])
        self.meta = pd.read_csv(self.path / META, dtype={"record_id": str, "patient_id": str})
        self.meta["labels"] = self.meta["labels"].map(json.loads)
        self._flat: np.ndarray | None = None

    @property
    def flat(self) -> np.ndarray:
        # Opened lazily so DataLoader workers each map the file instead of pickling its data.
        if self._flat is None:
            size = int(self.offsets[-1])
            self._flat = (
                np.memmap(self.path / SIGNALS, dtype=np.float32, mode="r", shape=(size,))
                if size
                else np.zeros(0, np.float32)
            )
        return self._flat

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_flat"] = None
        return state

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def num_leads(self) -> int:
        return len(self.leads)

    def fixed_length(self) -> int | None:
        """The common record length, or None when lengths vary."""
        if len(self.lengths) and (self.lengths == self.lengths[0]).all():
            return int(self.lengths[0])
        return None

    def __getitem__(self, i: int) -> np.ndarray:
        start, stop = int(self.offsets[i]), int(self.offsets[i + 1])
        return self.flat[start:stop].reshape(self.num_leads, -1)

    @property
    def skipped(self) -> list[dict]:
        return self.spec.get("skipped", [])


def build_or_open(
    cache_dir: str | Path,
    spec: dict,
    meta: pd.DataFrame | Callable[[], pd.DataFrame],
    read: Callable[[pd.Series], Record],
    transform: Callable[[np.ndarray, float], tuple[np.ndarray, float]],
    on_error: str = "raise",
    rebuild: bool = False,
    output_leads: Callable[[tuple[str, ...]], tuple[str, ...]] = tuple,
    reject_flat_leads: bool = False,
) -> SignalCache:
    """Open the cache for ``spec``, building it first if absent (once, under a lock).

    ``output_leads`` names the rows the transform returns given the reader's lead names (a lead
    subset changes them). ``reject_flat_leads`` treats a record with a constant lead as bad
    (an error, or a skip with ``on_error="skip"``); off by default because real sets have
    them (3 of the 62 Chapman/Ningbo records in the CinC 2021 sample) and the seeds trained on
    them. ``meta`` may be a callable so a cache hit never pays for listing the dataset (parsing tens
    of thousands of headers); the cache keeps its own copy of the metadata.
    """
    if on_error not in ("raise", "skip"):
        raise ConfigValueError(f"data.on_error must be 'raise' or 'skip', got {on_error!r}")
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = cache_key(spec)
    final = cache_dir / key
    with FileLock(str(cache_dir / f"{key}.lock")):
        if rebuild and final.exists():
            shutil.rmtree(final)
        if not (final / SPEC).is_file():
            # Left by a build killed mid-way (we hold the lock: no live build owns them).
            for stale in cache_dir.glob(f".{key}.tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
            tmp = cache_dir / f".{key}.tmp-{uuid.uuid4().hex[:8]}"
            try:
                table = meta() if callable(meta) else meta
                _build(tmp, spec, table, read, transform, on_error, output_leads,
                       reject_flat_leads)  # fmt: skip
                os.replace(tmp, final)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        else:
            log.info("cache hit: %s", final)
    return SignalCache(final)


def _build(
    out: Path,
    spec: dict,
    meta: pd.DataFrame,
    read: Callable[[pd.Series], Record],
    transform: Callable[[np.ndarray, float], tuple[np.ndarray, float]],
    on_error: str,
    output_leads: Callable[[tuple[str, ...]], tuple[str, ...]],
    reject_flat_leads: bool,
) -> None:
    out.mkdir(parents=True)
    t0 = time.perf_counter()
    lengths: list[int] = []
    kept: list[int] = []
    skipped: list[dict] = []
    fs_out: float | None = None
    leads: tuple[str, ...] | None = None
    with open(out / SIGNALS, "wb") as f:
        for pos, (_, row) in enumerate(meta.iterrows()):
            try:
                rec = read(row)
                if reject_flat_leads and (flat := flat_leads(rec.signal, rec.leads)):
                    raise RecordError(f"record {rec.record_id}: constant (flat) leads {flat}")
                x, fs = transform(rec.signal, rec.fs)
                names = tuple(output_leads(rec.leads))
                if x.ndim != 2 or x.shape[0] != len(names):
                    raise RecordError(
                        f"record {rec.record_id}: the offline transforms returned shape "
                        f"{x.shape}, expected ({len(names)} leads {list(names)}, samples)"
                    )
                if fs_out is not None and fs != fs_out:
                    raise RecordError(
                        f"record {rec.record_id}: fs {fs} Hz after the offline transforms, "
                        f"others have {fs_out} Hz (add transform Resample)"
                    )
                if leads is not None and names != leads:
                    raise RecordError(f"record {rec.record_id}: leads {names} != {leads}")
            except RecordError as err:
                if on_error == "raise":
                    raise
                skipped.append({"record_id": str(row["record_id"]), "error": str(err)})
                log.warning("skipped: %s", err)
                continue
            fs_out, leads = fs, names
            f.write(np.ascontiguousarray(x, dtype=np.float32).tobytes())
            lengths.append(x.shape[-1])
            kept.append(pos)
    if not kept:
        raise RecordError(f"no readable records ({len(skipped)} skipped) for {spec}")
    n_leads = len(leads or ())
    lengths_arr = np.asarray(lengths, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths_arr * n_leads)]).astype(np.int64)
    np.savez(out / INDEX, offsets=offsets, lengths=lengths_arr)
    table = meta.iloc[kept].copy()
    table["labels"] = table["labels"].map(json.dumps)
    table.to_csv(out / META, index=False)
    info = {
        **spec,
        "fs": fs_out,
        "leads": list(leads or ()),
        "n_records": len(kept),
        "skipped": skipped,
        "build_seconds": round(time.perf_counter() - t0, 3),
    }
    (out / SPEC).write_text(json.dumps(info, indent=1, default=str))
    log.info(
        "cache built: %d records in %.1fs (%d skipped)",
        len(kept),
        info["build_seconds"],
        len(skipped),
    )
