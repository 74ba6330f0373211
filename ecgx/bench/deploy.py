"""Suite ``deploy``: what the logged MLflow model costs a training run.

For each model, a smoke run of ``ecgx train`` on a synthetic set, then on its best checkpoint:
the seconds :func:`ecgx.deploy.pyfunc.log_model` takes (the first call of a process apart: MLflow
scans the installed packages once to check the model's requirements), the size of the logged
model folder, and whole smoke runs with ``log_model=true`` against ``log_model=false`` (the
added seconds per run, as a user sees them; other work of the run varies as much).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from ecgx.bench.core import Context, Figure, compose_train

SUITE = "deploy"


def _overrides(root: Path, work: Path, model: str, log_model: bool) -> list[str]:
    return [f"dataset.root={root}", f"model={model}", "debug=smoke",
            f"paths.cache_dir={work / 'cache'}", f"paths.log_dir={work / 'logs'}",
            f"paths.output_dir={work / 'out'}", f"tracking_uri=sqlite:///{work / 'mlflow.db'}",
            "experiment_name=bench-deploy", f"log_model={str(log_model).lower()}",
            "force=true"]  # fmt: skip


def _smoke(overrides: list[str]) -> tuple[float, Any]:
    from omegaconf import open_dict

    from ecgx.commands.train import train

    cfg = compose_train(overrides)
    with open_dict(cfg):
        cfg.pop("hydra", None)
    t0 = time.perf_counter()
    train(cfg)
    return time.perf_counter() - t0, cfg


def run(cfg: Any, ctx: Context) -> list[Figure]:
    from mlflow.tracking import MlflowClient

    from ecgx.datasets.synthetic import generate_ptbxl_like

    work = ctx.workdir / "deploy"
    n = int(cfg.quick_records if ctx.quick else cfg.records)
    root = (Path(str(cfg.dataset_root)) if cfg.get("dataset_root") else
            generate_ptbxl_like(work / "synthetic", n_records=n, seed=0, sampling_rates=[100]))  # fmt: skip
    models = list(cfg.quick_models if ctx.quick else cfg.models)
    runs = 0 if ctx.quick else int(cfg.smoke_runs)  # quick: the untimed run's figures only
    figures = []
    for model in models:
        # Untimed: builds the cache, imports, and pays MLflow's one-time package scan.
        _, train_cfg = _smoke(_overrides(root, work, model, True))
        client = MlflowClient(str(train_cfg.tracking_uri))
        experiment = client.get_experiment_by_name("bench-deploy").experiment_id
        first = _last_log_seconds(client, experiment)
        without, with_model, logged = [], [], []
        for _ in range(runs):
            without.append(_smoke(_overrides(root, work, model, False))[0])
            with_model.append(_smoke(_overrides(root, work, model, True))[0])
            logged.append(_last_log_seconds(client, experiment))
        logged = logged or [first]
        (last,) = client.search_runs([experiment], max_results=1,
                                     order_by=["attributes.start_time DESC"])  # fmt: skip
        ckpts = sorted((work / "logs").rglob("epoch*.ckpt"), key=lambda p: p.stat().st_mtime)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(client.download_artifacts(last.info.run_id, "model", tmp))
            size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        ckpt_mb = ckpts[-1].stat().st_size / 2**20
        figures += [
            Figure(SUITE, f"{model}: log_model in a run", "s", logged,
                   note="cost/log_model_seconds of each timed smoke run (the pyfunc folder "
                   "written and logged as an artifact, input example included); in the untimed "
                   f"first run of this model {first:.2f} s (the process's first pays MLflow's "
                   "one-time scan of the installed packages, ~1 s)"),
            Figure(SUITE, f"{model}: logged model size", "MB", [size / 2**20],
                   note=f"the run's model/ folder, input example included; its best Lightning "
                   f"checkpoint: {ckpt_mb:.2f} MB (the logged weights leave the optimiser "
                   "state out)"),
        ]  # fmt: skip
        if runs:
            figures += [
                Figure(SUITE, f"{model}: smoke run, log_model=false", "s", without),
                Figure(SUITE, f"{model}: smoke run, log_model=true", "s", with_model,
                       ratio_to=f"{model}: smoke run, log_model=false",
                       note="whole `ecgx train debug=smoke` in this process"),
            ]  # fmt: skip
    return figures


def _last_log_seconds(client: Any, experiment: str) -> float:
    (last,) = client.search_runs([experiment], max_results=1,
                                 order_by=["attributes.start_time DESC"])  # fmt: skip
    return float(last.data.metrics["cost/log_model_seconds"])
