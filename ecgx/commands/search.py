"""``ecgx search``: Bayesian hyper-parameter search (Optuna TPE) over ``ecgx train`` runs.

Optuna is driven directly (hydra-optuna-sweeper pins optuna<3, which breaks beside mlflow's
SQLAlchemy 2). The study lives in ``hparams_search.storage``, so rerunning the same command
resumes it: trials are added until the study holds ``n_trials`` COMPLETE + PRUNED trials.
Every trial is one MLflow run, tagged ``ecgx.study`` and ``ecgx.trial``.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf, open_dict

from ecgx.errors import ConfigValueError

log = logging.getLogger(__name__)

STUDY_TAG = "ecgx.study"
TRIAL_TAG = "ecgx.trial"
TYPES = ("float", "int", "categorical")
_MISSING = object()


class PruningCallback(L.Callback):
    """Reports the monitored validation metric to an Optuna trial after every validation
    epoch and raises ``optuna.TrialPruned`` when the trial's pruner says so."""

    def __init__(self, trial: Any, monitor: str) -> None:
        self.trial = trial
        self.monitor = monitor
        self.run_id: str | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.run_id = getattr(trainer.logger, "run_id", None)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        import optuna

        epoch = trainer.current_epoch
        self.trial.report(float(trainer.callback_metrics[self.monitor]), step=epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"trial {self.trial.number} pruned at epoch {epoch}")


def parse_space(cfg: DictConfig) -> dict[str, dict[str, Any]]:
    """``hparams_search.space`` checked against the composed config: every key must exist in it
    (a conditional key, one with ``when``, needs only its parent node)."""
    space_node = cfg.hparams_search.get("space")
    if not space_node:
        raise ConfigValueError("hparams_search.space is empty: nothing to search")
    # Unresolved: values nodes may interpolate keys of the trial's own config.
    space = OmegaConf.to_container(space_node, resolve=False)
    assert isinstance(space, dict)
    for key, spec in space.items():
        where = f"hparams_search.space.{key}"
        if not isinstance(spec, dict) or spec.get("type") not in TYPES:
            raise ConfigValueError(f"{where}: type must be one of {', '.join(TYPES)}")
        if spec["type"] == "categorical" and not spec.get("choices"):
            raise ConfigValueError(f"{where}: a categorical needs choices")
        if spec["type"] != "categorical" and ("low" not in spec or "high" not in spec):
            raise ConfigValueError(f"{where}: a {spec['type']} needs low and high")
        for other in spec.get("when") or {}:
            if other not in space or list(space).index(other) >= list(space).index(key):
                raise ConfigValueError(f"{where}: 'when' names {other!r}, not an earlier key")
        target = key.rsplit(".", 1)[0] if spec.get("when") and "." in key else key
        if OmegaConf.select(cfg, target, default=_MISSING) is _MISSING:
            raise ConfigValueError(
                f"{where}: unknown config key {key!r} (no {target!r} in the composed config)"
            )
    return space


