"""Resumable and sharded cache builds (ecgx/data/shards.py): a build SIGKILLed mid-way resumes
from its finished chunks, decoding none of them again; N shards join into the cache an
unsharded build writes, byte for byte; missing or mismatched shards are refused by name."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ecgx.data import cache as cache_module
from ecgx.data.cache import build_or_open, build_shard, cache_key
from ecgx.data.shards import CacheIncomplete, Shard
from ecgx.errors import ConfigValueError
from ecgx.formats.record import LEADS, Record, RecordError

pytestmark = pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="no fork here")
CHUNK = 4
SPEC = {"shards-test": 1}


def _meta(n: int) -> pd.DataFrame:
    return pd.DataFrame({"record_id": [str(i) for i in range(n)], "patient_id": "p",
                         "labels": [{"NORM": 1.0}] * n})  # fmt: skip


class LoggedReader:
    """Records of varying length, each read appended to ``log`` (one line per decode, from
    any process: O_APPEND lines do not interleave); ``bad`` unreadable, ``other_fs`` refused."""

    def __init__(self, log: Path, delay: float = 0.0, bad=(), other_fs=()) -> None:
        self.log, self.delay, self.bad, self.other_fs = str(log), delay, bad, other_fs

    def __call__(self, row: dict) -> Record:
        i = int(row["record_id"])
        fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, f"{i}\n".encode())
        os.close(fd)
        time.sleep(self.delay)
        if i in self.bad:
            raise RecordError(f"/data/{i}.dat: truncated")
        signal = np.arange(12 * (30 + i % 5), dtype=np.float32).reshape(12, -1) * (i + 1)
        return Record(str(i), signal, 200.0 if i in self.other_fs else 100.0, LEADS)


def _identity(x: np.ndarray, fs: float) -> tuple[np.ndarray, float]:
    return x, fs


def _decoded(log: Path) -> list[int]:
    return [int(x) for x in log.read_text().split()] if log.exists() else []


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache_module, "CHUNK_RECORDS", CHUNK)
    monkeypatch.delenv("ECGX_BUILD_WORKERS", raising=False)


def _killed_build(cache_dir: str, log: str, n: int) -> None:
    cache_module.CHUNK_RECORDS = CHUNK  # a spawned process: the test's monkeypatch is not here
    build_or_open(cache_dir, SPEC, _meta(n), LoggedReader(Path(log), 0.01), _identity, workers=2)


def test_killed_build_resumes_from_its_finished_chunks(tmp_path: Path) -> None:
    n, cache_dir, log = 240, tmp_path / "cache", tmp_path / "killed.log"
    parts = cache_dir / f".{cache_key(SPEC)}.parts"
    proc = mp.get_context("spawn").Process(target=_killed_build, args=(str(cache_dir), str(log), n))
    proc.start()
    deadline = time.monotonic() + 60
    while len(list(parts.glob("*.json"))) < 8:  # plan.json + 7 chunk markers
        assert proc.is_alive() and time.monotonic() < deadline
        time.sleep(0.02)
    proc.kill()  # SIGKILL: its workers die with it, chunks half-written
    proc.join()
    time.sleep(0.3)  # the workers' own exits
    marked = sorted(int(p.stem) for p in parts.glob("0*.json"))
    assert 0 < len(marked) < n // CHUNK and not (cache_dir / cache_key(SPEC)).exists()
    finished = {i for k in marked for i in range(k * CHUNK, (k + 1) * CHUNK)}

    resume_log = tmp_path / "resume.log"
    cache = build_or_open(cache_dir, SPEC, _meta(n), LoggedReader(resume_log), _identity, workers=2)
    again = _decoded(resume_log)
    assert len(again) == n - len(finished) and not finished & set(again)  # none decoded twice
    assert not parts.exists()  # joined, parts removed

    whole = build_or_open(tmp_path / "whole", SPEC, _meta(n), LoggedReader(tmp_path / "w.log"),
                          _identity, workers=1)  # fmt: skip
    assert (cache.path / "signals.f32").read_bytes() == (whole.path / "signals.f32").read_bytes()
    np.testing.assert_array_equal(cache.offsets, whole.offsets)
    pd.testing.assert_frame_equal(cache.meta, whole.meta)


def test_shards_join_into_the_unsharded_cache(tmp_path: Path) -> None:
    n, cache_dir = 50, tmp_path / "cache"  # 13 chunks of 4: shards of 4, 4 and 5 chunks
    reader = LoggedReader(tmp_path / "shards.log", bad={3, 21}, other_fs={22, 41})
    build = dict(on_error="skip", workers=2)
    first = build_shard(cache_dir, SPEC, _meta(n), reader, _identity, "0/3", **build)
    assert (first.chunks, first.records, first.decoded) == (4, 16, 16)
    assert first.missing_shards == ["1/3 (4 of 4 chunks unfinished)",
                                    "2/3 (5 of 5 chunks unfinished)"]  # fmt: skip
    build_shard(cache_dir, SPEC, _meta(n), reader, _identity, "2/3", **build)
    with pytest.raises(CacheIncomplete, match=r"shards 1/3 \(4 of 4 chunks unfinished\)"):
        build_or_open(cache_dir, SPEC, _meta(n), reader, _identity, **build)
    with pytest.raises(CacheIncomplete, match="shard=1/4: .* planned as 3 shards"):
        build_shard(cache_dir, SPEC, _meta(n), reader, _identity, "1/4", **build)
    with pytest.raises(CacheIncomplete, match="plan.json: the parts were built from record list"):
        build_shard(cache_dir, SPEC, _meta(n - 1), reader, _identity, "1/3", **build)
    again = build_shard(cache_dir, SPEC, _meta(n), reader, _identity, "2/3", **build)
    assert again.decoded == 0  # finished already: nothing read
    last = build_shard(cache_dir, SPEC, _meta(n), reader, _identity, "1/3", **build)
    assert last.missing_shards == [] and last.records == 16
    assert sorted(_decoded(tmp_path / "shards.log")) == list(range(n))  # each record once

    joined = build_or_open(cache_dir, SPEC, _meta(n), LoggedReader(tmp_path / "join.log"),
                           _identity, **build)  # fmt: skip
    assert _decoded(tmp_path / "join.log") == []  # the join reads no record
    whole = build_or_open(tmp_path / "whole", SPEC, _meta(n), reader, _identity, on_error="skip",
                          workers=1)  # fmt: skip
    assert (joined.path / "signals.f32").read_bytes() == (whole.path / "signals.f32").read_bytes()
    assert joined.skipped == whole.skipped and len(joined) == n - 4
    assert [s["record_id"] for s in joined.skipped] == ["3", "21", "22", "41"]
    np.testing.assert_array_equal(joined.lengths, whole.lengths)


def test_a_bad_record_under_raise_leaves_its_chunk_unmarked(tmp_path: Path) -> None:
    reader = LoggedReader(tmp_path / "r.log", bad={9})
    with pytest.raises(RecordError, match="/data/9.dat: truncated"):
        build_or_open(tmp_path, SPEC, _meta(20), reader, _identity, workers=2)
    parts = tmp_path / f".{cache_key(SPEC)}.parts"
    marked = {int(p.stem) for p in parts.glob("0*.json")}
    assert 2 not in marked and {0, 1} <= marked  # chunk 2 holds record 9
    fixed = LoggedReader(tmp_path / "fixed.log")
    cache = build_or_open(tmp_path, SPEC, _meta(20), fixed, _identity, workers=2)
    assert len(cache) == 20 and 8 in _decoded(tmp_path / "fixed.log")
    assert not set(range(8)) & set(_decoded(tmp_path / "fixed.log"))


def test_first_error_in_record_order_across_both_kinds(tmp_path: Path) -> None:
    # Record 6's rate is refused only against the records before it (at the join), record 17 is
    # unreadable (in its chunk): 6 comes first, as in an in-process build.
    reader = LoggedReader(tmp_path / "r.log", bad={17}, other_fs={6})
    with pytest.raises(RecordError, match="record 6: fs 200.0 Hz"):
        build_or_open(tmp_path / "a", SPEC, _meta(24), reader, _identity, workers=2)
    with pytest.raises(RecordError, match="record 6: fs 200.0 Hz"):
        build_or_open(tmp_path / "b", SPEC, _meta(24), reader, _identity, workers=1)


def test_a_damaged_chunk_is_read_again(tmp_path: Path) -> None:
    build_shard(tmp_path, SPEC, _meta(12), LoggedReader(tmp_path / "a.log"), _identity, "0/1")
    parts = tmp_path / f".{cache_key(SPEC)}.parts"
    data = parts / "0000001.f32"
    data.write_bytes(data.read_bytes()[:-4])  # shorter than its marker says
    json.loads((parts / "0000001.json").read_text())  # the marker itself is intact
    log = tmp_path / "b.log"
    cache = build_or_open(tmp_path, SPEC, _meta(12), LoggedReader(log), _identity)
    assert sorted(_decoded(log)) == [4, 5, 6, 7] and len(cache) == 12
    # Parts left by a build killed after its rename (2x the disk) go at the next open.
    (parts / "0000000.f32").parent.mkdir()
    (parts / "0000000.f32").write_bytes(b"\0" * 8)
    build_or_open(tmp_path, SPEC, _meta(12), LoggedReader(log), _identity)
    assert not parts.exists() and sorted(_decoded(log)) == [4, 5, 6, 7]


@pytest.mark.parametrize("text", ["4/4", "-1/2", "a/b", "3", "1/0"])
def test_shard_names_a_bad_value(text: str) -> None:
    with pytest.raises(ConfigValueError, match=f"shard={text!r}: expected i/N"):
        Shard.parse(text)
    assert list(Shard.parse("1/3").chunks(13)) == [4, 5, 6, 7]
