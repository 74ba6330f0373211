"""Lightning callbacks that write run artifacts to MLflow."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.loggers import MLFlowLogger

from ecgx.tracking.mlflow_run import log_file


class LogTestPredictions(L.Callback):
    """After testing, log per-record test predictions and (classification) the ROC curves.

    A callback rather than code after ``trainer.test``: with a spawning strategy (DDP on CPU)
    the test runs in other processes, and only rank 0 there holds the gathered predictions.
    """

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        result = getattr(pl_module, "test_result", None)
        logger = trainer.logger
        if trainer.global_rank != 0 or result is None or not isinstance(logger, MLFlowLogger):
            return
        probs, targets, rows = result
        metrics = trainer.callback_metrics
        aurocs = {k.removeprefix("test/auroc_"): float(v) for k, v in metrics.items()
                  if k.startswith("test/auroc_")}  # fmt: skip
        ids = trainer.datamodule.cache.meta["record_id"].iloc[rows.numpy()].to_numpy()
        log_test_predictions(logger.experiment, logger.run_id, probs.numpy(), targets.numpy(),
                             ids, list(pl_module.class_names), pl_module.task, aurocs)  # fmt: skip


def log_test_predictions(
    client: Any,
    run_id: str,
    probs: np.ndarray,
    targets: np.ndarray,
    record_ids: np.ndarray,
    names: list[str],
    task: str,
    aurocs: dict[str, float] | None = None,
) -> None:
    """``predictions/test_predictions.csv`` (record id, per-class output and truth) and, for
    classification, ``plots/roc_test.png``."""
    from ecgx.plots import roc_curves

    classify = task != "regression"
    with tempfile.TemporaryDirectory() as tmp:
        if classify:
            plot = roc_curves(torch.as_tensor(probs), torch.as_tensor(targets), names,
                              Path(tmp) / "roc_test.png", "Test ROC curves (best checkpoint)",
                              aurocs or {})  # fmt: skip
            log_file(client, run_id, plot, "plots")
        table = pd.DataFrame({"record_id": record_ids})
        for i, name in enumerate(names):
            table[f"{'prob' if classify else 'pred'}_{name}"] = probs[:, i]
            truth = targets[:, i]
            table[f"true_{name}"] = truth.astype(int) if classify else truth
        path = Path(tmp) / "test_predictions.csv"
        table.to_csv(path, index=False)
        log_file(client, run_id, path, "predictions")
