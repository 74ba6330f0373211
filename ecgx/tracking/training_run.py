"""The MLflow side of one ``ecgx train`` job: skip a config that already finished, open (or
resume) its run, record what it trained on, and close it FINISHED or FAILED."""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from ecgx.errors import TrackingError
from ecgx.tracking.mlflow_run import (
    check_tracking_uri,
    config_hash,
    finished_run,
    log_config,
    log_file,
)
from ecgx.training.resume import ResumePoint

log = logging.getLogger(__name__)


def hydra_context() -> dict[str, Any]:
    """Group choices, command-line overrides and the sweep id of the running Hydra job."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return {"choices": {}, "overrides": [], "sweep_id": None}
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    return {
        "choices": {k: str(v) for k, v in hc.runtime.choices.items() if v is not None},
        "overrides": list(hc.overrides.task),
        # Every job of one multirun shares its sweep folder, and so this id.
        "sweep_id": Path(hc.sweep.dir).name if multirun else None,
    }


@dataclass
class TrackedRun:
    """One training job's MLflow run (``logger`` is None with ``logger=none``) and resume point."""

    cfg: DictConfig
    resume: ResumePoint | None = None
    logger: Any = None  # Lightning's MLFlowLogger
    done: dict[str, float] | None = None  # the metrics of a FINISHED run of the same config

    @classmethod
    def open(cls, cfg: DictConfig, extra_tags: dict[str, str] | None = None) -> TrackedRun:
        """A multirun job (or any run with ``skip_finished=true``) whose config already
        FINISHED is not trained again, unless ``force=true``: rerunning an interrupted sweep
        runs only what is missing, and continues a killed job's run from its last checkpoint.
        Otherwise a new MLflow run, or with ``resume=true`` the crashed one (its params are
        already logged: MLflow params are write-once)."""
        from ecgx.training.preflight import enabled

        key = config_hash(cfg)
        if not enabled(cfg.get("logger")):
            return cls(cfg, ResumePoint.find(cfg, key, tracking=False))
        ctx = hydra_context()
        skip = ctx["sweep_id"] is not None or cfg.get("skip_finished", False)
        skip = skip and not cfg.get("force")
        done = finished_run(cfg.tracking_uri, cfg.experiment_name, key) if skip else None
        if done is not None:
            print(f"skipping: config already finished in run {done.info.run_id}")
            return cls(cfg, done=dict(done.data.metrics))
        run_name = cfg.logger.get("run_name") or f"{ctx['choices'].get('model', 'run')}-s{cfg.seed}"
        # A rerun that skips finished configs continues the killed ones by itself.
        resume = ResumePoint.find(cfg, key, tracking=True, auto=skip)
        _create_experiment(cfg.tracking_uri, cfg.experiment_name)
        logger = instantiate(cfg.logger, run_name=run_name, **resume.logger_kwargs())
        resume.started(logger)
        if not resume.run_id:
            log_config(logger.experiment, logger.run_id, cfg, ctx["choices"], ctx["overrides"],
                       ctx["sweep_id"])  # fmt: skip
            for tag, value in (extra_tags or {}).items():
                logger.experiment.set_tag(logger.run_id, tag, value)
        return cls(cfg, resume, logger)

    @property
    def resumed(self) -> bool:
        return self.resume is not None and self.resume.ckpt_path is not None

    @property
    def client(self) -> Any:
        return self.logger.experiment if self.logger is not None else None

    @property
    def run_id(self) -> str | None:
        return self.logger.run_id if self.logger is not None else None

    @contextmanager
    def recording(self) -> Iterator[None]:
        """FINISHED when the body returns, FAILED when it raises (even ``KeyboardInterrupt``)."""
        try:
            yield
        except BaseException as err:
            if self.logger is not None:
                self._server_lost(err)
                self.client.set_terminated(self.run_id, "FAILED")
            raise
        finally:
            if self.resume is not None:
                self.resume.release()  # the next job of a multirun process may reuse it
        if self.logger is not None:
            self.client.set_terminated(self.run_id, "FINISHED")
            print(f"\nMLflow run {self.run_id} in experiment '{self.cfg.experiment_name}'.")
            artifacts = self.client.get_run(self.run_id).info.artifact_uri
            if self.client.list_artifacts(self.run_id, "plots"):
                print(f"Plots: {artifacts.removeprefix('file://')}/plots")
            print(f"Open the MLflow UI:  mlflow ui --backend-store-uri {self.cfg.tracking_uri}")

    def _server_lost(self, err: BaseException) -> None:
        """When a remote tracking server went away during the run, say so and how to go on.

        The checkpoints are local (``resume.folder``), so nothing trained is lost: once the
        server answers again, the same command with ``resume=true`` continues into the same
        MLflow run.
        """
        uri = str(self.cfg.tracking_uri)
        if not uri.startswith(("http://", "https://")):
            return
        try:
            check_tracking_uri(uri, timeout=3.0)
        except TrackingError:
            folder = self.resume.folder if self.resume else "the checkpoint folder"
            raise TrackingError(
                f"tracking_uri={uri}: the MLflow server stopped answering during the run "
                f"({type(err).__name__}). The checkpoints are kept in {folder}; when the "
                f"server is back, rerun the same command with resume=true to continue and log "
                f"into the same MLflow run."
            ) from err

    def has_param(self, key: str) -> bool:
        """Whether the run logged ``key`` already (MLflow params are write-once; a resumed run
        logs what its killed start did not get to)."""
        if self.logger is None:
            return False
        return key in self.client.get_run(self.run_id).data.params

    def log_params(self, params: dict[str, Any]) -> None:
        if self.logger is not None:
            self.logger.log_hyperparams(params)

    def log_data(self, datamodule: Any) -> None:
        """Split sizes and classes as params; which record went where (``data/splits.csv``)
        and the records skipped as unreadable (``data/skipped_records.json``) as files."""
        if self.logger is None:
            return
        sizes: dict[str, Any] = {f"data/n_{k}": len(v) for k, v in datamodule.indices.items()}
        sizes["data/n_unlabelled_dropped"] = datamodule.dropped_unlabelled
        sizes["data/n_skipped"] = len(datamodule.cache.skipped)
        sizes["data/classes"] = ",".join(datamodule.class_names)
        if "train" in getattr(datamodule, "partners", {}):  # data.pairs=patient
            sizes["data/n_train_with_partner"] = datamodule.partners["train"].n_with_partner
        for field, count in datamodule.extras_missing.items():  # the model's extra inputs
            sizes[f"data/n_missing_{field}"] = count
        from ecgx.tracking.lineage import data_version, log_dataset

        # Before data/n_train, which marks this step done for a resumed run.
        log_dataset(self.client, self.run_id, data_version(datamodule))  # what it trained on
        self.logger.log_hyperparams(sizes)
        with tempfile.TemporaryDirectory() as tmp:
            splits = Path(tmp) / "splits.csv"
            datamodule.split_table().to_csv(splits, index=False)
            log_file(self.client, self.run_id, splits, "data")
            if datamodule.cache.skipped:
                skipped = Path(tmp) / "skipped_records.json"
                skipped.write_text(json.dumps(datamodule.cache.skipped, indent=1))
                log_file(self.client, self.run_id, skipped, "data")

    def log_file(self, path: str | Path, folder: str) -> None:
        if self.logger is not None and path:
            log_file(self.client, self.run_id, path, folder)


# MLflow 3's UI opens an experiment in its GenAI view (traces, "Evaluation runs") unless the
# experiment says what it is; this tag value is the one its UI reads as model training.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


def _create_experiment(tracking_uri: str, name: str) -> None:
    """Create the MLflow experiment before Lightning's logger looks for it, which would warn
    that it is missing on every first run of a project."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        with contextlib.suppress(MlflowException):  # a parallel sweep job created it first
            client.create_experiment(name, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
    elif EXPERIMENT_KIND_TAG not in experiment.tags:  # made before ecgx tagged experiments
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
