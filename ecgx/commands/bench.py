"""``ecgx bench [suite=…] [key=value …]``: run the suites, print and write the report."""

from __future__ import annotations

import importlib
import logging
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from omegaconf import DictConfig, ListConfig

from ecgx.bench.core import SUITES, Context, Report, machine_info
from ecgx.errors import ConfigValueError

log = logging.getLogger(__name__)


def compose_bench(overrides: list[str]) -> DictConfig:
    """conf/bench.yaml with Hydra overrides (no Hydra run folder: the report has its own)."""
    from hydra import compose, initialize_config_dir

    from ecgx.paths import config_dir

    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return compose("bench", overrides=overrides)


def selected_suites(cfg: DictConfig) -> list[str]:
    names = list(cfg.suite) if isinstance(cfg.suite, ListConfig) else [str(cfg.suite)]
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        raise ConfigValueError(f"suite={unknown}: unknown; choose from {list(SUITES)}")
    return names


def run_bench(cfg: DictConfig) -> tuple[Report, Path]:
    """Run the selected suites; a suite that fails is reported (with its error), not fatal."""
    import torch

    suites = selected_suites(cfg)
    device = str(cfg.device)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise ConfigValueError(f"device={cfg.device!r}: choose auto, cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigValueError("device=cuda: torch sees no CUDA device on this machine")
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    report = Report(machine_info(device))
    scratch = Path(cfg.workdir) if cfg.workdir else Path(tempfile.mkdtemp(prefix="ecgx-bench-"))
    scratch.mkdir(parents=True, exist_ok=True)
    repeats = 1 if cfg.quick else int(cfg.repeats)
    ctx = Context(bool(cfg.quick), repeats, device, scratch, torch.get_num_threads())
    try:
        for name in suites:
            module = importlib.import_module(f"ecgx.bench.{name}")
            t0 = time.perf_counter()
            print(f"[bench] {name} ...", flush=True)
            try:
                report.add(module.run(cfg[name], ctx))
            except Exception as err:  # noqa: BLE001 - one broken suite must not lose the others
                report.errors[name] = f"{type(err).__name__}: {err}"
                log.error("suite %s failed:\n%s", name, traceback.format_exc())
            report.seconds[name] = round(time.perf_counter() - t0, 2)
    finally:
        if not cfg.workdir:
            shutil.rmtree(scratch, ignore_errors=True)
    folder = Path(cfg.output_dir) / time.strftime("%Y-%m-%d_%H-%M-%S")
    report.write(folder)
    if cfg.log:
        log_report(report, folder, str(cfg.tracking_uri), str(cfg.experiment_name))
    return report, folder


def log_report(report: Report, folder: Path, uri: str, experiment: str) -> str:
    """One MLflow run per bench: medians as metrics, the machine as params, both files."""
    import mlflow

    from ecgx.tracking.mlflow_run import check_tracking_uri

    check_tracking_uri(uri)
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
    run = client.create_run(exp_id, run_name=f"bench-{folder.name}")
    rid = run.info.run_id
    for key, value in report.machine.items():
        client.log_param(rid, f"machine/{key}", str(value)[:500])
    for fig in report.figures:
        key = _metric_key(f"{fig.suite}/{fig.name}")
        client.log_metric(rid, key, fig.median)
        if fig.ratio is not None:
            client.log_metric(rid, f"{key}/ratio", fig.ratio)
    client.log_artifact(rid, str(folder / "bench.json"))
    client.log_artifact(rid, str(folder / "bench.md"))
    client.set_terminated(rid, "FAILED" if report.errors else "FINISHED")
    return rid


def _metric_key(name: str) -> str:
    # MLflow keys allow alphanumerics, _ - . space : / only.
    return "".join(c if c.isalnum() or c in "_-. :/" else "_" for c in name)


def main(argv: list[str] | None = None) -> None:
    from ecgx.errors import EcgxError

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        cfg = compose_bench(list(sys.argv[1:] if argv is None else argv))
        report, folder = run_bench(cfg)
    except EcgxError as err:
        raise SystemExit(f"ecgx bench: error: {err}") from None
    print(report.markdown())
    print(f"written: {folder / 'bench.json'} and bench.md")
    if report.errors:
        raise SystemExit(f"ecgx bench: suites not finished: {sorted(report.errors)}")


if __name__ == "__main__":
    main()
