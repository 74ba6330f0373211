"""A callback that kills its own process with SIGKILL at a named moment of a run, so tests can
interrupt a real ``ecgx train`` exactly there. Configured the same in the killed run and in its
resume (the config hash must not change); only ``$ECGX_KILL_AT`` arms it, and
``$ECGX_KILL_JOB`` (a Hydra job number) limits it to one job of a multirun."""

from __future__ import annotations

import os
import signal
from typing import Any

import lightning as L

ENV = "ECGX_KILL_AT"
JOB_ENV = "ECGX_KILL_JOB"


def _this_job() -> bool:
    wanted = os.environ.get(JOB_ENV)
    if wanted is None:
        return True
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.initialized() and str(HydraConfig.get().job.num) == wanted


class KillAt(L.Callback):
    def _at(self, moment: str) -> None:
        if os.environ.get(ENV) == moment and _this_job():
            os.kill(os.getpid(), signal.SIGKILL)

    def on_train_start(self, *args: Any) -> None:
        self._at("train_start")  # before any checkpoint

    def on_validation_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.current_epoch == 1 and not trainer.sanity_checking:
            self._at("validation")  # the second epoch's validation, one checkpoint written

    def on_test_start(self, *args: Any) -> None:
        self._at("test_start")  # training done, the best checkpoint about to be tested

    def on_test_batch_end(self, *args: Any) -> None:
        self._at("test_batch")  # during the test: a batch scored, the metrics not yet logged

    def on_test_end(self, *args: Any) -> None:
        # During artifact logging: ecgx's callbacks before this one have logged the test
        # predictions and ROC plot; the checkpoint, cost and explanation are still to come.
        self._at("artifacts")
