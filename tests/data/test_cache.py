"""The signal cache: built once, reopened by key, atomic, errors named or skipped and counted."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ecgx.data.cache import SignalCache, build_or_open, cache_key
from ecgx.formats.record import LEADS, Record, RecordError
from ecgx.transforms.signal import FixedLength


def _meta(n: int) -> pd.DataFrame:
    return pd.DataFrame({"record_id": [str(i) for i in range(n)], "patient_id": "p",
                         "labels": [{"NORM": 100.0}] * n})  # fmt: skip


class CountingReader:
    """Records of varying length; counts reads so a cache hit is visible."""

    def __init__(self, bad: set[str] = frozenset()) -> None:
        self.calls = 0
        self.bad = bad

    def __call__(self, row: pd.Series) -> Record:
        self.calls += 1
        if row["record_id"] in self.bad:
            raise RecordError(f"/data/{row['record_id']}.dat: truncated")
        i = int(row["record_id"])
        signal = np.arange(12 * (100 + i), dtype=np.float32).reshape(12, -1) + i
        return Record(row["record_id"], signal, 100.0, LEADS)


def _identity(x: np.ndarray, fs: float) -> tuple[np.ndarray, float]:
    return x, fs


def test_second_build_is_a_hit_with_identical_bytes(tmp_path) -> None:
    reader = CountingReader()
    spec = {"dataset": {"reader": "test"}, "offline": []}
    first = build_or_open(tmp_path, spec, _meta(5), reader, _identity)
    assert reader.calls == 5
    second = build_or_open(tmp_path, spec, _meta(5), reader, _identity)
    assert reader.calls == 5  # opened, not rebuilt
    for i in range(5):
        np.testing.assert_array_equal(first[i], second[i])
        assert second[i].shape == (12, 100 + i)  # variable lengths survive
    assert first.fixed_length() is None
    assert list(second.meta["record_id"]) == ["0", "1", "2", "3", "4"]
    assert second.meta["labels"][0] == {"NORM": 100.0}


def test_key_depends_on_offline_transforms() -> None:
    base = {"dataset": {"reader": "test"}, "offline": []}
    cropped = {**base, "offline": [FixedLength(50).spec()]}
    assert cache_key(base) != cache_key(cropped)
    assert cache_key(cropped) == cache_key({**base, "offline": [FixedLength(50).spec()]})


def test_fixed_length_store_is_a_3d_view(tmp_path) -> None:
    crop = FixedLength(80)
    cache = build_or_open(tmp_path, {"offline": [crop.spec()]}, _meta(4), CountingReader(), crop)
    assert cache.fixed_length() == 80
    np.testing.assert_array_equal(cache[3], CountingReader()(_meta(4).iloc[3]).signal[:, :80])


def test_bad_record_raises_naming_the_file(tmp_path) -> None:
    with pytest.raises(RecordError, match="/data/2.dat"):
        build_or_open(tmp_path, {"x": 1}, _meta(4), CountingReader({"2"}), _identity)
    # The failed build leaves neither a cache nor a temporary folder behind.
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


def test_skip_counts_and_names_bad_records(tmp_path) -> None:
    cache = build_or_open(tmp_path, {"x": 2}, _meta(4), CountingReader({"1", "3"}), _identity,
                          on_error="skip")  # fmt: skip
    assert len(cache) == 2
    assert [s["record_id"] for s in cache.skipped] == ["1", "3"]
    assert "truncated" in cache.skipped[0]["error"]
    assert list(cache.meta["record_id"]) == ["0", "2"]


def test_cache_pickles_without_its_data(tmp_path) -> None:
    import pickle

    cache = build_or_open(tmp_path, {"x": 3}, _meta(3), CountingReader(), _identity)
    _ = cache[0]
    blob = pickle.dumps(cache)
    assert len(blob) < 20_000  # DataLoader workers re-map the file instead of copying it
    clone: SignalCache = pickle.loads(blob)
    np.testing.assert_array_equal(clone[2], cache[2])


def test_flat_leads_are_rejected_only_when_asked(tmp_path) -> None:
    class FlatLead(CountingReader):
        def __call__(self, row: pd.Series) -> Record:
            rec = super().__call__(row)
            if row["record_id"] == "1":
                rec.signal[4] = 0.5  # aVL disconnected
            return rec

    kept = build_or_open(tmp_path, {"x": 4}, _meta(3), FlatLead(), _identity)
    assert len(kept) == 3
    with pytest.raises(RecordError, match=r"record 1: constant \(flat\) leads \['aVL'\]"):
        build_or_open(tmp_path, {"x": 5}, _meta(3), FlatLead(), _identity, reject_flat_leads=True)
    skipped = build_or_open(tmp_path, {"x": 6}, _meta(3), FlatLead(), _identity, on_error="skip",
                            reject_flat_leads=True)  # fmt: skip
    assert [s["record_id"] for s in skipped.skipped] == ["1"]


def test_listing_stamp_follows_the_file_set() -> None:
    from ecgx.data.cache import listing_stamp

    assert listing_stamp(["b.hea", "a.hea"]) == listing_stamp(["a.hea", "b.hea"])
    assert listing_stamp(["a.hea"]) != listing_stamp(["a.hea", "b.hea"])
    assert listing_stamp(["a.hea"]).startswith("1:")


def test_cinc_cache_key_changes_when_records_are_added(tmp_path) -> None:
    import shutil

    from ecgx.datasets.cinc import CinC
    from tests.conftest import SAMPLES

    source = SAMPLES / "cinc2020_cpsc"
    if not source.is_dir():
        pytest.skip(f"{source} absent")
    for name in ("A0001", "A0002"):
        for ext in ("hea", "mat"):
            shutil.copy(source / f"{name}.{ext}", tmp_path)
    before = CinC(tmp_path, edition=2020).signal_spec()
    for ext in ("hea", "mat"):
        shutil.copy(source / f"A0003.{ext}", tmp_path)
    assert CinC(tmp_path, edition=2020).signal_spec() != before


# -- reads: pread into new arrays, gathers, streams --------------------------------------------
def _varying(tmp_path) -> SignalCache:
    return build_or_open(tmp_path, {"x": "reads"}, _meta(9), CountingReader(), _identity)


def test_reads_return_exactly_the_mapped_values_in_new_arrays(tmp_path) -> None:
    cache = _varying(tmp_path)
    for i in range(len(cache)):
        start, stop = int(cache.offsets[i]), int(cache.offsets[i + 1])
        record = cache[i]
        np.testing.assert_array_equal(record, cache.flat[start:stop].reshape(12, -1))
        assert record.dtype == np.float32 and record.flags.owndata and record.flags.writeable
    cache[4][:] = -1.0  # a caller's array: the cache itself is untouched
    np.testing.assert_array_equal(cache[4], CountingReader()(_meta(9).iloc[4]).signal)


def test_gather_and_stream_match_record_by_record_reads(tmp_path) -> None:
    crop = FixedLength(80)
    fixed = build_or_open(tmp_path / "fixed", {"x": "gather"}, _meta(9), CountingReader(), crop)
    rows = [5, 6, 7, 2, 0, 1, 8]  # runs of neighbours (one read each) and jumps
    np.testing.assert_array_equal(fixed.gather(rows), np.stack([fixed[j] for j in rows]))
    assert fixed.gather([]).shape == (0, 12, 80)

    cache = _varying(tmp_path / "varying")
    with pytest.raises(ValueError, match="different lengths"):
        cache.gather([0, 1])
    rows = [3, 4, 5, 0, 8, 7, 1, 2]
    for chunk_bytes in (1, 3 * 12 * 104 * 4, 1 << 30):  # one record a read ... all at once
        streamed = list(cache.stream(rows, chunk_bytes=chunk_bytes))
        assert len(streamed) == len(rows)
        for j, record in zip(rows, streamed, strict=True):
            np.testing.assert_array_equal(record, cache[j])


def test_a_truncated_signal_file_is_named(tmp_path) -> None:
    cache = _varying(tmp_path)
    path = cache.path / "signals.f32"
    path.write_bytes(path.read_bytes()[:-100])
    reopened = SignalCache(cache.path)
    _ = reopened[0]
    with pytest.raises(
        RecordError, match=r"signals\.f32: file ends at byte .* data\.rebuild_cache"
    ):
        reopened[8]


def test_reads_work_in_a_forked_worker(tmp_path) -> None:
    import multiprocessing as mp

    cache = _varying(tmp_path)
    _ = cache[0]  # the parent's file is open before the fork
    with mp.get_context("fork").Pool(1) as pool:
        sums = pool.map(_record_sum, [(cache, j) for j in range(len(cache))])
    assert sums == [float(cache[j].sum()) for j in range(len(cache))]
    np.testing.assert_array_equal(cache[3], CountingReader()(_meta(9).iloc[3]).signal)


def _record_sum(args: tuple[SignalCache, int]) -> float:
    cache, j = args
    return float(cache[j].sum())
