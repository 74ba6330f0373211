"""Lightning callbacks that write run artifacts to MLflow."""

from __future__ import annotations

import tempfile
from pathlib import Path

import lightning as L
import pandas as pd
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
        from ecgx.plots import roc_curves

        probs, targets, rows = result
        datamodule = trainer.datamodule
        names = list(pl_module.class_names)
        classify = pl_module.task != "regression"
        client, run_id = logger.experiment, logger.run_id
        with tempfile.TemporaryDirectory() as tmp:
            if classify:
                metrics = trainer.callback_metrics
                aurocs = {n: float(metrics[f"test/auroc_{n}"]) for n in names
                          if f"test/auroc_{n}" in metrics}  # fmt: skip
                plot = roc_curves(probs, targets, names, Path(tmp) / "roc_test.png",
                                  "Test ROC curves (best checkpoint)", aurocs)  # fmt: skip
                log_file(client, run_id, plot, "plots")
            ids = datamodule.cache.meta["record_id"].iloc[rows.numpy()].to_numpy()
            table = pd.DataFrame({"record_id": ids})
            for i, name in enumerate(names):
                table[f"{'prob' if classify else 'pred'}_{name}"] = probs[:, i].numpy()
                truth = targets[:, i]
                table[f"true_{name}"] = (truth.int() if classify else truth).numpy()
            path = Path(tmp) / "test_predictions.csv"
            table.to_csv(path, index=False)
            log_file(client, run_id, path, "predictions")
