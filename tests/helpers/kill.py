"""A callback that kills its own process with SIGKILL at a named moment of a run, so tests can
interrupt a real ``ecgx train`` exactly there. Configured the same in the killed run and in its
resume (the config hash must not change); only ``$ECGX_KILL_AT`` arms it."""

from __future__ import annotations

import os
import signal
from typing import Any

import lightning as L

ENV = "ECGX_KILL_AT"


class KillAt(L.Callback):
    def _at(self, moment: str) -> None:
        if os.environ.get(ENV) == moment:
            os.kill(os.getpid(), signal.SIGKILL)

    def on_train_start(self, *args: Any) -> None:
        self._at("train_start")  # before any checkpoint

    def on_test_start(self, *args: Any) -> None:
        self._at("test_start")  # training done, the best checkpoint about to be tested
