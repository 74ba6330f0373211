"""What ``ecgx train`` shows while it trains: the plan (data, model, epochs, device), an estimate
of the time measured on the first steps, and a progress bar with epoch i/N and the monitored
metric."""

from __future__ import annotations

import logging
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar

log = logging.getLogger(__name__)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class ProgressBar(TQDMProgressBar):
    """Lightning's bar with ``Epoch i/N`` and without the logger's version number; the
    validation bar is hidden (its metric appears on the training bar when it ends).

    ``timed_steps`` training steps after the first (which pays one-off costs) give the
    estimate: seconds per step × steps per epoch × epochs, with the first validation's time
    added per epoch once it is known.
    """

    def __init__(self, refresh_rate: int = 1, timed_steps: int = 5) -> None:
        super().__init__(refresh_rate=refresh_rate)
        self.timed_steps = timed_steps
        self._start: float | None = None
        self._per_step: float | None = None
        self._val_start: float | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        log.info(plan_line(trainer, pl_module))  # before the bar starts drawing
        super().on_train_start(trainer, pl_module)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        if trainer.max_epochs and trainer.max_epochs > 0:
            self.train_progress_bar.set_description(
                f"Epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"
            )

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, *args)
        if self._per_step is not None or trainer.current_epoch > 0:
            return
        step = trainer.fit_loop.epoch_loop.batch_progress.current.completed
        if step == 1:
            self._start = time.perf_counter()
        elif self._start is not None and step == 1 + self.timed_steps:
            self._per_step = (time.perf_counter() - self._start) / self.timed_steps
            steps = trainer.num_training_batches
            epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else 1
            total = self._per_step * float(steps) * epochs
            log.info(
                "estimate: %.2f s per step x %s steps x %s epochs = about %s of training, "
                "plus validation (early stopping may end it sooner)",
                self._per_step, steps, epochs, _duration(total),
            )  # fmt: skip

    def init_validation_tqdm(self) -> Any:
        bar = super().init_validation_tqdm()
        bar.disable = True
        return bar

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics


def plan_line(trainer: L.Trainer, pl_module: L.LightningModule) -> str:
    """``<model> (<params>) on <data>: n train / n val / n test records, k classes; up to N
    epochs x S steps (batch B) on <device>``."""
    from ecgx.models.base import count_parameters

    net = getattr(pl_module, "net", pl_module)
    dm = trainer.datamodule
    parts = [f"{type(net).__name__} ({count_parameters(net) / 1e6:.2f} M parameters)"]
    if dm is not None and hasattr(dm, "indices"):
        reader = getattr(dm, "dataset", None)
        where = getattr(reader, "root", None)
        name = type(reader).__name__ if reader is not None else "data"
        sizes = " / ".join(f"{len(v):,} {k}" for k, v in dm.indices.items())
        parts.append(f"on {name}{f' at {where}' if where else ''}: {sizes} records, "
                     f"{dm.num_classes} classes")  # fmt: skip
    epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else "?"
    batch = getattr(dm, "batch_size", None)
    parts.append(f"up to {epochs} epochs x {trainer.num_training_batches} steps"
                 f"{f' (batch {batch})' if batch else ''} on {trainer.strategy.root_device}")  # fmt: skip
    return "training " + " ".join(parts[:2]) + "; " + parts[-1]