def sample(trial: Any, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One value per (active) key of the space, in the space's order."""
    raw: dict[str, Any] = {}
    values: dict[str, Any] = {}
    for key, spec in space.items():
        if any(raw.get(k) != v for k, v in (spec.get("when") or {}).items()):
            continue
        kind = spec["type"]
        if kind == "float":
            step = spec.get("step")
            value = trial.suggest_float(key, float(spec["low"]), float(spec["high"]),
                                        log=bool(spec.get("log")),
                                        step=None if step is None else float(step))  # fmt: skip
        elif kind == "int":
            value = trial.suggest_int(key, int(spec["low"]), int(spec["high"]),
                                      step=int(spec.get("step") or 1), log=bool(spec.get("log")))  # fmt: skip
        else:
            value = trial.suggest_categorical(key, list(spec["choices"]))
        raw[key] = value
        table = spec.get("values")
        values[key] = copy.deepcopy(table[value]) if table else value
    return values


def trial_config(cfg: DictConfig, values: dict[str, Any], output_dir: str) -> DictConfig:
    """A copy of ``cfg`` with the sampled values applied, its own output folder, and
    ``force=true`` (each trial is its own run even if it repeats a finished config)."""
    tcfg = copy.deepcopy(cfg)
    with open_dict(tcfg):
        tcfg.pop("hparams_search", None)
        tcfg.force = True
    for key, value in values.items():
        OmegaConf.update(tcfg, key, value, merge=False, force_add=True)
    OmegaConf.update(tcfg, "paths.output_dir", output_dir, force_add=True)
    return tcfg


def _count_done(study: Any) -> int:
    from optuna.trial import TrialState

    states = (TrialState.COMPLETE, TrialState.PRUNED)
    return len(study.get_trials(deepcopy=False, states=states))


def search(cfg: DictConfig) -> Any:
    """Run (or resume) the study of ``cfg.hparams_search``; returns the optuna study."""
    import optuna
    from hydra.utils import instantiate

    from ecgx.commands.train import train

    hs = cfg.get("hparams_search")
    if not hs:
        raise ConfigValueError(
            "ecgx search needs a preset: hparams_search=tpe (conf/hparams_search)"
        )
    space = parse_space(cfg)
    study_name, storage = str(hs.study_name), str(hs.storage)
    n_trials, metric = int(hs.n_trials), str(hs.metric)
    direction = {"max": "maximize", "min": "minimize"}.get(str(hs.direction), str(hs.direction))
    if storage.startswith("sqlite:///"):
        Path(storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(study_name=study_name, storage=storage, direction=direction,
                                load_if_exists=True)  # fmt: skip
    # The sampler's seed moves on with the trials already held, so a resumed study does not
    # replay the first trials' random start-up points; a fresh study starts at `seed`.
    sampler_cfg = OmegaConf.to_container(hs.sampler, resolve=True) if hs.get("sampler") else {}
    assert isinstance(sampler_cfg, dict)
    if sampler_cfg.get("seed") is not None:
        sampler_cfg["seed"] = int(sampler_cfg["seed"]) + len(study.trials)
    study.sampler = instantiate(sampler_cfg) if sampler_cfg else optuna.samplers.TPESampler()
    if hs.get("pruner"):
        study.pruner = instantiate(hs.pruner)
    base_output = str(cfg.paths.output_dir)

    def objective(trial: optuna.Trial) -> float:
        from mlflow.tracking import MlflowClient

        values = sample(trial, space)
        tcfg = trial_config(cfg, values, f"{base_output}/trial_{trial.number:03d}")
        if tcfg.get("run_name") is None:
            tcfg.run_name = f"{study_name}-t{trial.number}"
        log.info("trial %s: %s", trial.number, values)
        pruning = PruningCallback(trial, str(tcfg.get("monitor") or metric))
        tags = {STUDY_TAG: study_name, TRIAL_TAG: str(trial.number)}
        try:
            metrics = train(tcfg, extra_callbacks=[pruning], extra_tags=tags)
        except optuna.TrialPruned:
            if pruning.run_id:  # train() marked it FAILED: a pruned run was stopped on purpose
                MlflowClient(tcfg.tracking_uri).set_terminated(pruning.run_id, "KILLED")
            raise
        finally:
            if pruning.run_id:
                trial.set_user_attr("mlflow_run_id", pruning.run_id)
        if metric not in metrics:
            raise ConfigValueError(
                f"hparams_search.metric={metric}: not among the run's metrics "
                f"({', '.join(sorted(metrics))})"
            )
        return float(metrics[metric])

    done = _count_done(study)
    print(f"study '{study_name}' in {storage}: {done}/{n_trials} trials done")
    while _count_done(study) < n_trials:
        study.optimize(objective, n_trials=1)
    _print_best(study, metric)
    return study


def _print_best(study: Any, metric: str) -> None:
    try:
        best = study.best_trial
    except ValueError:
        print("no completed trial yet")
        return
    run_id = best.user_attrs.get("mlflow_run_id", "?")
    print(f"\nBest trial {best.number}: {metric} = {best.value:.4f} (MLflow run {run_id})")
    for key, value in best.params.items():
        print(f"  {key} = {value}")
