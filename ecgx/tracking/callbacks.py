"""Lightning callbacks that write run artifacts to MLflow."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from ecgx.tracking.mlflow_run import log_file

#: environment variable naming the file :class:`FirstStepTime` appends its record to
FIRST_STEP_ENV = "ECGX_FIRST_STEP_FILE"


class LogTestPredictions(L.Callback):
    """After testing, log per-record test predictions and (classification) the ROC curves.

    A callback rather than code after ``trainer.test``: with a spawning strategy (DDP on CPU)
    the test runs in other processes, and only rank 0 there holds the gathered predictions.
    """

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from lightning.pytorch.loggers import MLFlowLogger

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
    classification, ``plots/roc_test.png`` and ``plots/reliability_test.png``."""
    import pandas as pd

    from ecgx.evaluation.calibration import reliability_diagram
    from ecgx.evaluation.plots import roc_curves

    classify = task != "regression"
    with tempfile.TemporaryDirectory() as tmp:
        if classify:
            plot = roc_curves(torch.as_tensor(probs), torch.as_tensor(targets), names,
                              Path(tmp) / "roc_test.png", "Test ROC curves (best checkpoint)",
                              aurocs or {})  # fmt: skip
            log_file(client, run_id, plot, "plots")
            log_file(client, run_id, reliability_diagram(probs, targets, names,
                     Path(tmp) / "reliability_test.png", "Test reliability (best checkpoint)"),
                     "plots")  # fmt: skip
        table = pd.DataFrame({"record_id": record_ids})
        for i, name in enumerate(names):
            table[f"{'prob' if classify else 'pred'}_{name}"] = probs[:, i]
            truth = targets[:, i]
            table[f"true_{name}"] = truth.astype(int) if classify else truth
        path = Path(tmp) / "test_predictions.csv"
        table.to_csv(path, index=False)
        log_file(client, run_id, path, "predictions")


class FirstStepTime(L.Callback):
    """Records when the first training step of a run starts and ends (``ecgx bench suite=sweep``
    adds it with ``+callbacks.first_step._target_=ecgx.tracking.callbacks.FirstStepTime``).

    Appends one JSON line (``label``, ``pid``, wall-clock ``fit_start``, ``train_start``,
    ``first_batch`` and ``first_step_end`` in ``time.time()`` seconds) to ``path``, or to the file
    named by ``$ECGX_FIRST_STEP_FILE``; one short ``O_APPEND`` write per job, so the jobs of a
    multirun can share the file. ``stop=true`` ends fitting after that step: start-up is
    measured without waiting for the training the run would do.
    """

    def __init__(self, path: str | None = None, label: str | None = None, stop: bool = False):
        self.path = path or os.environ.get(FIRST_STEP_ENV)
        if not self.path:
            raise ValueError(f"FirstStepTime: no path given and ${FIRST_STEP_ENV} is not set")
        self.label = None if label is None else str(label)
        self.stop = stop
        self.times: dict[str, float] = {}
        self.written = False

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.times.setdefault("fit_start", time.time())

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.times.setdefault("train_start", time.time())

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.times.setdefault("first_batch", time.time())

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if self.written or trainer.global_rank != 0:
            return
        self.times["first_step_end"] = time.time()
        line = json.dumps({"label": self.label, "pid": os.getpid(), **self.times}) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
        self.written = True
        if self.stop:
            # should_stop alone waits for min_epochs; a start-up probe wants out now.
            trainer.fit_loop.min_epochs = 0
            trainer.should_stop = True
