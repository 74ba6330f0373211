"""``ecgx eval``: test a finished run's best checkpoint again, on one of its splits or on another
dataset, and log the result to a child MLflow run of it.

The records go through the run's own pipeline: offline transforms, the normalisation fitted at
training time (from the checkpoint), the evaluation view of the online transforms. Metrics come
from the same :class:`~ecgx.training.module.ECGClassifier` test epoch as in training, so re-testing the
test split reproduces the run's ``test/`` metrics.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from ecgx.errors import ConfigValueError
from ecgx.evaluation.calibration import stored_temperature
from ecgx.evaluation.subgroups import SubgroupResult
from ecgx.robustness.runner import RobustnessResult
from ecgx.tracking.runs import load_checkpoint, load_run, logged_thresholds, rebuild
from ecgx.tracking.runs import output_dir as job_output_dir

log = logging.getLogger(__name__)

SPLIT_CHOICES = ("test", "val", "train", "all")
THRESHOLD_CHOICES = ("auto", "val", "run", "none")


@dataclass
class EvalResult:
    """What ``ecgx eval`` measured and where it put it."""

    split: str
    metrics: dict[str, float]
    predictions: pd.DataFrame
    predictions_path: Path
    thresholds: str  # where the tuned thresholds came from: val, run or none
    child_run_id: str | None = None
    class_names: list[str] = field(default_factory=list)
    robustness: RobustnessResult | None = None  # with robustness=<preset>
    subgroups: SubgroupResult | None = None  # with subgroups=<preset>


def _everything(meta: pd.DataFrame, y: np.ndarray) -> dict[str, np.ndarray]:
    # subset=all: every labelled record is evaluated, whatever columns the metadata has.
    empty = np.zeros(0, dtype=int)
    return {"train": empty, "val": empty, "test": np.arange(len(meta))}


class _SplitView(L.LightningDataModule):
    """The run's datamodule seen by ``trainer.test``: the chosen split as the test loader
    (never augmented, even for ``train``) and its validation split for threshold tuning."""

    def __init__(self, data: Any, split: str) -> None:
        super().__init__()
        self.data = data
        self.cache = data.cache
        part = "test" if split == "all" else split
        self.dataset = data.dataset_of(part, train=False)

    def test_dataloader(self) -> DataLoader:
        from ecgx.data.datamodule import collate

        return DataLoader(self.dataset, batch_size=self.data.eval_batch_size, shuffle=False,
                          num_workers=self.data.num_workers, collate_fn=collate)  # fmt: skip

    def val_dataloader(self) -> DataLoader:
        return self.data.val_dataloader()


class _FixedThresholds(L.Callback):
    """Set thresholds known in advance (the run's logged ones) for the test epoch.

    On ``on_test_epoch_start`` because the module's own ``on_test_start`` resets them first.
    """

    def __init__(self, thresholds: list[float]) -> None:
        self.thresholds = np.asarray(thresholds, dtype=float)

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.thresholds = self.thresholds


def _other_dataset(run_cfg: DictConfig, override: DictConfig) -> DictConfig:
    """The run's dataset node with ``override`` applied: a node naming another reader
    (``_target_``) replaces it, anything else is merged into it."""
    current = run_cfg.data.dataset
    if override.get("_target_") and override._target_ != current.get("_target_"):
        return override
    return OmegaConf.merge(current, override)


def _dataset_label(cfg: DictConfig, dataset: DictConfig) -> str:
    """A short name of the evaluated dataset for the child run's name."""
    from hydra.core.hydra_config import HydraConfig

    choice = None
    if HydraConfig.initialized():
        choice = HydraConfig.get().runtime.choices.get("dataset")
    name = str(choice or str(dataset.get("_target_", "dataset")).rsplit(".", 1)[-1].lower())
    sources = dataset.get("sources")
    if sources:
        name += "-" + "+".join(str(s) for s in sources)
    return name


def evaluate_run(cfg: DictConfig) -> EvalResult:
    """Evaluate the best checkpoint of a finished run (see conf/eval.yaml for the options)."""
    split = str(cfg.get("subset", "test"))
    if split not in SPLIT_CHOICES:
        raise ConfigValueError(f"subset must be one of {SPLIT_CHOICES}, got {split!r}")
    mode = str(cfg.get("thresholds", "auto"))
    if mode not in THRESHOLD_CHOICES:
        raise ConfigValueError(f"thresholds must be one of {THRESHOLD_CHOICES}, got {mode!r}")
    run_cfg, ckpt_path = load_run(cfg, "eval")
    if cfg.get("data"):
        run_cfg.data = OmegaConf.merge(run_cfg.data, cfg.data)
    other = bool(cfg.get("dataset"))
    if other:
        # Resolved here: its ${paths...} are this command's, not the training run's.
        override = OmegaConf.create(OmegaConf.to_container(cfg.dataset, resolve=True))
        run_cfg.data.dataset = _other_dataset(run_cfg, override)
    checkpoint = load_checkpoint(ckpt_path)
    started = time.perf_counter()
    datamodule, net = rebuild(run_cfg, checkpoint, split=_everything if split == "all" else None)
    names = list(datamodule.class_names)
    if cfg.get("run_id") and not other:  # another dataset is other data on purpose
        _check_data_version(cfg, datamodule)
    part = "test" if split == "all" else split
    if len(datamodule.indices[part]) == 0:
        raise ConfigValueError(f"subset={split}: no records to evaluate")

    task = run_cfg.module.task
    if cfg.get("robustness"):
        from ecgx.robustness.run import evaluate_robustness

        module = instantiate(run_cfg.module, net=net, class_names=names, compile=False).eval()
        robust = evaluate_robustness(cfg, run_cfg, datamodule, module, part, split)
        if not cfg.get("subgroups"):  # the clean row is this split's plain evaluation
            clean = robust.table.iloc[0]
            return EvalResult(split, {f"{split}/{robust.metric}": float(clean["perturbed"])},
                              robust.predictions, robust.predictions_path, "none",
                              robust.child_run_ids.get("clean"), names, robust)  # fmt: skip
    else:
        robust = None
    if mode == "auto":
        # The run's own protocol on its own data; on other records the validation split of
        # the run is the honest source (tuning on evaluated records would flatter them).
        mode = "val" if split != "all" and not other else "run"
    fixed = None
    if task == "multilabel" and mode == "run":
        fixed = logged_thresholds(cfg.tracking_uri, cfg.get("run_id"), names)
        if fixed is None:
            log.warning("the run logged no test/threshold_<class> metrics: no tuned thresholds")
            mode = "none"
    if task != "multilabel":
        mode = "none"

    overrides: dict[str, Any] = {"compile": False, "tune_thresholds": mode == "val"}
    if cfg.get("bootstrap_resamples") is not None:
        overrides["bootstrap_resamples"] = int(cfg.bootstrap_resamples)
    if cfg.get("calibrate") is not None:
        overrides["calibrate"] = bool(cfg.calibrate)
    module = instantiate(run_cfg.module, net=net, class_names=names, **overrides)
    fitted = stored_temperature(checkpoint)
    if fitted is not None:
        # Fitted at training time with these weights; without one, the module fits it on the
        # run's validation split before testing.
        module.set_temperature(fitted)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[_FixedThresholds(fixed)] if fixed is not None else [])  # fmt: skip
    results = trainer.test(module, datamodule=_SplitView(datamodule, split), verbose=False)
    metrics = {f"{split}/{k.removeprefix('test/')}": float(v) for k, v in results[0].items()}
    probs, targets, rows = module.test_result
    ids = datamodule.cache.meta["record_id"].iloc[rows.numpy()].to_numpy()
    table = predictions_table(probs.numpy(), targets.numpy(), ids, names, task)
    out = job_output_dir("eval") / f"{split}_predictions.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    log.info("evaluated %d records in %.1fs", len(table), time.perf_counter() - started)

    groups, group_metrics, group_files = None, {}, []
    if cfg.get("subgroups"):
        from ecgx.evaluation.subgroups import evaluate_subgroups

        meta = datamodule.cache.meta.iloc[rows.numpy()].reset_index(drop=True)
        groups, group_metrics, group_files = evaluate_subgroups(
            cfg, task, names, meta, targets.numpy(), probs.numpy(), split
        )

    child = None
    if cfg.get("run_id") and cfg.get("log", True):
        name = f"eval-{split}" + (f"-{_dataset_label(cfg, run_cfg.data.dataset)}" if other else "")
        params = {"eval/subset": split, "eval/thresholds": mode, "eval/n_records": len(table),
                  "eval/checkpoint": ckpt_path.name,
                  "eval/dataset": OmegaConf.to_yaml(run_cfg.data.dataset).strip()[:6000]}  # fmt: skip
        child = _log_child_run(cfg, name, {**metrics, **group_metrics}, params, out, probs,
                               targets, names, task, group_files)  # fmt: skip
    _print_metrics(metrics, split, len(table), mode)
    if groups is not None:
        from ecgx.evaluation.subgroups import format_subgroups

        print(
            f"\nSubgroups on {split} (groups under {cfg.subgroups.min_size} records are not "
            f"scored; 95 % bootstrap intervals):"
        )
        print(format_subgroups(groups))
    if child:
        print(f"Logged to MLflow run {child} (child of {cfg.run_id}); predictions: {out}")
    return EvalResult(split, metrics, table, out, mode, child, names, robust, groups)


