"""Resumable and sharded cache builds: the cache written chunk by chunk into a parts folder.

A large build (:data:`ecgx.data.cache.PARALLEL_MIN_RECORDS` records or more, or any build with
several workers) writes each chunk of :data:`~ecgx.data.cache.CHUNK_RECORDS` records into its
own file ``<cache_dir>/.<key>.parts/<chunk>.f32``, fsync'd, then a done-marker
``<chunk>.json`` (what each of its records became), fsync'd and renamed into place. A chunk with
a marker is finished: a build killed at any moment continues on the next call from the chunks
marked, decoding none of them again, and a half-written chunk (no marker) is read again.

Shard ``i/N`` builds the i-th contiguous run of chunks (so of records) into the same parts
folder, which may sit on a filesystem shared by many machines; ``plan.json`` there fixes the
record list and N for all of them. When every chunk is marked, one call joins them: the markers
are merged in record order (the same skips and cross-record checks as an in-process build) and
the chunk files concatenated into the one ``signals.f32`` that :class:`~ecgx.data.cache.SignalCache`
reads. Concatenating (rather than an index over N files) keeps the reader and its one ``pread``
per batch unchanged and the cache byte-identical to an unsharded build; it costs one sequential
copy (``os.copy_file_range``, in the kernel) and, until the parts are removed, twice the disk.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from filelock import FileLock

from ecgx.data import cache as C
from ecgx.errors import ConfigValueError, EcgxError
from ecgx.formats.record import RecordError

log = logging.getLogger(__name__)

PLAN = "plan.json"


class CacheIncomplete(EcgxError):
    """A sharded build whose shards are not all finished (or do not belong together)."""


class ChunkError(RecordError):
    """The first unreadable record of a build under on_error=raise, in chunk ``chunk``."""

    def __init__(self, message: str, chunk: int) -> None:
        super().__init__(message)
        self.chunk = chunk


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count``: the index-th contiguous run of the build's chunks."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str | Shard | None) -> Shard:
        """``"i/N"`` (0 <= i < N); None is the whole build, ``0/1``."""
        if text is None:
            return cls(0, 1)
        if isinstance(text, Shard):
            return text
        head, sep, tail = str(text).partition("/")
        try:
            index, count = int(head), int(tail)
        except ValueError:
            index, count = -1, 0
        if not sep or count < 1 or not 0 <= index < count:
            raise ConfigValueError(f"shard={text!r}: expected i/N with 0 <= i < N, e.g. 0/4")
        return cls(index, count)

    def chunks(self, n_chunks: int) -> range:
        return range(self.index * n_chunks // self.count, (self.index + 1) * n_chunks // self.count)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass
class ShardReport:
    """What one call of :func:`build_shard` did."""

    shard: Shard
    chunks: int  # chunks of this shard
    records: int  # records of this shard
    decoded: int  # records read by this call (0 when the shard was already finished)
    seconds: float
    missing_shards: list[str]  # shards of the build with chunks still unmarked (this one: none)


def parts_dir(cache_dir: Path, key: str) -> Path:
    return cache_dir / f".{key}.parts"


def n_chunks(n_records: int) -> int:
    return -(-n_records // C.CHUNK_RECORDS)


def records_digest(rows: list[dict]) -> str:
    ids = "\n".join(str(r["record_id"]) for r in rows)
    return f"{len(rows)}:" + hashlib.sha256(ids.encode()).hexdigest()[:16]


def check_plan(parts: Path, rows: list[dict], shard: Shard, create: bool) -> dict:
    """The parts folder's plan (record list, chunk size, shard count), written by the first
    builder; a builder whose record list or N differs is refused by name."""
    plan = {"records": records_digest(rows), "chunk_records": C.CHUNK_RECORDS,
            "shards": shard.count}  # fmt: skip
    path = parts / PLAN
    parts.mkdir(parents=True, exist_ok=True)
    with FileLock(str(parts / "plan.lock")):
        if not path.is_file():
            if not create:
                return plan
            _write_atomic(path, json.dumps(plan).encode())
            return plan
        have = json.loads(path.read_text())
    if have["records"] != plan["records"] or have["chunk_records"] != plan["chunk_records"]:
        raise CacheIncomplete(
            f"{path}: the parts were built from record list {have['records']} in chunks of "
            f"{have['chunk_records']}; this build has {plan['records']} in chunks of "
            f"{plan['chunk_records']} (different data under one cache key: delete {parts} or "
            "rebuild with data.rebuild_cache=true)"
        )
    if create and have["shards"] != shard.count:
        raise CacheIncomplete(
            f"shard={shard}: {path} was planned as {have['shards']} shards; run shards i/"
            f"{have['shards']}, or delete {parts} to start over with {shard.count}"
        )
    return have


def chunk_done(parts: Path, k: int) -> bool:
    """Chunk ``k`` has its marker and its bytes (the marker says how many)."""
    marker, data = parts / f"{k:07d}.json", parts / f"{k:07d}.f32"
    if not marker.is_file() or not data.is_file():
        return False
    try:
        items = json.loads(marker.read_text())["items"]
    except (ValueError, KeyError):
        return False  # an old or damaged marker: the chunk is read again
    return data.stat().st_size == sum(item[5] for item in items if len(item) == 6)


def build_chunk(job: C._Job, parts: Path, k: int, start: int, stop: int) -> tuple[int, str | None]:
    """Read records ``start:stop`` into chunk file ``k``, then mark it finished; returns
    (records read, the first error under on_error=raise, which leaves the chunk unmarked)."""
    arrays, items = [], []
    for pos in range(start, stop):
        try:
            x, record_id, fs, names = job.prepare(job.rows[pos])
        except RecordError as err:
            if job.on_error == "raise":
                return pos - start + 1, str(err)
            items.append([pos, str(err)])
            continue
        arrays.append(x)
        items.append([pos, record_id, fs, list(names), int(x.shape[-1]), int(x.nbytes)])
    tag = f".tmp-{os.getpid()}"  # per process: two shard runs of one chunk never share a file
    data = parts / f"{k:07d}.f32"
    with open(data.with_name(data.name + tag), "wb") as f:
        for x in arrays:
            f.write(memoryview(x).cast("B"))
        f.flush()
        os.fsync(f.fileno())  # the bytes are on disk before the marker says so
    os.replace(data.with_name(data.name + tag), data)
    _write_atomic(parts / f"{k:07d}.json", json.dumps({"items": items}).encode(), tag)
    return stop - start, None


def _write_atomic(path: Path, blob: bytes, tag: str = "") -> None:
    tmp = path.with_name(path.name + (tag or f".tmp-{os.getpid()}"))
    with open(tmp, "wb") as f:
        f.write(blob)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _build_chunk(k: int, start: int, stop: int) -> tuple[int, str | None]:
    assert C._JOB is not None and _PARTS is not None
    return build_chunk(C._JOB, _PARTS, k, start, stop)


_PARTS: Path | None = None  # the parts folder of the forked workers' build (inherited)


def build_chunks(job: C._Job, parts: Path, shard: Shard, workers: int) -> tuple[int, int]:
    """Read every unmarked chunk of ``shard``: (records read, chunks already marked). Raises
    the first bad record in record order under on_error=raise, as an in-process build does."""
    global _PARTS
    n = len(job.rows)
    todo, done = [], 0
    for k in shard.chunks(n_chunks(n)):
        if chunk_done(parts, k):
            done += 1
        else:
            todo.append((k, k * C.CHUNK_RECORDS, min((k + 1) * C.CHUNK_RECORDS, n)))
    if done:
        log.info("cache build resumed: %d chunks already finished, %d to read", done, len(todo))
    decoded, t0, every = 0, time.perf_counter(), max(1, len(todo) // 20)
    if workers <= 1 or len(todo) <= 1:
        results = (build_chunk(job, parts, *task) for task in todo)
        pool = None
    else:
        C._JOB, _PARTS = job, parts
        pool = ProcessPoolExecutor(min(workers, len(todo)), mp_context=mp.get_context("fork"),
                                   initializer=C._die_with_parent, initargs=(os.getpid(),))  # fmt: skip
        results = pool.map(_build_chunk, *zip(*todo))
    try:
        for i, (count, error) in enumerate(results, 1):
            decoded += count
            if error is not None:
                raise ChunkError(error, todo[i - 1][0])
            if i % every == 0:
                rate = decoded / max(time.perf_counter() - t0, 1e-9)
                log.info("cache build: %d/%d chunks, %.0f records/s", i, len(todo), rate)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
            C._JOB, _PARTS = None, None
    return decoded, done


def missing_shards(parts: Path, n_records: int, count: int) -> list[str]:
    """The shards (of ``count``) with an unmarked chunk, each with how many."""
    out = []
    for i in range(count):
        chunks = Shard(i, count).chunks(n_chunks(n_records))
        left = sum(not chunk_done(parts, k) for k in chunks)
        if left:
            out.append(f"{i}/{count} ({left} of {len(chunks)} chunks unfinished)")
    return out


def build_shard(
    cache_dir: Path,
    key: str,
    job: C._Job,
    shard: Shard,
    workers: int,
) -> ShardReport:
    """Build shard ``shard`` of the cache ``key`` into its parts folder (resuming it)."""
    t0 = time.perf_counter()
    parts = parts_dir(cache_dir, key)
    plan = check_plan(parts, job.rows, shard, create=True)
    decoded, _ = build_chunks(job, parts, shard, workers)
    chunks = shard.chunks(n_chunks(len(job.rows)))
    records = min(chunks.stop * C.CHUNK_RECORDS, len(job.rows)) - chunks.start * C.CHUNK_RECORDS
    return ShardReport(shard, len(chunks), max(records, 0), decoded,
                       round(time.perf_counter() - t0, 3),
                       missing_shards(parts, len(job.rows), plan["shards"]))  # fmt: skip


def build_resumable(
    out: Path, parts: Path, spec: dict, meta: pd.DataFrame, job: C._Job, workers: int
) -> int:
    """The whole build through the parts folder into ``out``: unmarked chunks read (unless the
    parts are another call's shards: those must be finished by their own runs), then joined.
    Returns the records read by this call."""
    t0 = time.perf_counter()
    plan = check_plan(parts, job.rows, Shard(0, 1), create=False)
    decoded = 0
    if plan["shards"] == 1:
        check_plan(parts, job.rows, Shard(0, 1), create=True)
        try:
            decoded, _ = build_chunks(job, parts, Shard(0, 1), workers)
        except ChunkError as err:
            # A record before it refused by the checks across records (another rate, other
            # leads) is the first error in record order, as in an in-process build.
            _merge(parts, job, range(err.chunk))
            raise
    elif missing := missing_shards(parts, len(job.rows), plan["shards"]):
        raise CacheIncomplete(
            f"{parts}: a build in {plan['shards']} shards, not finished: shards "
            f"{', '.join(missing)}; run `ecgx data cache <the same overrides> --shard i/"
            f"{plan['shards']}` for each"
        )
    join(out, parts, spec, meta, job, workers, t0)
    return decoded


def join(
    out: Path, parts: Path, spec: dict, meta: pd.DataFrame, job: C._Job, workers: int, t0: float
) -> None:
    """Every chunk's marker merged in record order, their bytes concatenated into ``out``."""
    out.mkdir(parents=True)
    merge = C._Merge(job.rows, job.on_error)
    with open(out / C.SIGNALS, "wb") as dst:
        for k in range(n_chunks(len(job.rows))):
            keep = _admit(parts, k, merge)
            chunk = parts / f"{k:07d}.f32"
            with open(chunk, "rb") as src:
                for start, size in keep:
                    _copy(src.fileno(), dst.fileno(), start, size, chunk)
    C._finish(out, spec, meta, merge, workers, t0)


def _admit(parts: Path, k: int, merge: C._Merge) -> list[tuple[int, int]]:
    """Chunk ``k``'s records through the checks across records: the byte ranges kept."""
    keep: list[tuple[int, int]] = []
    at = 0
    for item in json.loads((parts / f"{k:07d}.json").read_text())["items"]:
        if len(item) == 2:
            merge.fail(item[0], RecordError(item[1]))
            continue
        pos, record_id, fs, names, length, nbytes = item
        if merge.admit(pos, record_id, fs, tuple(names), length):
            if keep and keep[-1][0] + keep[-1][1] == at:
                keep[-1] = (keep[-1][0], keep[-1][1] + nbytes)
            else:
                keep.append((at, nbytes))
        at += nbytes
    return keep


def _merge(parts: Path, job: C._Job, chunks: range) -> None:
    merge = C._Merge(job.rows, job.on_error)
    for k in chunks:
        _admit(parts, k, merge)


def _copy(src: int, dst: int, offset: int, size: int, name: Path) -> None:
    while size:
        try:
            done = os.copy_file_range(src, dst, size, offset)
        except (AttributeError, OSError):  # not Linux, or a filesystem that refuses it
            done = os.write(dst, os.pread(src, min(size, 1 << 24), offset))
        if done <= 0:
            raise RecordError(f"{name}: ends {size} bytes before its marker says (a damaged "
                              "part: delete it and its .json, and build again)")  # fmt: skip
        offset, size = offset + done, size - done


def remove(parts: Path) -> None:
    shutil.rmtree(parts, ignore_errors=True)
