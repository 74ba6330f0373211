"""The ``ecgx`` command. Each subcommand is a thin entry point over a library function.

ecgx train [hydra overrides]      compose conf/train.yaml, fit, test, log to MLflow
ecgx explain run_id=<id> [explainer=<name>] [explainer.records=N]
                                  attributions, plots, faithfulness of a trained run
ecgx eval run_id=<id> [subset=test|val|train|all] [dataset=<name>] [+dataset.<key>=...]
                                  re-test a run's best checkpoint (another dataset too);
                                  metrics + predictions to a child MLflow run
             [robustness=<default|leads|noise>] [subgroups=default]
                                  robustness matrix / metrics by subgroup, as child runs
ecgx predict run_id=<id> input=<file or folder> [fs=<Hz>] [output=<csv>] [on_error=skip]
             [explainer=<name>]   class probabilities and labels of new records
ecgx predict model=models:/<name>@<alias> input=<file or folder>
                                  the same with a logged or registered MLflow model
ecgx register run_id=<id> name=<name> [alias=champion]
                                  the run's logged model into MLflow's model registry
ecgx export run_id=<id> format=torchscript|onnx [output=<file>]
                                  a self-contained model file + JSON contract sidecar
ecgx embed run_id=<id> input=<file or folder> [output=embeddings.npy]
                                  encoder features of records (pretraining runs too)
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


# Subcommand -> the function it runs on the composed config (imported when it runs: the start
# of every command should not pay for torch and MLflow imports it does not need).
TASKS = {
    "train": "ecgx.commands.train:train",
    "explain": "ecgx.commands.explain:explain_run",
    "eval": "ecgx.commands.evaluate:evaluate_run",
    "predict": "ecgx.commands.predict:predict_run",
    "embed": "ecgx.commands.embed:embed_run",
    "search": "ecgx.commands.search:search",
    "register": "ecgx.commands.register:register",
    "export": "ecgx.commands.export:export",
}


def _hydra_app(config_name: str, task: str) -> None:
    import importlib

    import hydra
    from omegaconf import DictConfig

    from ecgx import console
    from ecgx.errors import EcgxError

    @hydra.main(config_path=str(config_dir()), config_name=config_name, version_base="1.3")
    def app(cfg: DictConfig) -> float | None:
        console.configure()
        module, _, name = TASKS[task].partition(":")
        try:
            result = getattr(importlib.import_module(module), name)(cfg)
        except EcgxError as err:
            raise SystemExit(f"ecgx {task}: error: {err}") from None
        if task != "train":
            return None
        # Hyper-parameter sweepers read the returned value.
        key = cfg.get("optimized_metric")
        return result.get(key) if key else None

    app()


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    command, rest = argv[0], argv[1:]
    os.environ.setdefault("ECGX_ROOT", str(project_root()))
    from ecgx.console import quiet_before_imports

    quiet_before_imports()
    if command in TASKS:
        from ecgx.commands.experiment_files import (
            experiment_overrides,
            folder_multirun,
            run_per_file,
        )
        from ecgx.commands.overrides import check_group_choices
        from ecgx.errors import EcgxError

        if command in ("predict", "export"):
            # `model=models:/<name>@champion`: the URI, not a choice of the conf/model group.
            rest = [f"model_uri={a[6:]}" if a.startswith("model=") and ":/" in a else a
                    for a in rest]  # fmt: skip
        try:
            rest = experiment_overrides(rest)
            check_group_choices(rest)
            jobs = folder_multirun(rest) if command == "train" else None
        except EcgxError as err:
            sys.exit(f"ecgx {command}: error: {err}")
        if jobs:
            run_per_file(jobs)
            return
        sys.argv = [f"ecgx {command}", *rest]
        _hydra_app("train" if command == "search" else command, command)
    elif command == "compare":
        from ecgx.commands.compare import main as compare_main

        compare_main(rest)
    elif command == "bench":
        from ecgx.commands.bench import main as bench_main

        bench_main(rest)
    elif command == "models":
        from ecgx.models.catalog import main as models_main

        models_main(rest)
    elif command == "data":
        from ecgx.commands.data import main as data_main

        data_main(rest)
    else:
        sys.exit(f"ecgx: unknown command {command!r}\n{USAGE}")


if __name__ == "__main__":
    main()