def predictions_table(
    probs: np.ndarray, targets: np.ndarray, ids: np.ndarray, names: list[str], task: str
) -> pd.DataFrame:
    """Record id, per-class output and per-class truth: the layout of the training run's
    ``predictions/test_predictions.csv``."""
    classify = task != "regression"
    table = pd.DataFrame({"record_id": ids})
    for i, name in enumerate(names):
        table[f"{'prob' if classify else 'pred'}_{name}"] = probs[:, i]
        truth = targets[:, i]
        table[f"true_{name}"] = truth.astype(int) if classify else truth
    return table


def _log_child_run(
    cfg: DictConfig,
    name: str,
    metrics: dict[str, float],
    params: dict[str, Any],
    predictions: Path,
    probs: torch.Tensor,
    targets: torch.Tensor,
    names: list[str],
    task: str,
    files: list[Path] = (),  # type: ignore[assignment]
) -> str:
    """A child run of ``cfg.run_id`` holding the metrics, predictions and ROC plot (and
    ``files``, in ``evaluation/``)."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    from ecgx.evaluation.plots import roc_curves
    from ecgx.tracking.mlflow_run import log_file

    client = MlflowClient(cfg.tracking_uri)
    parent = client.get_run(str(cfg.run_id))
    run = client.create_run(parent.info.experiment_id, run_name=name,
                            tags={"mlflow.parentRunId": str(cfg.run_id),
                                  "ecgx.command": "eval"})  # fmt: skip
    run_id = run.info.run_id
    try:
        now = int(time.time() * 1000)
        entries = [Metric(k, v, now, 0) for k, v in metrics.items()]
        for start in range(0, len(entries), 500):  # MLflow's batch limit is 1000 metrics
            client.log_batch(run_id, metrics=entries[start : start + 500])
        client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])
        log_file(client, run_id, predictions, "predictions")
        for path in files:
            log_file(client, run_id, path, "evaluation")
        if task != "regression":
            split = params["eval/subset"]
            aurocs = {k.split("/auroc_", 1)[1]: v for k, v in metrics.items() if "/auroc_" in k}
            with tempfile.TemporaryDirectory() as tmp:
                plot = roc_curves(probs, targets, names, Path(tmp) / f"roc_{split}.png",
                                  f"ROC curves ({name})", aurocs)  # fmt: skip
                log_file(client, run_id, plot, "plots")
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_id


def _print_metrics(metrics: dict[str, float], split: str, n: int, thresholds: str) -> None:
    rows = sorted(metrics.items())
    width = max(len(k) for k, _ in rows)
    print(f"\nMetrics on {split} ({n} records; tuned thresholds: {thresholds}):")
    for k, v in rows:
        print(f"  {k:<{width}}  {v:.4f}")


def _check_data_version(cfg: DictConfig, datamodule: Any) -> bool:
    """Warn when the run is re-tested on data other than what it trained on (its logged
    ``data/digest``); runs from before lineage was logged are not checked."""
    from mlflow.tracking import MlflowClient

    from ecgx.tracking.lineage import DIGEST_PARAM, data_version, warn_if_other_data

    params = MlflowClient(cfg.tracking_uri).get_run(str(cfg.run_id)).data.params
    if DIGEST_PARAM not in params:
        return False
    return warn_if_other_data(params[DIGEST_PARAM], data_version(datamodule), str(cfg.run_id))
