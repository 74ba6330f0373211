"""Read once, then memory-map.

The output of a reader plus the offline transforms is stored under
``<cache_dir>/<key>/`` where ``key`` hashes everything that determines it (reader spec, offline
transform specs, format version). Later runs and every job of a sweep open it in milliseconds.
A build writes into a temporary sibling and renames it into place, under a file lock, so
parallel jobs build it once and a killed build never leaves a cache a later run would use.

Records of any length are stored back to back in one flat float32 file with offsets. They are
read with ``pread`` into fresh arrays rather than through a memory map: pages read through a
map stay mapped and count in the process's resident memory, so training over a cache larger than
memory would seem to hold all of it; read this way, the file's pages are only the kernel's
(reclaimable) page cache. :attr:`SignalCache.flat` still maps the whole file for inspection.
Large sets are read by forked worker processes, chunk by chunk, each chunk into its own file
with a done-marker (:mod:`ecgx.data.shards`): a killed build resumes from the chunks marked, N
shards of one build run on N machines, and the chunks are joined into the one file: the same
bytes, skips and first error as an in-process build.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import multiprocessing as mp
import os
import shutil
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from filelock import FileLock

from ecgx.errors import ConfigValueError
from ecgx.formats.record import Record, RecordError, flat_leads

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
SIGNALS = "signals.f32"
INDEX = "index.npz"
META = "meta.csv"
SPEC = "spec.json"
# Sets smaller than this are read in-process: starting and stopping a pool forked from a
# process that has torch and Lightning loaded takes ~0.1 s, what reading ~1,000 PTB-XL records
# in-process takes, so below this the pool saves little or loses.
PARALLEL_MIN_RECORDS = 4000
CHUNK_RECORDS = 64  # records per task of a parallel build (a worker holds one chunk)
MAX_AUTO_WORKERS = 8
# Bytes read at once when streaming records (fitting a normaliser): big enough that one read
# covers many records, small enough that the process's memory does not grow with the dataset.
STREAM_BYTES = 32 << 20
ITEMSIZE = np.dtype(np.float32).itemsize


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
    """An opened cache: ``cache[i]`` is record i as a new (leads, samples) float32 array;
    :meth:`gather` reads several into one array, :meth:`stream` reads many in large chunks."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.spec = json.loads((self.path / SPEC).read_text())
        index = np.load(self.path / INDEX)
        self.offsets = index["offsets"]
        self.lengths = index["lengths"]
        self.fs = float(self.spec["fs"])
        self.leads = tuple(self.spec["leads"])
        self.meta = pd.read_csv(self.path / META, dtype={"record_id": str, "patient_id": str})
        self.meta["labels"] = _parse_labels(self.meta["labels"])
        self._flat: np.ndarray | None = None
        self._fd: int | None = None
        self._fd_pid = 0
        self._fixed: tuple[int | None] | None = None

    @property
    def flat(self) -> np.ndarray:
        """The whole signal file memory-mapped (read-only), for inspection and hashing: record
        reads do not go through it (what it reads stays resident, see the module's note), except
        on a system without ``os.preadv``."""
        # Opened lazily so DataLoader workers each map the file instead of pickling its data.
        if self._flat is None:
            size = int(self.offsets[-1])
            # A plain ndarray view of the map (it keeps the map open): the memmap subclass
            # costs a few microseconds in every ufunc on a record, per sample drawn.
            self._flat = (
                np.memmap(self.path / SIGNALS, dtype=np.float32, mode="r", shape=(size,)).view(
                    np.ndarray
                )
                if size
                else np.zeros(0, np.float32)
            )
        return self._flat

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_flat"] = None
        state["_fd"] = None
        return state

    def __del__(self) -> None:
        self.close()

    def close(self) -> None:
        """Close the file the reads use (reopened by the next read)."""
        fd, self._fd = getattr(self, "_fd", None), None
        if fd is not None and getattr(self, "_fd_pid", 0) == os.getpid():
            with contextlib.suppress(OSError):  # already closed: nothing left to release
                os.close(fd)

    def _file(self) -> int:
        # Per process: a forked worker opens its own, and never closes its parent's.
        if self._fd is None or self._fd_pid != os.getpid():
            self._fd = os.open(self.path / SIGNALS, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            self._fd_pid = os.getpid()
        return self._fd

    def _read(self, out: np.ndarray, start: int) -> None:
        """Fill ``out`` (C-contiguous float32) with the values from flat position ``start``."""
        view = memoryview(out).cast("B")
        if not _HAS_PREADV:
            view[:] = memoryview(self.flat[start : start + out.size]).cast("B")
            return
        fd, offset = self._file(), start * ITEMSIZE
        while len(view):
            done = os.preadv(fd, [view], offset)
            if done <= 0:
                raise RecordError(
                    f"{self.path / SIGNALS}: file ends at byte {offset}, the index needs "
                    f"{(start + out.size) * ITEMSIZE} (a damaged cache: rebuild it with "
                    "data.rebuild_cache=true)"
                )
            view, offset = view[done:], offset + done

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def num_leads(self) -> int:
        return len(self.leads)

    def fixed_length(self) -> int | None:
        """The common record length, or None when lengths vary."""
        # Asked for every batch: worked out once (an opened cache never changes).
        if self._fixed is None:
            same = len(self.lengths) and (self.lengths == self.lengths[0]).all()
            self._fixed = (int(self.lengths[0]) if same else None,)
        return self._fixed[0]

    def __getitem__(self, i: int) -> np.ndarray:
        start, stop = int(self.offsets[i]), int(self.offsets[i + 1])
        out = np.empty((self.num_leads, (stop - start) // max(self.num_leads, 1)), np.float32)
        self._read(out, start)
        return out

    def gather(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """Records ``rows`` (all of one length) as one new (len(rows), leads, samples) array;
        runs of consecutive records are read at once."""
        rows = np.asarray(rows, dtype=np.int64)
        lengths = self.lengths[rows]
        if len(rows) and (lengths != lengths[0]).any():
            raise ValueError(f"SignalCache.gather: records of different lengths {set(lengths)}")
        length = int(lengths[0]) if len(rows) else (self.fixed_length() or 0)
        out = np.empty((len(rows), self.num_leads, length), np.float32)
        for first, stop in _runs(rows):
            self._read(out[first:stop], int(self.offsets[rows[first]]))
        return out

    def stream(self, rows: Iterable[int], chunk_bytes: int = STREAM_BYTES) -> Iterator[np.ndarray]:
        """Records ``rows`` in order, read in chunks of about ``chunk_bytes`` (records next to
        each other in the file in one read): the process holds one chunk, whatever the number
        of records. Each record is a view of its chunk's array."""
        pending: list[int] = []
        size = 0
        for j in rows:
            pending.append(int(j))
            size += int(self.offsets[j + 1] - self.offsets[j]) * ITEMSIZE
            if size >= chunk_bytes:
                yield from self._chunk(pending)
                pending, size = [], 0
        if pending:
            yield from self._chunk(pending)

    def _chunk(self, rows: list[int]) -> Iterator[np.ndarray]:
        starts = self.offsets[rows]
        sizes = self.offsets[np.asarray(rows) + 1] - starts
        buf = np.empty(int(sizes.sum()), np.float32)
        at = np.concatenate([[0], np.cumsum(sizes)])
        for first, stop in _runs(np.asarray(rows)):
            self._read(buf[at[first] : at[stop]], int(starts[first]))
        for k in range(len(rows)):
            yield buf[at[k] : at[k + 1]].reshape(self.num_leads, -1)

    @property
    def skipped(self) -> list[dict]:
        return self.spec.get("skipped", [])


_HAS_PREADV = hasattr(os, "preadv")


def _runs(rows: np.ndarray) -> Iterator[tuple[int, int]]:
    """``(first, stop)`` positions of the runs of consecutive record numbers in ``rows``."""
    if not len(rows):
        return
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    edges = [0, *breaks.tolist(), len(rows)]
    yield from zip(edges[:-1], edges[1:])


def _parse_labels(column: pd.Series) -> pd.Series:
    texts = column.tolist()
    parsed: list | None = None
    if all(isinstance(t, str) for t in texts):
        # One JSON array parsed in C, not one json.loads per row (and no cast back to a string
        # column): most of the time of opening a cache of PTB-XL's 21,837 records.
        try:
            parsed = json.loads("[" + ",".join(texts) + "]")
        except ValueError:
            parsed = None
    if parsed is None or len(parsed) != len(texts):
        parsed = [json.loads(t) for t in texts]  # names the damaged row's error, as before
    return pd.Series(parsed, index=column.index, dtype=object, name=column.name)


def build_or_open(
    cache_dir: str | Path,
    spec: dict,
    meta: pd.DataFrame | Callable[[], pd.DataFrame],
    read: Callable[[Mapping[str, Any]], Record],
    transform: Callable[[np.ndarray, float], tuple[np.ndarray, float]],
    on_error: str = "raise",
    rebuild: bool = False,
    output_leads: Callable[[tuple[str, ...]], tuple[str, ...]] = tuple,
    reject_flat_leads: bool = False,
    workers: int | None = None,
) -> SignalCache:
    """Open the cache for ``spec``, building it first if absent (once, under a lock).

    ``read`` gets each metadata row as a dict (column -> value). ``output_leads`` names the
    rows the transform returns given the reader's lead names (a lead subset changes them).
    ``reject_flat_leads`` treats a record with a constant lead as bad (an error, or a skip with
    ``on_error="skip"``); off by default because real sets have them (3 of the 62
    Chapman/Ningbo records in the CinC 2021 sample) and the seeds trained on them. ``meta`` may
    be a callable so a cache hit never pays for listing the dataset (parsing tens of thousands
    of headers); the cache keeps its own copy of the metadata. ``workers``: processes reading
    records (None: ``ECGX_BUILD_WORKERS``, else one per usable core for sets of at least
    :data:`PARALLEL_MIN_RECORDS`); the cache is byte-identical whatever the number.
    """
    from ecgx.data import shards

    _check_on_error(on_error)
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = cache_key(spec)
    final = cache_dir / key
    parts = shards.parts_dir(cache_dir, key)
    _clear_dead_builds(cache_dir, key)
    with FileLock(str(cache_dir / f"{key}.lock")):
        if rebuild:
            shutil.rmtree(final, ignore_errors=True)
            shards.remove(parts)
        if not (final / SPEC).is_file():
            # Left by a build killed mid-way (we hold the lock: no live build owns them).
            for stale in cache_dir.glob(f".{key}.tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
            tmp = cache_dir / f".{key}.tmp-{uuid.uuid4().hex[:8]}"
            try:
                table = meta() if callable(meta) else meta
                job = _Job(table.to_dict("records"), read, transform, on_error, output_leads,
                           reject_flat_leads)  # fmt: skip
                n_workers = build_workers(len(table), workers)
                if n_workers > 1 or len(table) >= PARALLEL_MIN_RECORDS or parts.exists():
                    shards.build_resumable(tmp, parts, spec, table, job, n_workers)
                else:
                    _build(tmp, spec, table, job, n_workers)
                os.replace(tmp, final)
                shards.remove(parts)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        else:
            log.info("cache hit: %s", final)
            if parts.exists():  # a build killed between its rename and removing its parts
                shards.remove(parts)
    return SignalCache(final)


def build_shard(
    cache_dir: str | Path,
    spec: dict,
    meta: pd.DataFrame | Callable[[], pd.DataFrame],
    read: Callable[[Mapping[str, Any]], Record],
    transform: Callable[[np.ndarray, float], tuple[np.ndarray, float]],
    shard: Any,
    on_error: str = "raise",
    output_leads: Callable[[tuple[str, ...]], tuple[str, ...]] = tuple,
    reject_flat_leads: bool = False,
    workers: int | None = None,
) -> Any:
    """Build shard ``shard`` (``"i/N"``) of the cache :func:`build_or_open` would build for
    ``spec`` (same arguments), resuming it; returns a :class:`ecgx.data.shards.ShardReport`.
    Once all N are built, :func:`build_or_open` joins them. A finished cache: nothing to do."""
    from ecgx.data import shards

    _check_on_error(on_error)
    shard = shards.Shard.parse(shard)
    cache_dir = Path(cache_dir)
    key = cache_key(spec)
    if (cache_dir / key / SPEC).is_file():
        return shards.ShardReport(shard, 0, 0, 0, 0.0, [])
    table = meta() if callable(meta) else meta
    job = _Job(table.to_dict("records"), read, transform, on_error, output_leads,
               reject_flat_leads)  # fmt: skip
    return shards.build_shard(cache_dir, key, job, shard, build_workers(len(table), workers))


def _check_on_error(on_error: str) -> None:
    if on_error not in ("raise", "skip"):
        raise ConfigValueError(f"data.on_error must be 'raise' or 'skip', got {on_error!r}")


def build_workers(n_records: int, requested: int | None = None) -> int:
    """How many processes read records for a build of ``n_records``."""
    if requested is None:
        env = os.environ.get("ECGX_BUILD_WORKERS")
        if env:
            try:
                requested = int(env)
            except ValueError:
                raise ConfigValueError(f"ECGX_BUILD_WORKERS={env!r}: expected an integer") from None
        elif n_records < PARALLEL_MIN_RECORDS:
            return 1
        else:
            requested = min(usable_cores(), MAX_AUTO_WORKERS)
    if requested < 1:
        raise ConfigValueError(f"cache build workers must be at least 1, got {requested}")
    # Workers are forked (the reader and transforms need not pickle); where fork is missing,
    # or inside a daemonic process, which may not have children, the build stays in-process.
    if "fork" not in mp.get_all_start_methods() or mp.current_process().daemon:
        return 1
    return min(requested, max(1, -(-n_records // CHUNK_RECORDS)))


def usable_cores() -> int:
    """Cores this process may run on (its affinity where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@dataclass
class _Job:
    """One build's inputs: what a worker needs to turn metadata rows into signal bytes."""

    rows: list[dict[str, Any]]
    read: Callable[[Mapping[str, Any]], Record]
    transform: Callable[[np.ndarray, float], tuple[np.ndarray, float]]
    on_error: str
    output_leads: Callable[[tuple[str, ...]], tuple[str, ...]]
    reject_flat_leads: bool

    def prepare(self, row: Mapping[str, Any]) -> tuple[np.ndarray, str, float, tuple[str, ...]]:
        """One record through the reader and the offline transforms, checked on its own."""
        rec = self.read(row)
        if self.reject_flat_leads and (flat := flat_leads(rec.signal, rec.leads)):
            raise RecordError(f"record {rec.record_id}: constant (flat) leads {flat}")
        x, fs = self.transform(rec.signal, rec.fs)
        names = tuple(self.output_leads(rec.leads))
        if x.ndim != 2 or x.shape[0] != len(names):
            raise RecordError(
                f"record {rec.record_id}: the offline transforms returned shape "
                f"{x.shape}, expected ({len(names)} leads {list(names)}, samples)"
            )
        return np.ascontiguousarray(x, dtype=np.float32), str(rec.record_id), fs, names


class _Merge:
    """The checks across records and the bookkeeping, in record order however they were read."""

    def __init__(self, rows: list[dict[str, Any]], on_error: str) -> None:
        self.rows = rows
        self.on_error = on_error
        self.lengths: list[int] = []
        self.kept: list[int] = []
        self.skipped: list[dict] = []
        self.fs: float | None = None
        self.leads: tuple[str, ...] | None = None

    def fail(self, pos: int, err: RecordError) -> None:
        if self.on_error == "raise":
            raise err
        self.skipped.append({"record_id": str(self.rows[pos]["record_id"]), "error": str(err)})
        log.warning("skipped: %s", err)

    def admit(self, pos: int, record_id: str, fs: float, names: tuple[str, ...], n: int) -> bool:
        """True when the record agrees with the ones kept before it (then it is kept)."""
        if self.fs is not None and fs != self.fs:
            self.fail(pos, RecordError(
                f"record {record_id}: fs {fs} Hz after the offline transforms, others have "
                f"{self.fs} Hz (add transform Resample)"))  # fmt: skip
            return False
        if self.leads is not None and names != self.leads:
            self.fail(pos, RecordError(f"record {record_id}: leads {names} != {self.leads}"))
            return False
        self.fs, self.leads = fs, names
        self.lengths.append(n)
        self.kept.append(pos)
        return True


# The worker's job, set before the pool forks so that it is inherited rather than pickled.
_JOB: _Job | None = None


def _clear_dead_builds(cache_dir: Path, own: str) -> None:
    """Temporary folders of other keys' builds that were killed (a 40 % build of 20,000
    records is ~2 GB): a folder whose key's lock can be taken at once has no live builder."""
    for tmp in cache_dir.glob(".*.tmp-*"):
        key = tmp.name[1:].split(".tmp-")[0]
        if key == own:
            continue  # cleared under our own lock below
        lock = FileLock(str(cache_dir / f"{key}.lock"))
        try:
            lock.acquire(timeout=0)
        except TimeoutError:
            continue  # being built right now
        try:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
                log.info("removed %s, left by a killed cache build", tmp.name)
        finally:
            lock.release()


def _die_with_parent(parent: int) -> None:
    """Worker initializer: a worker outlives a SIGKILLed build otherwise (reparented, ~400 MB,
    blocked on its result pipe for ever). Linux delivers SIGKILL to it when the parent dies;
    nothing in concurrent.futures does this, hence prctl by hand."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGKILL))
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)


def _build(out: Path, spec: dict, meta: pd.DataFrame, job: _Job, workers: int) -> None:
    """In-process, straight into ``out`` (small sets: redoing them costs less than chunks)."""
    out.mkdir(parents=True)
    t0 = time.perf_counter()
    merge = _Merge(job.rows, job.on_error)
    with open(out / SIGNALS, "wb") as f:
        for pos, row in enumerate(job.rows):
            try:
                x, record_id, fs, names = job.prepare(row)
            except RecordError as err:
                merge.fail(pos, err)
                continue
            if merge.admit(pos, record_id, fs, names, x.shape[-1]):
                f.write(memoryview(x).cast("B"))
    _finish(out, spec, meta, merge, workers, t0)


def _finish(
    out: Path, spec: dict, meta: pd.DataFrame, merge: _Merge, workers: int, t0: float
) -> None:
    if not merge.kept:
        raise RecordError(f"no readable records ({len(merge.skipped)} skipped) for {spec}")
    n_leads = len(merge.leads or ())
    lengths_arr = np.asarray(merge.lengths, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths_arr * n_leads)]).astype(np.int64)
    np.savez(out / INDEX, offsets=offsets, lengths=lengths_arr)
    table = meta.iloc[merge.kept].copy()
    table["labels"] = table["labels"].map(json.dumps)
    table.to_csv(out / META, index=False)
    info = {
        **spec,
        "fs": merge.fs,
        "leads": list(merge.leads or ()),
        "n_records": len(merge.kept),
        "skipped": merge.skipped,
        "build_seconds": round(time.perf_counter() - t0, 3),
        "build_workers": workers,
    }
    (out / SPEC).write_text(json.dumps(info, indent=1, default=str))
    log.info(
        "cache built: %d records in %.1fs (%d skipped, %d workers)",
        len(merge.kept),
        info["build_seconds"],
        len(merge.skipped),
        workers,
    )
