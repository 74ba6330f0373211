"""What lets a training job survive a crash: checkpoints in a
folder a rerun finds (``<paths.log_dir>/checkpoints/<config hash>``), the MLflow run id kept
beside them, and the random generators' state inside every checkpoint.

``ecgx train ... resume=true`` after a crash (even ``kill -9``) continues from ``last.ckpt``
into the same MLflow run and ends with the metrics an uninterrupted run would have had.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig

from ecgx.errors import ConfigValueError

log = logging.getLogger(__name__)

# Beside the checkpoint folder, not in it: Lightning warns about a checkpoint folder that is not
# empty when a run starts, and a fresh run's folder should be empty.
RUN_ID_SUFFIX = ".mlflow_run_id"
# Written when fit returns, holding the best checkpoint's path: a job killed after training
# resumes with the test alone (another epoch could move the best checkpoint).
FIT_DONE_SUFFIX = ".fit_done"
LAST = "last.ckpt"


class RandomState(L.Callback):
    """Keeps torch's, NumPy's and Python's random state in every checkpoint and restores it
    when a fit resumes (not when a checkpoint is only tested), so the shuffles and
    augmentations of the next epochs are those of an uninterrupted run. Lightning's sanity
    check runs under ``isolate_rng``, so it does not shift them. Plain lists and a tensor:
    checkpoints still load with ``weights_only``."""

    def state_dict(self) -> dict[str, Any]:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        return {
            "torch": torch.get_rng_state(),
            "numpy": [kind, keys.tolist(), pos, has_gauss, gauss],
            "python": random.getstate(),
        }

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        from lightning.pytorch.trainer.states import TrainerFn

        state = (checkpoint.get("callbacks") or {}).get(self.state_key)
        if state is None or trainer.state.fn != TrainerFn.FITTING:
            return
        torch.set_rng_state(state["torch"])
        kind, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
        version, internal, gauss_next = state["python"]
        random.setstate((version, tuple(internal), gauss_next))


@dataclass
class ResumePoint:
    """The stable checkpoint folder of a config and, with ``resume=true``, what to resume."""

    folder: Path
    ckpt_path: str | None = None  # last.ckpt to continue from
    run_id: str | None = None  # the MLflow run to continue
    fit_done: bool = False  # training had finished: only test (``best_path``) is left
    best_path: str = ""
    lock: Any = None  # held while this job owns the folder

    @classmethod
    def find(cls, cfg: DictConfig, key: str, tracking: bool, auto: bool = False) -> ResumePoint:
        """``key``: the config hash. ``auto``: continue a killed run of this config without
        ``resume=true`` (a rerun of an interrupted sweep, ``skip_finished=true``). Without a
        resumable checkpoint the folder is emptied, so a fresh run never picks up another run's
        checkpoints, and a run its killed job left RUNNING is marked KILLED."""
        folder = Path(str(cfg.paths.log_dir)).expanduser() / "checkpoints" / key
        point = cls(folder)
        point.lock = _own(folder, point.id_file)
        last, id_file = folder / LAST, point.id_file
        run_id = id_file.read_text().strip() if id_file.is_file() else None
        status = _run_status(cfg.tracking_uri, run_id) if tracking and run_id else None
        if cfg.get("resume") or (auto and status == "RUNNING"):
            if not last.is_file():
                log.warning("resume: no %s in %s, starting from scratch", LAST, folder)
            elif tracking and status in (None, "FINISHED"):
                log.warning("resume=true: MLflow run %s is %s, starting from scratch", run_id,
                            status or "absent")  # fmt: skip
            else:
                point.ckpt_path, point.run_id = str(last), run_id if tracking else None
                if point.fit_file.is_file():
                    point.fit_done, point.best_path = True, point.fit_file.read_text().strip()
                log.info("resuming from %s (MLflow run %s)", last, point.run_id)
                print(f"resuming from {last} (MLflow run {point.run_id})")
                return point
        if status == "RUNNING" and point.lock is not None:
            # This job holds the folder's lock, so the one that left the run RUNNING is dead
            # (killed before its first checkpoint, or rerun without resume): the new run
            # replaces it, and a RUNNING ghost would never end. (DDP ranks > 0 hold no lock:
            # the RUNNING run is their rank 0's.)
            _set_status(cfg.tracking_uri, run_id, "KILLED")
            log.warning("MLflow run %s, left RUNNING by a killed job, marked KILLED", run_id)
        if folder.exists():
            shutil.rmtree(folder)
        point.fit_file.unlink(missing_ok=True)
        folder.mkdir(parents=True)
        return point

    @property
    def id_file(self) -> Path:
        return self.folder.with_name(self.folder.name + RUN_ID_SUFFIX)

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    @property
    def fit_file(self) -> Path:
        return self.folder.with_name(self.folder.name + FIT_DONE_SUFFIX)

    def mark_fit_done(self, best_path: str) -> None:
        self.fit_file.write_text(best_path)
        self.fit_done, self.best_path = True, best_path

    def logger_kwargs(self) -> dict[str, Any]:
        return {"run_id": self.run_id} if self.run_id else {}

    def started(self, logger: Any) -> None:
        """Remember the run id beside the checkpoints; a resumed run is RUNNING again."""
        if self.run_id:
            logger.experiment.update_run(self.run_id, status="RUNNING")
        self.id_file.write_text(logger.run_id)

    def prepare(self, callbacks: list[Any]) -> None:
        """Checkpoints without a dirpath go to the stable folder; every checkpoint carries the
        random state."""
        from lightning.pytorch.callbacks import ModelCheckpoint

        for callback in callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.dirpath is None:
                callback.dirpath = str(self.folder)
        callbacks.append(RandomState())


def _own(folder: Path, id_file: Path) -> Any:
    """The folder's lock, or an error naming the job that holds it: two identical jobs would
    share one checkpoint folder, and the later one's fresh start would empty it under the
    other. The lock dies with its process, so a killed job never blocks its resume. Ranks a
    DDP launch re-runs (``LOCAL_RANK`` > 0) belong to the job of rank 0 and take none."""
    from filelock import FileLock, Timeout

    if os.environ.get("LOCAL_RANK", "0") != "0":
        return None
    folder.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder.with_name(folder.name + ".lock")))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        run_id = id_file.read_text().strip() if id_file.is_file() else ""
        raise ConfigValueError(
            f"an identical job is training this config right now{f' (MLflow run {run_id})' if run_id else ''}, "
            f"in {folder}: wait for it to finish (then skip_finished=true finds its result), "
            "or change the config (e.g. seed=...)"
        ) from None
    return lock


def _set_status(tracking_uri: str, run_id: str, status: str) -> None:
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri).set_terminated(run_id, status)


def _run_status(tracking_uri: str, run_id: str) -> str | None:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        return MlflowClient(tracking_uri).get_run(run_id).info.status
    except MlflowException:
        return None
