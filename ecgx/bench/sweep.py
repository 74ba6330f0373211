"""Suite ``sweep``: how long a user waits for ``ecgx train`` to start training.

Measured as a user sees it: ``ecgx train`` in a fresh process (the console script of this
interpreter) on a synthetic set whose signal cache and MLflow store already exist (one untimed
job builds them), from just before the process is spawned to the first training batch, which
:class:`ecgx.tracking.callbacks.FirstStepTime` records (added as a Hydra override of the
``callbacks`` group, so the timed path is the real command). Then:

* the breakdown of that start-up (interpreter, imports, Hydra compose, MLflow run creation,
  data module, model, trainer and sanity check), from a probe process that runs the same
  ``ecgx train`` with timers around the functions of :mod:`ecgx.commands.train` it calls;
* the import time of the train entry point in a fresh interpreter (``python -X importtime``'s
  heaviest packages in the note);
* a joblib multirun of ``n_jobs`` seeds: each job's time from the sweep's start to its first
  step, and the whole sweep to the end with a tiny ``max_steps``.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from ecgx.bench.core import Context, Figure
from ecgx.paths import project_root

SUITE = "sweep"
CALLBACK = "ecgx.tracking.callbacks.FirstStepTime"
FIRST_STEP_ENV = "ECGX_FIRST_STEP_FILE"  # = ecgx.tracking.callbacks.FIRST_STEP_ENV (kept light)
T0_ENV = "ECGX_BENCH_T0"  # the probe's process start as the parent saw it
TINY_S = 0.02  # start-up phases shorter than this are reported within "other"


def run(cfg: Any, ctx: Context) -> list[Figure]:
    quick = ctx.quick
    root = dataset_root(cfg, ctx)
    base = job_overrides(cfg, ctx, root)
    work = ctx.workdir / "sweep"
    work.mkdir(parents=True, exist_ok=True)
    repeats = ctx.repeats
    target = float(cfg.target_s)

    # Untimed: builds the signal cache and the MLflow store, warms the OS file cache. Quick mode
    # (a smoke check of the suite, its numbers not reported) lets the first job do that.
    if not quick:
        first_step(base, work / "warmup.jsonl", timeout=float(cfg.timeout_s))

    starts, ends = [], []
    for i in range(repeats):
        t = first_step(base, work / f"job{i}.jsonl", timeout=float(cfg.timeout_s))
        starts.append(t["first_batch"])
        ends.append(t["exit"])
    n_records = int(cfg.quick_records if quick else cfg.records)
    figures = [
        Figure(SUITE, "one job: start to first step", "s", starts, target=f"<= {target:g}",
               note=f"`ecgx train` on {n_records} synthetic records (100 Hz), warm cache and "
               "MLflow store, from process spawn to the first training batch",
               params={"records": n_records}),
        Figure(SUITE, "one job: whole process, stopped after step 1", "s", ends),
    ]  # fmt: skip

    phases: dict[str, list[float]] = defaultdict(list)
    for i in range(1 if quick else min(repeats, int(cfg.probe_repeats))):
        for name, seconds in probe(base, work / f"probe{i}.json", float(cfg.timeout_s)).items():
            phases[name].append(seconds)
    figures += [Figure(SUITE, f"start-up: {name}", "s", v) for name, v in phases.items()]

    imports = [import_seconds(str(cfg.entry_point)) for _ in range(repeats)]
    heavy = importtime_top(str(cfg.entry_point), int(cfg.importtime_top))
    figures.append(
        Figure(SUITE, f"import {cfg.entry_point} (fresh interpreter)", "s", imports,
               note="heaviest packages (self time, s): "
               + ", ".join(f"{k} {v:.2f}" for k, v in heavy))
    )  # fmt: skip

    n_jobs = int(cfg.quick_jobs if quick else cfg.jobs)
    figures += multirun(cfg, base, work, n_jobs)
    return figures


# -- the jobs ---------------------------------------------------------------------------------
def dataset_root(cfg: Any, ctx: Context) -> Path:
    """The synthetic PTB-XL-layout set the jobs train on (generated once in the workdir)."""
    if cfg.get("dataset_root"):
        return Path(str(cfg.dataset_root))
    from ecgx.datasets.synthetic import generate_ptbxl_like

    n = int(cfg.quick_records if ctx.quick else cfg.records)
    return generate_ptbxl_like(ctx.workdir / f"synthetic-{n}", n_records=n, seed=0,
                               sampling_rates=[100])  # fmt: skip


def job_overrides(cfg: Any, ctx: Context, root: Path) -> list[str]:
    work = ctx.workdir / "sweep"
    return [
        f"dataset.root={root}",
        f"paths.cache_dir={ctx.workdir / 'cache'}",
        f"paths.log_dir={work / 'logs'}",
        f"tracking_uri=sqlite:///{work / 'mlflow.db'}",
        "experiment_name=bench-sweep",
        f"+callbacks.first_step._target_={CALLBACK}",
        *[str(o) for o in cfg.get("overrides") or []],
    ]


def ecgx_command() -> list[str]:
    """The ``ecgx`` console script beside this interpreter (as a user runs it), else -m."""
    script = Path(sys.executable).with_name("ecgx")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "ecgx.cli"]


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, **(extra or {})}
    env.setdefault("ECGX_ROOT", str(project_root()))
    return env


def _spawn(args: list[str], env: dict[str, str], timeout: float) -> tuple[float, float]:
    """Run a command; (wall-clock time just before spawning it, its duration)."""
    t0 = time.time()
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout,
                          cwd=project_root())  # fmt: skip
    if done.returncode != 0:
        tail = (done.stderr or done.stdout)[-1500:]
        raise RuntimeError(f"{' '.join(args[:3])} ... failed ({done.returncode}):\n{tail}")
    return t0, time.time() - t0


def read_first_steps(path: Path) -> list[dict[str, Any]]:
    """The records :class:`~ecgx.tracking.callbacks.FirstStepTime` appended to ``path``."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def first_step(base: list[str], path: Path, timeout: float) -> dict[str, float]:
    """One ``ecgx train`` stopped after its first step: seconds from spawn to each event."""
    path.unlink(missing_ok=True)
    args = [*ecgx_command(), "train", *base, "+callbacks.first_step.stop=true", "test=false"]
    t0, seconds = _spawn(args, _env({FIRST_STEP_ENV: str(path)}), timeout)
    records = read_first_steps(path)
    if len(records) != 1:
        raise RuntimeError(f"{path}: expected 1 first-step record, found {len(records)}")
    out = {k: v - t0 for k, v in records[0].items() if isinstance(v, float)}
    out["exit"] = seconds
    return out


