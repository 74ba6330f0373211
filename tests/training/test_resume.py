"""Training jobs killed with SIGKILL at every moment of a run, rerun with ``resume=true`` (or as
the same sweep): each ends as exactly one FINISHED MLflow run with an uninterrupted run's
metrics and artifacts, none stays RUNNING, and nothing of the killed job is left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.helpers.kill import ENV, JOB_ENV

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
    tmp: Path,
    root: Path,
    cache: Path,
    *extra: str,
    kill_at: str | None = None,
    kill_job: str | None = None,
    multirun: bool = False,
) -> subprocess.Popen:
    args = [f"dataset.root={root}", f"paths.cache_dir={cache}", f"paths.log_dir={tmp / 'logs'}",
            f"tracking_uri=sqlite:///{tmp / 'mlflow.db'}"]  # fmt: skip
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ecgx.cli",
            "train",
            *(["-m"] if multirun else []),
            *JOB,
            *args,
            *extra,
        ],
        cwd=ROOT,
        env={
            **os.environ,
            "ECGX_ROOT": str(ROOT),
            **THREADS,
            **({ENV: kill_at} if kill_at else {}),
            **({JOB_ENV: kill_job} if kill_job else {}),
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


# Where each job is killed (tests.helpers.kill.KillAt; "mid" is killed by the test itself as the
# first epoch's checkpoint appears) and what its resume must say it does.
CONTINUE = "resuming from"  # from last.ckpt, into the killed run
TEST_ONLY = "training had finished before the interruption"
KILLS = {
    "mid": (None, CONTINUE),
    "validation": ("validation", CONTINUE),  # the second epoch's validation
    "late": ("test_start", TEST_ONLY),  # between fit and test
    "test_batch": ("test_batch", TEST_ONLY),  # during the test
    "artifacts": ("artifacts", TEST_ONLY),  # predictions logged, checkpoint and cost not yet
    "early": ("train_start", "starting from scratch"),  # before any checkpoint
}


def _leftovers(tmp: Path) -> list[str]:
    """Processes still running from ``tmp`` and temporary files left in it."""
    alive = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if proc.name.isdigit() and str(tmp) in cmdline:
            alive.append(f"pid {proc.name}: {cmdline[:200]}")
    stale = [str(p) for p in tmp.rglob("*") if p.name.startswith((".tmp-", ".partial"))
             or ".partial-" in p.name]  # fmt: skip
    return alive + stale


@pytest.mark.slow
def test_sigkill_at_any_moment_then_resume_gives_the_uninterrupted_result(
    tmp_path: Path, synthetic_root: Path
) -> None:
    """One reference; six jobs killed alongside it at the moments of ``KILLS`` and resumed with
    ``resume=true``; a two-job multirun whose second job (the reference's config) is killed
    during validation and rerun as it was (multiruns skip finished configs).

    - killed mid-run or during validation: training continues from ``last.ckpt`` into the same
      MLflow run, with the same metric history;
    - killed after training (before, during or after the test, while artifacts are logged):
      the run stays RUNNING (Lightning's logger used to mark it FINISHED at the end of fit) and
      the resume only tests the best checkpoint, in the same run, logging what was missing;
    - killed before the first checkpoint: the resume starts over and the killed run is marked
      KILLED, never left RUNNING;
    - the sweep rerun skips its finished job and continues the killed one by itself.
    Every config ends with one FINISHED run holding the reference's test metrics, no process
    of a killed job survives and no temporary file is left.
    """
    cache = tmp_path / "cache"
    dirs = {name: tmp_path / name for name in ("plain", "sweep", *KILLS)}
    plain = _start(dirs["plain"], synthetic_root, cache)
    killed_jobs = {name: _start(dirs[name], synthetic_root, cache, kill_at=moment)
                   for name, (moment, _) in KILLS.items()}  # fmt: skip
    sweep = _start(dirs["sweep"], synthetic_root, cache, "seed=7,0", multirun=True,
                   kill_at="validation", kill_job="1")  # fmt: skip  # job 1: the reference's
    deadline = time.monotonic() + 150
    while not list((dirs["mid"] / "logs" / "checkpoints").glob("*/last.ckpt")):
        assert killed_jobs["mid"].poll() is None, killed_jobs["mid"].communicate()[0][-3000:]
        assert time.monotonic() < deadline, "no last.ckpt after 150 s"
        time.sleep(0.05)
    killed_jobs["mid"].send_signal(signal.SIGKILL)  # the first epoch's checkpoint, not the last
    for name, proc in (*killed_jobs.items(), ("sweep", sweep)):
        out = proc.communicate(timeout=200)[0]
        assert proc.returncode == -signal.SIGKILL, (name, out[-3000:])
    killed = {name: _runs(dirs[name]) for name in KILLS}
    assert {name: [r.info.status for r in runs] for name, runs in killed.items()} == {
        name: ["RUNNING"] for name in KILLS
    }
    for name in ("late", "test_batch"):
        assert not any(k.startswith("test/") for k in killed[name][0].data.metrics), name
    swept = {r.data.params["seed"]: r for r in _runs(dirs["sweep"])}
    assert {s: r.info.status for s, r in swept.items()} == {"7": "FINISHED", "0": "RUNNING"}
    for name in ("plain", *KILLS, "sweep"):
        if name != "plain":
            assert not _leftovers(dirs[name]), (name, _leftovers(dirs[name]))

    resumes = {name: _start(dirs[name], synthetic_root, cache, "resume=true") for name in KILLS}
    resumes["sweep"] = _start(dirs["sweep"], synthetic_root, cache, "seed=7,0", multirun=True)
    outs = {name: _finish(proc, timeout=200) for name, proc in resumes.items()}
    _finish(plain, timeout=200)
    for name, (_, says) in KILLS.items():
        assert says in outs[name], (name, outs[name][-3000:])
    assert "skipping: config already finished" in outs["sweep"]
    assert "resuming from" in outs["sweep"] and swept["0"].info.run_id in outs["sweep"]

    (reference,) = _runs(dirs["plain"])
    want = reference.data.metrics
    tests = sorted(k for k in want if k.startswith("test/"))
    costs = sorted(k for k in reference.data.params if k.startswith("cost/"))
    assert tests and costs
    from mlflow.tracking import MlflowClient

    def artifacts(tmp: Path, run_id: str) -> list[str]:
        client = MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
        return sorted(f.path for top in client.list_artifacts(run_id) if top.is_dir
                      for f in client.list_artifacts(run_id, top.path))  # fmt: skip

    want_artifacts = artifacts(dirs["plain"], reference.info.run_id)
    assert "checkpoints" in {a.split("/")[0] for a in want_artifacts}
    continued = {name: _runs(dirs[name]) for name in KILLS if name != "early"}
    continued["sweep"] = [r for r in _runs(dirs["sweep"]) if r.data.params["seed"] == "0"]
    for name, runs in continued.items():  # exactly one run each: the killed one, continued
        (resumed,) = runs
        killed_id = swept["0"].info.run_id if name == "sweep" else killed[name][0].info.run_id
        assert resumed.info.run_id == killed_id, name
        assert resumed.info.status == "FINISHED", name
        assert tests == sorted(k for k in resumed.data.metrics if k.startswith("test/")), name
        assert costs == sorted(k for k in resumed.data.params if k.startswith("cost/")), name
        assert artifacts(dirs[name], resumed.info.run_id) == want_artifacts, name
        # Same weights, optimizer, shuffles and augmentations (RandomState): the same numbers.
        for key in tests:
            assert resumed.data.metrics[key] == pytest.approx(want[key], abs=1e-6), (name, key)
    for name in ("mid", "validation", "sweep"):
        (run,) = continued[name]
        for key in ("val/macro_auroc", "val/loss"):
            assert run.data.metrics[key] == pytest.approx(want[key], abs=1e-6), (name, key)
        # The history continues: one value per epoch (steps increasing), as in the reference.
        steps = {m.step for m in MlflowClient(f"sqlite:///{dirs[name] / 'mlflow.db'}")
                 .get_metric_history(run.info.run_id, "val/loss")}  # fmt: skip
        reference_steps = {m.step for m in MlflowClient(f"sqlite:///{dirs['plain'] / 'mlflow.db'}")
                           .get_metric_history(reference.info.run_id, "val/loss")}  # fmt: skip
        assert steps == reference_steps and len(steps) == 3, name

    early_runs = _runs(dirs["early"])
    assert sorted(r.info.status for r in early_runs) == ["FINISHED", "KILLED"]  # no ghost
    (fresh,) = [r for r in early_runs if r.info.status == "FINISHED"]
    for key in tests:
        assert fresh.data.metrics[key] == pytest.approx(want[key], abs=1e-6), key
    for name in dirs:
        assert not _leftovers(dirs[name]), (name, _leftovers(dirs[name]))


@pytest.mark.slow
def test_identical_concurrent_job_is_refused_naming_the_running_one(
    tmp_path: Path, synthetic_root: Path
) -> None:
    # Both would use one checkpoint folder, and the later one's fresh start would empty it.
    cache = tmp_path / "cache"
    long = ("trainer.max_epochs=200", "callbacks.early_stopping=null")  # running when 2nd asks
    first = _start(tmp_path, synthetic_root, cache, *long)
    deadline = time.monotonic() + 120
    while not list((tmp_path / "logs" / "checkpoints").glob("*.mlflow_run_id")):
        assert first.poll() is None, first.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "no run id after 120 s"
        time.sleep(0.05)
    (run_id_file,) = (tmp_path / "logs" / "checkpoints").glob("*.mlflow_run_id")
    second = _start(tmp_path, synthetic_root, cache, *long)
    out = second.communicate(timeout=120)[0]
    assert first.poll() is None  # the two really overlapped
    first.send_signal(signal.SIGKILL)
    first.communicate()
    assert second.returncode != 0, out[-3000:]
    assert "an identical job is training this config right now" in out
    assert run_id_file.read_text().strip() in out and "Traceback" not in out
    assert len(_runs(tmp_path)) == 1  # the refused job opened no run
