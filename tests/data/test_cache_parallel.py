"""A cache built by worker processes equals the in-process build: bytes, skips, first error."""

from __future__ import annotations

import multiprocessing as mp

import numpy as np
import pandas as pd
import pytest

from ecgx.data import cache as cache_module
from ecgx.data.cache import build_or_open, build_workers
from ecgx.errors import ConfigValueError
from ecgx.formats.record import LEADS, Record, RecordError

pytestmark = pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="no fork here")


def _meta(n: int) -> pd.DataFrame:
    return pd.DataFrame({"record_id": [str(i) for i in range(n)], "patient_id": "p",
                         "labels": [{"NORM": float(i)} for i in range(n)]})  # fmt: skip


class Reader:
    """Records of varying length; some unreadable, some at another rate or with other leads."""

    def __init__(self, bad=(), other_fs=(), other_leads=(), crash=()) -> None:
        self.bad, self.other_fs, self.other_leads, self.crash = bad, other_fs, other_leads, crash

    def __call__(self, row: dict) -> Record:
        i = int(row["record_id"])
        if i in self.bad:
            raise RecordError(f"/data/{i}.dat: truncated")
        if i in self.crash:
            raise KeyError(f"reader bug at {i}")
        signal = np.arange(12 * (50 + i % 7), dtype=np.float32).reshape(12, -1) * (i + 1)
        leads = LEADS[::-1] if i in self.other_leads else LEADS
        return Record(str(i), signal, 200.0 if i in self.other_fs else 100.0, leads)


def _identity(x: np.ndarray, fs: float) -> tuple[np.ndarray, float]:
    return x, fs


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    # Many chunks from a few records, so records cross chunk and worker boundaries.
    monkeypatch.setattr(cache_module, "CHUNK_RECORDS", 3)
    monkeypatch.delenv("ECGX_BUILD_WORKERS", raising=False)


def _both(tmp_path, reader: Reader, n: int = 20, **kw):
    one = build_or_open(tmp_path / "one", {"k": 1}, _meta(n), reader, _identity, workers=1, **kw)
    two = build_or_open(tmp_path / "two", {"k": 1}, _meta(n), reader, _identity, workers=2, **kw)
    return one, two


def _assert_same(one, two) -> None:
    assert (one.path / "signals.f32").read_bytes() == (two.path / "signals.f32").read_bytes()
    np.testing.assert_array_equal(one.offsets, two.offsets)
    np.testing.assert_array_equal(one.lengths, two.lengths)
    pd.testing.assert_frame_equal(one.meta, two.meta)
    assert one.skipped == two.skipped
    assert two.spec["build_workers"] == 2 and one.spec["build_workers"] == 1


def test_parallel_build_is_byte_identical(tmp_path) -> None:
    one, two = _both(tmp_path, Reader())
    _assert_same(one, two)
    assert len(two) == 20 and two[19].shape == (12, 50 + 19 % 7)
    np.testing.assert_array_equal(two[7], Reader()({"record_id": "7"}).signal)


def test_skips_and_refusals_across_chunks_match(tmp_path) -> None:
    # Unreadable records, and records refused only by comparison with the records kept before
    # them (their bytes are written by a worker, then cut out of the file).
    reader = Reader(bad={0, 4, 11}, other_fs={5, 6, 13}, other_leads={17})
    one, two = _both(tmp_path, reader, on_error="skip")
    _assert_same(one, two)
    assert [s["record_id"] for s in two.skipped] == ["0", "4", "5", "6", "11", "13", "17"]
    assert "200.0 Hz" in two.skipped[2]["error"] and "leads" in two.skipped[-1]["error"]
    assert list(two.meta["record_id"])[:3] == ["1", "2", "3"]


def test_first_bad_record_in_order_stops_the_build(tmp_path) -> None:
    with pytest.raises(RecordError, match="/data/4.dat: truncated"):
        build_or_open(tmp_path, {"k": 2}, _meta(30), Reader(bad={4, 25}), _identity, workers=2)
    with pytest.raises(RecordError, match="record 8: fs 200.0 Hz .* others have 100.0 Hz"):
        build_or_open(tmp_path, {"k": 3}, _meta(30), Reader(other_fs={8}), _identity, workers=2)
    # No cache and no temporary folder is left behind; only the finished chunks' parts, kept
    # so the next try (the bad record fixed) reads the rest only.
    left = [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")]
    assert all(name.startswith(".") and name.endswith(".parts") for name in left), left


def test_a_reader_bug_in_a_worker_surfaces(tmp_path) -> None:
    with pytest.raises(KeyError, match="reader bug at 10"):
        build_or_open(tmp_path, {"k": 4}, _meta(30), Reader(crash={10}), _identity, workers=2)


def test_worker_count(monkeypatch: pytest.MonkeyPatch) -> None:
    assert build_workers(cache_module.PARALLEL_MIN_RECORDS - 1) == 1  # small sets: in-process
    assert build_workers(10, 2) == 2
    assert build_workers(4, 8) == 2  # never more workers than chunks (3 records each here)
    monkeypatch.setenv("ECGX_BUILD_WORKERS", "1")
    assert build_workers(10**6) == 1
    monkeypatch.setenv("ECGX_BUILD_WORKERS", "two")
    with pytest.raises(ConfigValueError, match="ECGX_BUILD_WORKERS='two'"):
        build_workers(10**6)
    with pytest.raises(ConfigValueError, match="at least 1"):
        build_workers(10, 0)
