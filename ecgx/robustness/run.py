"""``ecgx eval run_id=… robustness=<preset>``: the preset instantiated, the table scored, printed,
written to the job's folder and logged as child runs of the evaluated run.

Logged as one child run per row (the clean one included), each tagged ``perturbation=<name>``
and ``ecgx.robustness=<preset>`` and carrying the parent's group choices, so ``ecgx compare
tag.ecgx.robustness=<preset> group_by=[model,perturbation]`` groups them; the ``clean`` run
also holds the table (CSV) and the SNR plot.
"""

from __future__ import annotations

import logging
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from ecgx.errors import ConfigValueError
from ecgx.evaluation.scoring import DEFAULT_METRIC
from ecgx.robustness.perturbations import Perturbation
from ecgx.robustness.plots import metric_vs_snr
from ecgx.robustness.runner import (
    CLEAN,
    RobustnessResult,
    format_degradation,
    read_records,
    robustness_table,
)
from ecgx.tracking.child_runs import log_child_run, metric_name
from ecgx.tracking.runs import output_dir

log = logging.getLogger(__name__)


def preset_name(cfg: DictConfig) -> str:
    """The chosen ``robustness=`` option (``custom`` for a node composed otherwise)."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        choice = HydraConfig.get().runtime.choices.get("robustness")
        if choice:
            return str(choice)
    return "custom"


def build_perturbations(node: DictConfig) -> dict[str, Perturbation]:
    """``robustness.perturbations`` (name -> node with ``_target_``) instantiated, in order."""
    items = node.get("perturbations")
    if not items:
        raise ConfigValueError("robustness.perturbations: empty; name at least one perturbation")
    out = {}
    for name, spec in items.items():
        if not isinstance(spec, DictConfig) or "_target_" not in spec:
            raise ConfigValueError(f"robustness.perturbations.{name}: needs a _target_ "
                                   "(a class of ecgx.robustness.perturbations)")  # fmt: skip
        made = instantiate(spec)
        if not isinstance(made, Perturbation):
            raise ConfigValueError(f"robustness.perturbations.{name}: {spec._target_} is not a "
                                   "Perturbation")  # fmt: skip
        out[str(name)] = made
    return out


def evaluate_robustness(
    cfg: DictConfig, run_cfg: DictConfig, datamodule: Any, module: Any, part: str, split: str
) -> RobustnessResult:
    """Score ``part`` of the run's data (the ``subset`` named ``split``) under
    ``cfg.robustness``; see the module docstring."""
    from ecgx.commands.evaluate import predictions_table

    node = cfg.robustness
    preset = preset_name(cfg)
    perturbations = build_perturbations(node)
    task = str(run_cfg.module.task)
    names = list(datamodule.class_names)
    metric = str(node.get("metric") or DEFAULT_METRIC[task])
    rows = datamodule.indices[part]
    meta = datamodule.cache.meta.iloc[rows].reset_index(drop=True)
    records = read_records(datamodule.dataset, meta)
    resamples = int(node.get("bootstrap_resamples", 200))
    table, outputs = robustness_table(
        records, datamodule.targets[rows], perturbations, datamodule.transform,
        lambda x: module.outputs(module(x)), task, names, metric, n_resamples=resamples,
        seed=int(cfg.get("seed", 0)), batch_size=int(datamodule.eval_batch_size),
    )  # fmt: skip
    folder = output_dir("eval")
    folder.mkdir(parents=True, exist_ok=True)
    table_path = folder / f"robustness_{preset}_{split}.csv"
    table.to_csv(table_path, index=False)
    plot = metric_vs_snr(table, folder / f"robustness_{preset}_{split}.png",
                         f"{metric} on {split} against SNR ({preset})")  # fmt: skip
    predictions = predictions_table(outputs[CLEAN], datamodule.targets[rows],
                                    meta["record_id"].to_numpy(), names, task)  # fmt: skip
    predictions_path = folder / f"{split}_predictions.csv"
    predictions.to_csv(predictions_path, index=False)
    print(
        f"\nRobustness ({preset}) on {split}, {len(rows)} records, {metric}; drop = clean - "
        f"perturbed, positive is worse; 95 % bootstrap intervals ({resamples} resamples):"
    )
    print(format_degradation(table))
    print(f"table: {table_path}" + (f"; plot: {plot}" if plot else ""))

    child_ids: dict[str, str] = {}
    if cfg.get("run_id") and cfg.get("log", True):
        files = [(table_path, "robustness"), (predictions_path, "predictions")]
        files += [(plot, "plots")] if plot else []
        for row in table.to_dict("records"):
            key = f"{split}/{metric_name(metric)}"
            metrics = {key: row["perturbed"], f"{key}_clean": row["clean"],
                       f"{key}_drop": row["drop_abs"], f"{key}_drop_rel": row["drop_rel"],
                       f"{key}_ci_low": row["perturbed_ci_low"],
                       f"{key}_ci_high": row["perturbed_ci_high"],
                       f"{key}_drop_ci_low": row["drop_ci_low"],
                       f"{key}_drop_ci_high": row["drop_ci_high"]}  # fmt: skip
            params = {"eval/subset": split, "eval/n_records": len(rows),
                      "robustness/preset": preset, "robustness/metric": metric,
                      "robustness/settings": row["settings"] or CLEAN,
                      "robustness/bootstrap_resamples": resamples}  # fmt: skip
            if row["snr_db"] == row["snr_db"]:  # not NaN
                params["robustness/snr_db"] = row["snr_db"]
            child_ids[row["perturbation"]] = log_child_run(
                cfg.tracking_uri, str(cfg.run_id), f"robustness-{preset}-{row['perturbation']}",
                {"perturbation": row["perturbation"], "ecgx.robustness": preset},
                {k: v for k, v in metrics.items() if v == v}, params,
                files if row["perturbation"] == CLEAN else (), inherit=True,
            )  # fmt: skip
        print(f"Logged {len(child_ids)} runs (child runs of {cfg.run_id}, tag "
              f"ecgx.robustness={preset}); compare them with: ecgx compare "
              f"tag.ecgx.robustness={preset} group_by=[perturbation]")  # fmt: skip
    return RobustnessResult(
        preset, metric, table, table_path, plot, child_ids, predictions, predictions_path
    )
