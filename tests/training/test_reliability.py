"""Reliability at scale: determinism, concurrent and killed cache builds, unwritable folders."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import time
from functools import partial
from pathlib import Path

import pandas as pd
import pytest

from ecgx.data.cache import build_or_open, cache_key
from tests.data.test_cache import CountingReader, _identity, _meta

SPEC = {"dataset": {"reader": "slow-test"}, "offline": []}
N = 40


class SlowReader(CountingReader):
    """A reader slow enough for builds to overlap, or to be killed half-way."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    def __call__(self, row: pd.Series):  # noqa: ANN204 - a Record
        time.sleep(self.delay)
        return super().__call__(row)


def _logged_meta(log: str) -> pd.DataFrame:
    """The metadata callable: build_or_open calls it only when it builds."""
    with open(log, "a") as f:
        f.write(f"{os.getpid()}\n")
    return _meta(N)


def _build(cache_dir: str, log: str, delay: float) -> str:
    cache = build_or_open(cache_dir, SPEC, partial(_logged_meta, log), SlowReader(delay), _identity)
    return hashlib.sha256(cache.flat.tobytes()).hexdigest()


def test_concurrent_builds_build_once_and_read_identical_bytes(tmp_path: Path) -> None:
    log = tmp_path / "builds.log"
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        digests = pool.starmap(_build, [(str(tmp_path / "cache"), str(log), 0.02)] * 4)
    assert len(log.read_text().split()) == 1  # one process built, three waited and opened
    assert len(set(digests)) == 1
    reader = CountingReader()
    expected = b"".join(reader(row).signal.tobytes() for _, row in _meta(N).iterrows())
    assert digests[0] == hashlib.sha256(expected).hexdigest()


def test_killed_build_leaves_nothing_a_later_run_uses(tmp_path: Path) -> None:
    cache_dir, log = tmp_path / "cache", tmp_path / "builds.log"
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=_build, args=(str(cache_dir), str(log), 0.5))
    proc.start()
    deadline = time.monotonic() + 60
    while not any(p.stat().st_size for p in cache_dir.glob(".*.tmp-*/signals.f32")):
        assert proc.is_alive() and time.monotonic() < deadline
        time.sleep(0.05)
    proc.kill()  # SIGKILL mid-build: a few records written, no spec.json
    proc.join()
    key = cache_key(SPEC)
    assert not (cache_dir / key).exists()

    reader = CountingReader()
    cache = build_or_open(cache_dir, SPEC, _meta(N), reader, _identity)
    assert reader.calls == N  # rebuilt from scratch, not the partial output
    assert len(cache) == N and cache[N - 1].shape == (12, 100 + N - 1)
    # The dead build's temporary folder is cleared by the next build of the same key.
    assert [p.name for p in cache_dir.iterdir() if not p.name.endswith(".lock")] == [key]


def test_next_build_clears_what_killed_builds_of_other_keys_left(tmp_path: Path) -> None:
    from filelock import FileLock

    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    dead = cache_dir / ".deadbeefdeadbeef.tmp-1a2b3c4d"
    live = cache_dir / ".cafecafecafecafe.tmp-5e6f7a8b"
    for folder in (dead, live):
        (folder / "signals.f32").parent.mkdir()
        (folder / "signals.f32").write_bytes(b"\0" * 64)
    with FileLock(str(cache_dir / "cafecafecafecafe.lock")):  # a build of that key is running
        build_or_open(cache_dir, SPEC, _meta(3), CountingReader(), _identity)
        assert not dead.exists() and live.exists()


def _build_many(cache_dir: str, n: int, delay: float) -> None:
    build_or_open(cache_dir, SPEC, _meta(n), SlowReader(delay), _identity)  # 4 chunks of 64


def _children(pid: int) -> set[int]:
    tasks = Path(f"/proc/{pid}/task")
    return {int(c) for t in tasks.iterdir() for c in (t / "children").read_text().split()}


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has exited; only its parent's reaping is left


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_killed_parallel_build_leaves_no_worker_alive(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("ECGX_BUILD_WORKERS", "2")  # forked workers even for a small set
    cache_dir = tmp_path / "cache"
    proc = multiprocessing.get_context("spawn").Process(
        target=_build_many, args=(str(cache_dir), 256, 0.05)
    )
    proc.start()
    deadline = time.monotonic() + 60
    while len(workers := _children(proc.pid)) < 2 or not any(
        p.stat().st_size for p in cache_dir.glob(".*.parts/*.f32*")
    ):
        assert proc.is_alive() and time.monotonic() < deadline
        time.sleep(0.05)
    proc.kill()
    proc.join()
    time.sleep(5)
    assert not [pid for pid in workers if _alive(pid)]


@pytest.mark.slow
def test_same_config_and_seed_give_identical_metrics(compose_train, tmp_path: Path) -> None:
    from ecgx.commands.train import train

    runs = []
    for name in ("a", "b"):
        cfg = compose_train("debug=smoke", "trainer.deterministic=true",
                            f"tracking_uri=sqlite:///{tmp_path / name / 'mlflow.db'}",
                            f"paths.log_dir={tmp_path / name / 'logs'}")  # fmt: skip
        (tmp_path / name).mkdir()
        runs.append(train(cfg))
    assert runs[0]["test/macro_auroc"] > 0
    assert runs[0] == runs[1]  # exactly, every key


def test_unwritable_output_folder_fails_early_naming_it(compose_train, tmp_path: Path) -> None:
    from ecgx.errors import UnwritablePathError
    from ecgx.training.preflight import check_writable_paths

    (tmp_path / "afile").write_text("")  # a folder under a file: unwritable even for root
    cfg = compose_train(f"paths.output_dir={tmp_path / 'afile' / 'sub'}")
    with pytest.raises(UnwritablePathError, match=r"paths.output_dir=.*afile/sub"):
        check_writable_paths(cfg)


def test_read_only_cache_folder_fails_naming_it(compose_train, tmp_path: Path) -> None:
    from ecgx.errors import UnwritablePathError
    from ecgx.training.preflight import check_writable_paths

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as root: permissions are not enforced")
        cfg = compose_train(f"paths.cache_dir={locked}")
        with pytest.raises(UnwritablePathError, match=rf"paths.cache_dir={locked}: .*not writable"):
            check_writable_paths(cfg)
    finally:
        locked.chmod(0o700)


def test_ecgx_train_into_an_unwritable_folder_is_one_line(tmp_path: Path) -> None:
    from tests.commands.test_cli import _isolated, ecgx

    (tmp_path / "afile").write_text("")
    bad = tmp_path / "afile" / "sub"
    run = ecgx("train", *_isolated(tmp_path, tmp_path / "never-read"), f"paths.output_dir={bad}")
    assert run.returncode != 0
    assert "Traceback" not in run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("ecgx train: error: paths.output_dir=") and str(bad) in last
    assert not (tmp_path / "never-read").exists() and not (tmp_path / "mlflow.db").exists()
