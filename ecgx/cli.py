"""The ``ecgx`` command. Each subcommand is a thin entry point over a library function.

ecgx train [hydra overrides]      compose conf/train.yaml, fit, test, log to MLflow
ecgx explain run_id=<id> [explainer=<name>] [explainer.records=N]
                                  attributions, plots, faithfulness of a trained run
ecgx eval run_id=<id> [subset=test|val|train|all] [dataset=<name>] [+dataset.<key>=...]
                                  re-test a run's best checkpoint (another dataset too);
                                  metrics + predictions to a child MLflow run
ecgx predict run_id=<id> input=<file or folder> [fs=<Hz>] [output=<csv>] [on_error=skip]
             [explainer=<name>]   class probabilities and labels of new records
ecgx search hparams_search=<tpe|vision_seed> [hydra overrides]
                                  Optuna TPE search over conf/train.yaml, resumable
ecgx compare [options]            report of runs from MLflow: groups, mean ± std, cost, HTML
ecgx bench [suite=<name>|[a,b]] [quick=true] [log=true]
                                  speed and memory against the seeds' ways (JSON + markdown)
ecgx data synth [--root DIR]      generate the synthetic PTB-XL-layout set
"""

from __future__ import annotations

import os
import sys

from ecgx.paths import config_dir, project_root

USAGE = __doc__ or ""


def _hydra_app(config_name: str, task: str) -> None:
    import hydra
    from omegaconf import DictConfig

    from ecgx.errors import EcgxError

    @hydra.main(config_path=str(config_dir()), config_name=config_name, version_base="1.3")
    def app(cfg: DictConfig) -> float | None:
        try:
            if task == "explain":
                from ecgx.explain.command import explain_run

                explain_run(cfg)
                return None
            if task == "eval":
                from ecgx.evaluate import evaluate_run

                evaluate_run(cfg)
                return None
            if task == "search":
                from ecgx.search import search

                search(cfg)
                return None
            if task == "predict":
                from ecgx.predict import predict_run

                predict_run(cfg)
                return None
            from ecgx.train import train

            metrics = train(cfg)
        except EcgxError as err:
            raise SystemExit(f"ecgx {task}: error: {err}") from None
        # Hyper-parameter sweepers read the returned value.
        key = cfg.get("optimized_metric")
        return metrics.get(key) if key else None

    app()


def experiment_overrides(args: list[str]) -> list[str]:
    """``experiment=`` overrides as Hydra expects them.

    ``+experiment=x`` (the usual Hydra spelling for an optional group) is accepted as
    ``experiment=x``: the group sits in train.yaml's defaults, before ``debug``, so a debug
    preset shortens an experiment. ``experiment=glob(<study>/*)`` becomes the explicit list of
    matching files, because Hydra's glob() sees only the top folder of a nested group and would
    launch 0 jobs without a word.
    """
    from ecgx.experiment_files import expand_glob

    out = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep or key.lstrip("+") != "experiment":
            out.append(arg)
            continue
        out.append(f"experiment={','.join(expand_glob(value))}")
    return out


def folder_multirun(args: list[str]) -> list[list[str]] | None:
    """``train -m`` over several experiment files, as Hydra alone cannot run it.

    Files whose ``required`` keys the command line does not give are left out (named on
    stderr). When any kept file has its own ``hydra.sweeper.params`` (folds, held-out sources,
    single leads), one Hydra multirun per file is returned, sharing one sweep folder and so one
    ``ecgx.sweep_id``; otherwise None and the (pruned) list runs as one Hydra multirun.
    """
    import time

    from ecgx.errors import ConfigValueError
    from ecgx.experiment_files import plan_folder_multirun

    if not {"-m", "--multirun"} & set(args):
        return None
    exp = [i for i, a in enumerate(args) if a.startswith("experiment=") and "," in a]
    if not exp:
        return None
    names = args[exp[0]].partition("=")[2].split(",")
    given = {a.partition("=")[0].lstrip("+~") for a in args if "=" in a}
    plan = plan_folder_multirun(names, given)
    for name, keys in plan.skipped.items():
        print(f"ecgx train: left out {name}: needs {', '.join(keys)}=... on the command line",
              file=sys.stderr)  # fmt: skip
    if not plan.names:
        raise ConfigValueError(f"experiment={','.join(names)}: every file was left out")
    others = [a for i, a in enumerate(args) if i != exp[0]]
    if not plan.per_file:
        args[exp[0]] = f"experiment={','.join(plan.names)}"
        return None
    sweep_dir = [] if "hydra.sweep.dir" in given else [
        "hydra.sweep.dir=${paths.log_dir}/${task_name}/multiruns/"
        + time.strftime("%Y-%m-%d_%H-%M-%S")
    ]  # fmt: skip
    return [[*others, f"experiment={name}", *sweep_dir,
             f"hydra.sweep.subdir={name}/${{hydra.job.num}}"] for name in plan.names]  # fmt: skip


def _run_per_file(jobs: list[list[str]]) -> None:
    """Each file's multirun in its own process, one after another (Hydra's app runs once per
    process); every file runs even when an earlier one fails."""
    import subprocess

    failed = []
    for args in jobs:
        name = next(a for a in args if a.startswith("experiment=")).partition("=")[2]
        print(f"ecgx train: {name}", file=sys.stderr, flush=True)
        if subprocess.run([sys.executable, "-m", "ecgx.cli", "train", *args]).returncode:
            failed.append(name)
    if failed:
        sys.exit(f"ecgx train: failed: {', '.join(failed)}")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    command, rest = argv[0], argv[1:]
    os.environ.setdefault("ECGX_ROOT", str(project_root()))
    if command in ("train", "explain", "eval", "predict", "search"):
        from ecgx.errors import EcgxError

        try:
            rest = experiment_overrides(rest)
            jobs = folder_multirun(rest) if command == "train" else None
        except EcgxError as err:
            sys.exit(f"ecgx {command}: error: {err}")
        if jobs:
            _run_per_file(jobs)
            return
        sys.argv = [f"ecgx {command}", *rest]
        _hydra_app("train" if command == "search" else command, command)
    elif command == "compare":
        from ecgx.tracking.compare import main as compare_main

        compare_main(rest)
    elif command == "bench":
        from ecgx.bench.command import main as bench_main

        bench_main(rest)
    elif command == "models":
        from ecgx.models.catalog import main as models_main

        models_main(rest)
    elif command == "data":
        from ecgx.data.cli import main as data_main

        data_main(rest)
    else:
        sys.exit(f"ecgx: unknown command {command!r}\n{USAGE}")


if __name__ == "__main__":
    main()
