"""What an experiment file declares, read without composing it, and folder multiruns.

``ecgx train -m 'experiment=glob(<study>/*)'`` should run a whole study. Hydra alone cannot: with
``experiment=a,b,c`` as the sweep it reads ``hydra.sweeper.params`` from the config composed
*without* the experiments, so each file's own sweep (folds, held-out sources, single leads) would
silently shrink to its first job, and a file that needs a value it does not set (a fine-tune's
``required: [init_from]``) fails the whole sweep. This module finds both by reading the files and their
parent experiment files, so the command can run one Hydra multirun per file and leave out the
files that cannot run, saying why.
"""

from __future__ import annotations

import fnmatch
import sys
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ecgx.errors import ConfigValueError
from ecgx.paths import config_dir


def experiment_root() -> Path:
    return config_dir() / "experiment"


def experiment_names() -> list[str]:
    """Every experiment file as ``<study>/<name>``, sorted."""
    base = experiment_root()
    return sorted(str(p.relative_to(base).with_suffix("")) for p in base.rglob("*.yaml"))


def expand_glob(value: str) -> list[str]:
    """``glob(p1, p2)`` -> the experiment names matching any pattern (others: ``[value]``)."""
    if not (value.startswith("glob(") and value.endswith(")")):
        return [value]
    patterns = [p.strip() for p in value[5:-1].split(",")]
    names = experiment_names()
    chosen = [n for n in names if any(fnmatch.fnmatch(n, p) for p in patterns)]
    if not chosen:
        raise ConfigValueError(f"experiment={value}: no experiment file matches; they are {names}")
    return chosen


@dataclass
class ExperimentFile:
    name: str
    missing: list[str] = field(default_factory=list)  # its ``required`` keys it leaves unset
    sweep: dict[str, str] = field(default_factory=dict)  # its hydra.sweeper.params


def read_experiment(name: str) -> ExperimentFile:
    """The unset ``required`` keys and the own sweep of ``name``, parents included (a child's
    value wins, as in Hydra's composition)."""
    merged = _merged(name, set())
    required = [str(k) for k in merged.get("required") or []]
    missing = [k for k in required if OmegaConf.select(merged, k, default=None) is None]
    params = OmegaConf.select(merged, "hydra.sweeper.params", default=None)
    sweep = {str(k): str(v) for k, v in params.items()} if isinstance(params, DictConfig) else {}
    return ExperimentFile(name, missing, sweep)


def _merged(name: str, seen: set[str]) -> DictConfig:
    path = experiment_root() / f"{name}.yaml"
    if not path.is_file():
        raise ConfigValueError(f"experiment={name}: no file {path}")
    if name in seen:
        raise ConfigValueError(f"experiment={name}: its defaults include itself")
    node = OmegaConf.load(path)
    if not isinstance(node, DictConfig):
        raise ConfigValueError(f"{path}: not a mapping")
    parents = []
    for entry in node.get("defaults") or []:
        # Plain strings name other configs; "override /group: option" entries are mappings.
        if isinstance(entry, str) and entry != "_self_":
            parent = _experiment_parent(entry, name)
            if parent is not None:
                parents.append(_merged(parent, seen | {name}))
    own = OmegaConf.masked_copy(node, [k for k in node if k != "defaults"])
    return OmegaConf.merge(*parents, own) if parents else own


def _experiment_parent(entry: str, child: str) -> str | None:
    """An experiment file a defaults entry names (absolute ``/experiment/x/y``, or relative to
    the experiment folder or to the child's study), or None for another group's config."""
    if entry.startswith("/"):
        head, _, rest = entry.lstrip("/").partition("/")
        return rest if head == "experiment" else None
    study = child.rpartition("/")[0]
    for candidate in (entry, f"{study}/{entry}" if study else entry):
        if (experiment_root() / f"{candidate}.yaml").is_file():
            return candidate
    return None


@dataclass
class FolderPlan:
    """How ``ecgx train -m experiment=<several files>`` runs: one Hydra multirun over all of
    them (``per_file`` False) or one per file, so that each file's own sweep runs in full."""

    names: list[str]
    skipped: dict[str, list[str]]  # file -> the unset keys that keep it out
    per_file: bool


def plan_folder_multirun(names: list[str], given: set[str]) -> FolderPlan:
    """Leave out files with ``required`` keys the command line does not give (``given``: the keys
    of its ``key=value`` overrides); run per file when any file sweeps on its own."""
    files = [read_experiment(n) for n in names]
    skipped = {f.name: [k for k in f.missing if k not in given] for f in files}
    skipped = {n: keys for n, keys in skipped.items() if keys}
    kept = [f for f in files if f.name not in skipped]
    return FolderPlan([f.name for f in kept], skipped, any(f.sweep for f in kept))


def experiment_overrides(args: list[str]) -> list[str]:
    """``experiment=`` overrides as Hydra expects them.

    ``+experiment=x`` (the usual Hydra spelling for an optional group) is accepted as
    ``experiment=x``: the group sits in train.yaml's defaults, before ``debug``, so a debug
    preset shortens an experiment. ``experiment=glob(<study>/*)`` becomes the explicit list of
    matching files, because Hydra's glob() sees only the top folder of a nested group and would
    launch 0 jobs without a word.
    """
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


def run_per_file(jobs: list[list[str]]) -> None:
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