def multirun(cfg: Any, base: list[str], work: Path, n_jobs: int) -> list[Figure]:
    """``ecgx train -m launcher=joblib seed=0,…`` with ``n_jobs`` parallel jobs."""
    path = work / "multirun.jsonl"
    path.unlink(missing_ok=True)
    seeds = ",".join(str(s) for s in range(n_jobs))
    args = [*ecgx_command(), "train", "-m", "launcher=joblib", f"hydra.launcher.n_jobs={n_jobs}",
            f"seed={seeds}", "+callbacks.first_step.label=${seed}", "force=true",
            # One short epoch: validation, checkpoint and test run as in a real job.
            "trainer.max_epochs=1", f"++trainer.limit_train_batches={int(cfg.multirun_steps)}",
            "++trainer.limit_val_batches=1",
            "++trainer.limit_test_batches=1", "module.bootstrap_resamples=0", *base]  # fmt: skip
    # One torch thread per job when the jobs share the cores (conf/launcher/joblib.yaml).
    threads = max(1, (os.cpu_count() or 1) // n_jobs)
    env = _env({"OMP_NUM_THREADS": str(threads), FIRST_STEP_ENV: str(path)})
    t0, seconds = _spawn(args, env, float(cfg.timeout_s) * 2)
    records = sorted(read_first_steps(path), key=lambda r: int(r["label"]))
    if len(records) != n_jobs:
        raise RuntimeError(f"multirun: {len(records)} of {n_jobs} jobs reached a first step")
    note = f"{n_jobs} jobs, n_jobs={n_jobs}, OMP_NUM_THREADS={threads}"
    figures = [
        Figure(SUITE, f"multirun job seed={r['label']}: start to first step", "s",
               [r["first_batch"] - t0], note=note if r is records[0] else "")
        for r in records
    ]  # fmt: skip
    figures += [
        Figure(SUITE, "multirun: start to every job's first step", "s",
               [max(r["first_batch"] for r in records) - t0]),
        Figure(SUITE, f"multirun: start to end ({int(cfg.multirun_steps)} steps, val, test)", "s",
               [seconds]),
    ]  # fmt: skip
    return figures


# -- imports ----------------------------------------------------------------------------------
def import_seconds(module: str) -> float:
    """Wall time of ``python -c "import <module>"`` (interpreter start-up included)."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True, env=_env())
    return time.perf_counter() - t0


_IMPORTTIME = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|\s*(\S+)")


def parse_importtime(text: str) -> dict[str, float]:
    """Self time (s) per top-level package from ``python -X importtime`` output."""
    totals: dict[str, float] = defaultdict(float)
    for match in _IMPORTTIME.finditer(text):
        totals[match[3].split(".")[0]] += int(match[1]) / 1e6
    return dict(totals)


def importtime_top(module: str, n: int) -> list[tuple[str, float]]:
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"],
                          capture_output=True, text=True, check=True, env=_env())  # fmt: skip
    totals = parse_importtime(done.stderr)
    return sorted(totals.items(), key=lambda kv: -kv[1])[:n]


# -- the start-up breakdown -------------------------------------------------------------------
# (owner, attribute, phase): functions of the train path timed in the probe, in call order.
PROBED = (
    ("ecgx.training.preflight", "check_writable_paths", "writable-path check"),
    ("ecgx.training.preflight", "check_tracking_uri", "tracking URI check"),
    ("ecgx.commands.train", "instantiate", "instantiate {}"),  # {}: the _target_'s class name
    ("ecgx.tracking.training_run", "instantiate", "instantiate {}"),
    ("ecgx.training.resume.ResumePoint", "find", "resume point"),
    ("ecgx.training.resume.ResumePoint", "started", "MLflow run creation"),
    ("ecgx.tracking.training_run", "log_config", "config to MLflow"),
    ("ecgx.data.datamodule.ECGDataModule", "prepare_data", "data: open cache"),
    ("ecgx.data.datamodule.ECGDataModule", "setup", "data: labels, split, normaliser"),
    ("ecgx.commands.train", "model_cost", "model cost (FLOPs, inference time)"),
    ("ecgx.tracking.training_run.TrackedRun", "log_data", "data splits to MLflow"),
)


def probe(base: list[str], out: Path, timeout: float) -> dict[str, float]:
    """Seconds of each start-up phase of one ``ecgx train`` (see :func:`_probe_main`)."""
    steps = out.with_suffix(".jsonl")
    steps.unlink(missing_ok=True)
    args = [sys.executable, "-m", "ecgx.bench.sweep", str(out), "train", *base,
            "+callbacks.first_step.stop=true", "test=false"]  # fmt: skip
    env = _env({FIRST_STEP_ENV: str(steps), T0_ENV: repr(time.time())})
    _spawn(args, env, timeout)
    return phases(json.loads(out.read_text()), read_first_steps(steps)[0])


def phases(record: dict[str, Any], step: dict[str, Any]) -> dict[str, float]:
    """Contiguous phases from the probe's marks and spans; they add up to the first batch."""
    t0 = record["t0"]
    out = {
        "interpreter": record["up"] - t0,
        "import ecgx.commands.train": record["imported"] - record["up"],
        "Hydra compose": record["train"] - record["imported"],
    }
    spans: dict[str, float] = defaultdict(float)
    for name, start, stop in record["spans"]:
        if start < step["fit_start"]:
            spans[name] += stop - start
    # Phases under TINY_S (most instantiations, path checks) go to "other": a shorter table.
    listed = {k: v for k, v in spans.items() if v >= TINY_S}
    out.update(listed)
    out["other"] = step["fit_start"] - record["train"] - sum(listed.values())
    out["trainer: sanity check, loop start"] = step["first_batch"] - step["fit_start"]
    out["total to first batch"] = step["first_batch"] - t0
    return out


def _resolve(dotted: str) -> tuple[Any, str]:
    import importlib

    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj, dotted
    raise ImportError(dotted)


def _probe_main(out: str, argv: list[str]) -> None:
    """``python -m ecgx.bench.sweep <out.json> train …``: ``ecgx train`` with phase timers."""
    t0 = float(os.environ.get(T0_ENV) or time.time())
    record: dict[str, Any] = {"t0": t0, "up": time.time(), "spans": []}
    import ecgx.commands.train
    import ecgx.data.datamodule  # noqa: F401 - timed with the entry point: train uses it

    record["imported"] = time.time()

    def timed(owner: Any, attr: str, phase: str) -> None:
        fn = getattr(owner, attr)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.time()
            try:
                return fn(*args, **kwargs)
            finally:
                target = str(args[0].get("_target_", "?")) if args and "{}" in phase else ""
                record["spans"].append((phase.format(target.rsplit(".", 1)[-1]), start,
                                        time.time()))  # fmt: skip

        setattr(owner, attr, wrapper)

    for owner, attr, phase in PROBED:
        timed(_resolve(owner)[0], attr, phase)
    train = ecgx.commands.train.train

    def train_entry(*args: Any, **kwargs: Any) -> Any:
        record["train"] = time.time()
        return train(*args, **kwargs)

    # The Hydra app imports train from ecgx.commands.train when it runs.
    ecgx.commands.train.train = train_entry
    from ecgx.cli import main

    try:
        main(argv)
    finally:
        Path(out).write_text(json.dumps(record))


if __name__ == "__main__":
    _probe_main(sys.argv[1], sys.argv[2:])
