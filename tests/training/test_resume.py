"""A training job killed with SIGKILL mid-run, rerun with ``resume=true``, continues from its
last checkpoint into the same MLflow run and ends with an uninterrupted run's metrics."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.helpers.kill import ENV

# Small enough for 2 busy cores, long enough (several seconds an epoch) to be killed mid-run.
JOB = ["debug=smoke", "trainer.max_epochs=3", "trainer.limit_train_batches=3",
       "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "trainer.deterministic=true",
       "data.batch_size=8", "module.bootstrap_resamples=0", "experiment_name=resume",
       # armed only by $ECGX_KILL_AT, so killed, resumed and reference runs share one config
       "+callbacks.kill._target_=tests.helpers.kill.KillAt"]  # fmt: skip


# One thread: with 2 intra-op threads a resumed process (other allocations, other buffer
# alignment) was seen to drift by ~1e-5 in the loss from the second epoch after the resume on
# (float32 reductions), and AUROC on 30 records then moves by ~1e-3. Single-threaded, every
# metric has matched exactly; the 1e-6 tolerance only absorbs float32 round-off.
THREADS = {"OMP_NUM_THREADS": "1"}


def _start(
    tmp: Path, root: Path, cache: Path, *extra: str, kill_at: str | None = None
) -> subprocess.Popen:
    args = [f"dataset.root={root}", f"paths.cache_dir={cache}", f"paths.log_dir={tmp / 'logs'}",
            f"tracking_uri=sqlite:///{tmp / 'mlflow.db'}"]  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-m", "ecgx.cli", "train", *JOB, *args, *extra],
        cwd=ROOT,
        env={
            **os.environ,
            "ECGX_ROOT": str(ROOT),
            **THREADS,
            **({ENV: kill_at} if kill_at else {}),
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(proc: subprocess.Popen, timeout: float = 150) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return out


def _runs(tmp: Path) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    return client.search_runs([client.get_experiment_by_name("resume").experiment_id])


@pytest.mark.slow
def test_killed_run_resumes_into_the_same_mlflow_run(tmp_path: Path, synthetic_root: Path) -> None:
    cache = tmp_path / "cache"
    plain_dir, crash_dir = tmp_path / "plain", tmp_path / "crash"
    plain = _start(plain_dir, synthetic_root, cache)  # the reference, alongside
    crash = _start(crash_dir, synthetic_root, cache)
    deadline = time.monotonic() + 120
    while not list((crash_dir / "logs" / "checkpoints").glob("*/last.ckpt")):
        assert crash.poll() is None, crash.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "no last.ckpt after 120 s"
        time.sleep(0.05)
    crash.send_signal(signal.SIGKILL)  # mid-run: the first epoch's checkpoint, before the last
    crash.communicate()
    assert crash.returncode == -signal.SIGKILL
    (killed,) = _runs(crash_dir)
    assert killed.info.status == "RUNNING"  # what a kill -9 leaves behind

    out = _finish(_start(crash_dir, synthetic_root, cache, "resume=true"))
    assert "resuming from" in out and killed.info.run_id in out
    _finish(plain)

    (resumed,) = _runs(crash_dir)  # exactly one run: the killed one, continued
    (reference,) = _runs(plain_dir)
    assert resumed.info.run_id == killed.info.run_id
    assert resumed.info.status == "FINISHED"
    got, want = resumed.data.metrics, reference.data.metrics
    tests = sorted(k for k in want if k.startswith("test/"))
    assert tests and tests == sorted(k for k in got if k.startswith("test/"))
    # Same weights, optimizer, shuffles and augmentations (RandomState): the same numbers.
    for key in [*tests, "val/macro_auroc", "val/loss"]:
        assert got[key] == pytest.approx(want[key], abs=1e-6), key

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{crash_dir / 'mlflow.db'}")
    history = client.get_metric_history(resumed.info.run_id, "val/loss")
    # The history continues: one value per epoch (steps increasing), as in the reference.
    reference_history = MlflowClient(f"sqlite:///{plain_dir / 'mlflow.db'}").get_metric_history(
        reference.info.run_id, "val/loss"
    )
    assert sorted({m.step for m in history}) == sorted({m.step for m in reference_history})
    assert len({m.step for m in history}) == 3


@pytest.mark.slow
def test_kill_before_any_checkpoint_or_before_test_never_fakes_a_result(
    tmp_path: Path, synthetic_root: Path
) -> None:
    """Killed after training but before the test: the run stays RUNNING (Lightning's logger
    used to mark it FINISHED at the end of fit), and resume tests the best checkpoint in the
    same run, with the reference's test metrics and its cost params. Killed before the first
    checkpoint: resume starts over and the killed run is marked KILLED, never left RUNNING."""
    cache = tmp_path / "cache"
    plain_dir, late_dir, early_dir = tmp_path / "plain", tmp_path / "late", tmp_path / "early"
    plain = _start(plain_dir, synthetic_root, cache)
    late = _start(late_dir, synthetic_root, cache, kill_at="test_start")
    early = _start(early_dir, synthetic_root, cache, kill_at="train_start")
    for proc in (late, early):
        out = proc.communicate(timeout=150)[0]
        assert proc.returncode == -signal.SIGKILL, out[-3000:]
    (killed_late,) = _runs(late_dir)
    assert killed_late.info.status == "RUNNING"
    assert not any(k.startswith("test/") for k in killed_late.data.metrics)

    late_out = _finish(_start(late_dir, synthetic_root, cache, "resume=true"))
    assert "training had finished before the interruption" in late_out
    early_out = _finish(_start(early_dir, synthetic_root, cache, "resume=true"))
    assert "starting from scratch" in early_out
    _finish(plain)

    (reference,) = _runs(plain_dir)
    (resumed,) = _runs(late_dir)
    assert resumed.info.run_id == killed_late.info.run_id and resumed.info.status == "FINISHED"
    tests = sorted(k for k in reference.data.metrics if k.startswith("test/"))
    for key in tests:
        assert resumed.data.metrics[key] == pytest.approx(reference.data.metrics[key], abs=1e-6)
    costs = sorted(k for k in reference.data.params if k.startswith("cost/"))
    assert costs and costs == sorted(k for k in resumed.data.params if k.startswith("cost/"))

    statuses = sorted(r.info.status for r in _runs(early_dir))
    assert statuses == ["FINISHED", "KILLED"]  # no ghost RUNNING run
    (fresh,) = [r for r in _runs(early_dir) if r.info.status == "FINISHED"]
    for key in tests:
        assert fresh.data.metrics[key] == pytest.approx(reference.data.metrics[key], abs=1e-6)
