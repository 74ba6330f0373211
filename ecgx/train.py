"""``ecgx train``: compose -> instantiate -> fit -> test the best checkpoint -> log to MLflow."""

from __future__ import annotations

import json
import logging
import re
import tempfile
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ecgx.errors import ConfigValueError, MissingPathError, TrackingError
from ecgx.metrics import bootstrap_intervals, evaluate_split, tune_thresholds
from ecgx.models.classical import FeatureClassifier
from ecgx.module import HEADLINE, load_pretrained
from ecgx.reliability import ResumePoint, check_writable_paths
from ecgx.tracking.callbacks import log_test_predictions
from ecgx.tracking.mlflow_run import (
    check_tracking_uri,
    config_hash,
    finished_run,
    log_config,
    log_file,
)

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


def resolve_checkpoint(ref: str, tracking_uri: str) -> Path:
    """A checkpoint file, or the best checkpoint logged by an MLflow run (its run id)."""
    if Path(ref).expanduser().is_file():
        return Path(ref).expanduser()
    if re.fullmatch(r"[0-9a-f]{32}", ref):
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri)
        files = [
            a.path for a in client.list_artifacts(ref, "checkpoints") if a.path.endswith(".ckpt")
        ]
        if files:
            return Path(client.download_artifacts(ref, files[0], tempfile.mkdtemp()))
        raise MissingPathError(f"init_from={ref}: MLflow run has no checkpoints/*.ckpt")
    raise MissingPathError(f"init_from={ref}: neither a checkpoint file nor an MLflow run id")


def _enabled(node: Any) -> bool:
    return node is not None and "_target_" in node


_LOCAL_LAUNCHERS = ("basic_launcher", "joblib_launcher")


def refuse_ddp_in_local_multirun(cfg: DictConfig, hydra_cfg: Any = None) -> None:
    """A multirun on the basic/joblib launcher cannot host a multi-process strategy: plain ddp
    re-launches the command per rank (extra folders and runs) and ddp/ddp_spawn jobs hang or get
    killed between jobs (lightning-hydra-template #393, #194). Refuse it before any work."""
    from hydra.types import RunMode

    if hydra_cfg is None:
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return
        hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return
    launcher = str(hydra_cfg.launcher.get("_target_", ""))
    if not any(name in launcher for name in _LOCAL_LAUNCHERS):
        return
    trainer = cfg.get("trainer") or {}
    strategy = str(trainer.get("strategy", "auto")).lower()
    devices = trainer.get("devices", 1)
    if isinstance(devices, str) or not hasattr(devices, "__len__"):
        n = int(devices) if str(devices).lstrip("-").isdigit() else 1  # "auto": unknown
    else:
        n = len(devices)  # a list of device indices
    many = n > 1 or n == -1 or int(trainer.get("num_nodes") or 1) > 1
    multi_process = strategy == "auto" or any(k in strategy for k in ("ddp", "fsdp", "deepspeed"))
    if ("ddp" in strategy and "spawn" in strategy) or (many and multi_process):
        raise ConfigValueError(
            f"trainer.strategy={strategy} with trainer.devices={devices} cannot run inside a "
            f"multirun on the {launcher.rsplit('.', 1)[-1]} (processes hang or duplicate runs): "
            "use launcher=submitit_local or launcher=slurm for the sweep, or run a single job "
            "(no -m)"
        )


def check_required(cfg: DictConfig) -> None:
    """Keys an experiment file lists under ``required`` must be set (not null).

    A file cannot make a key mandatory with ``???``: OmegaConf keeps train.yaml's ``null`` when
    a missing value is merged over it, so a fine-tune would silently start from random weights.
    """
    unset = [str(k) for k in cfg.get("required") or [] if OmegaConf.select(cfg, str(k)) is None]
    if unset:
        raise ConfigValueError(
            f"{', '.join(unset)}: this experiment requires a value; give it on the command line "
            f"({' '.join(f'{k}=...' for k in unset)})"
        )


def train(
    cfg: DictConfig,
    extra_callbacks: list[Any] | None = None,
    extra_tags: dict[str, str] | None = None,
) -> dict[str, float]:
    """Run one experiment from a composed config; returns the final metrics.

    In a multirun (or with ``skip_finished=true``), a config whose MLflow run already FINISHED
    (same ``ecgx.config_hash``) is not run again: its metrics are returned, unless
    ``force=true``. ``extra_callbacks`` join the configured
    Lightning callbacks and ``extra_tags`` the run's tags (``ecgx search`` passes its pruning
    callback and study/trial tags).
    """
    refuse_ddp_in_local_multirun(cfg)
    check_required(cfg)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    ctx = hydra_context()
    check_writable_paths(cfg)

    # Tracking first: an unreachable server is reported before any data is read.
    logger = None
    if _enabled(cfg.get("logger")):
        check_tracking_uri(cfg.tracking_uri)
        done = None
        # A multirun job (or any run with skip_finished=true) whose config already FINISHED
        # is not trained again: rerunning an interrupted sweep runs only what is missing.
        skip = ctx["sweep_id"] is not None or cfg.get("skip_finished", False)
        if skip and not cfg.get("force"):
            done = finished_run(cfg.tracking_uri, cfg.experiment_name, config_hash(cfg))
        if done is not None:
            log.info("skipping: config already finished in run %s", done.info.run_id)
            print(f"skipping: config already finished in run {done.info.run_id}")
            return dict(done.data.metrics)
        run_name = cfg.logger.get("run_name") or f"{ctx['choices'].get('model', 'run')}-s{cfg.seed}"
        resume = ResumePoint.find(cfg, config_hash(cfg), tracking=True)
        logger = instantiate(cfg.logger, run_name=run_name, **resume.logger_kwargs())
        resume.started(logger)
    else:
        resume = ResumePoint.find(cfg, config_hash(cfg), tracking=False)
    if logger is not None and not resume.run_id:  # a resumed run has its params already
        log_config(logger.experiment, logger.run_id, cfg, ctx["choices"], ctx["overrides"],
                   ctx["sweep_id"])  # fmt: skip
        for key, value in (extra_tags or {}).items():
            logger.experiment.set_tag(logger.run_id, key, value)

    try:
        metrics = _fit_and_test(cfg, logger, extra_callbacks, resume)
    except BaseException as err:
        if logger is not None:
            _server_lost(cfg, resume, err)
            logger.experiment.set_terminated(logger.run_id, "FAILED")
        raise
    if logger is not None:
        logger.experiment.set_terminated(logger.run_id, "FINISHED")
        print(f"\nMLflow run {logger.run_id} in experiment '{cfg.experiment_name}'.")
        print(f"Open the MLflow UI:  mlflow ui --backend-store-uri {cfg.tracking_uri}")
    return metrics


def _server_lost(cfg: DictConfig, resume: ResumePoint, err: BaseException) -> None:
    """When a remote tracking server went away during the run, say so and how to go on.

    The checkpoints are local (``resume.folder``), so nothing trained is lost: once the server
    answers again, the same command with ``resume=true`` continues into the same MLflow run.
    """
    uri = str(cfg.tracking_uri)
    if not uri.startswith(("http://", "https://")):
        return
    try:
        check_tracking_uri(uri, timeout=3.0)
    except TrackingError:
        raise TrackingError(
            f"tracking_uri={uri}: the MLflow server stopped answering during the run "
            f"({type(err).__name__}). The checkpoints are kept in {resume.folder}; when the "
            f"server is back, rerun the same command with resume=true to continue and log "
            f"into the same MLflow run."
        ) from err


def _fit_and_test(
    cfg: DictConfig,
    logger: Any,
    extra_callbacks: list[Any] | None = None,
    resume: ResumePoint | None = None,
) -> dict[str, float]:
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    net = instantiate(cfg.model, in_channels=datamodule.num_leads,
                      num_classes=datamodule.num_classes)  # fmt: skip
    if isinstance(net, FeatureClassifier):
        return _fit_and_test_classical(cfg, net, datamodule, logger)
    resumed = resume is not None and resume.ckpt_path is not None
    if cfg.get("init_from"):
        fresh = load_pretrained(net, resolve_checkpoint(str(cfg.init_from), cfg.tracking_uri))
        log.info("initialised from %s; left as initialised: %s", cfg.init_from, fresh)
    module = instantiate(cfg.module, net=net, class_names=datamodule.class_names)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if _enabled(c)]
    callbacks += list(extra_callbacks or [])
    if resume is not None:
        resume.prepare(callbacks)
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=logger or False)

    if logger is not None and not resumed:
        _log_data(logger, datamodule)
    ckpt_path = resume.ckpt_path if resumed else cfg.get("ckpt_path")
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}

    if cfg.get("test", True):
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if not best:
            log.warning("no best checkpoint: testing the last weights")
        results = trainer.test(module, datamodule=datamodule, ckpt_path=best or None,
                               weights_only=True)  # fmt: skip
        metrics.update({k: float(v) for k, v in results[0].items()})
        if logger is not None:
            _log_checkpoint(logger, best)
    if logger is not None and not resumed:  # timings differ: MLflow params are write-once
        # After training, not before: measuring FLOPs and inference time costs seconds that
        # would otherwise delay the first training step (the teardown has put the net back
        # on the device it started on).
        logger.log_hyperparams(model_cost(net, datamodule))
    explainer = cfg.get("explainer") or {}
    if (explainer.get("method") or explainer.get("concepts")) and trainer.is_global_zero:
        # After trainer.test the module holds the best checkpoint's weights (ckpt_path=best).
        from ecgx.explain.run import explain_and_log

        datamodule.setup("test")
        net = getattr(module.net, "_orig_mod", module.net)  # the eager model under torch.compile
        client, run_id = (logger.experiment, logger.run_id) if logger else (None, None)
        explanation = explain_and_log(cfg.explainer, net, datamodule, module.task, client, run_id,
                                      seed=cfg.get("seed") or 0)  # fmt: skip
        metrics.update({f"explain/{explanation.name}/{k}": v
                        for k, v in explanation.metrics.items()})  # fmt: skip
    _print_metrics(metrics, "Test metrics (best checkpoint):")
    return metrics


def _fit_and_test_classical(
    cfg: DictConfig, model: FeatureClassifier, datamodule: Any, logger: Any
) -> dict[str, float]:
    """The seed's classical baselines: features of every split, fit on train, score val/test.

    No Lightning here (scikit-learn fits in one call), but the run records the same things as a
    neural one: params, data splits, ``val/`` and ``test/`` metrics, test predictions, and the
    fitted estimator (a pickle: load it only from runs you trust).
    """
    import pickle

    if cfg.get("init_from") or cfg.get("ckpt_path"):
        raise ConfigValueError("init_from / ckpt_path do not apply to the classical baselines")
    task, cache, names = cfg.module.task, datamodule.cache, datamodule.class_names
    feats = {s: model.features(cache[int(j)] for j in idx) for s, idx in datamodule.indices.items()}
    truth = {s: datamodule.targets[idx] for s, idx in datamodule.indices.items()}
    log.info("expert features: %s per record", feats["train"].shape[1])
    model.fit(feats["train"], truth["train"], task)
    metrics: dict[str, float] = {}
    probs = {}
    stages = ("val", "test") if cfg.get("test", True) else ("val",)
    for stage in stages:
        probs[stage] = model.predict_proba(feats[stage], task)
    # The seed's protocol (B5): per-class thresholds tuned on validation, applied to test.
    thresholds = tune_thresholds(truth["val"], probs["val"]) if task == "multilabel" else None
    edition = cfg.module.get("challenge_edition")
    for stage in stages:
        args = (task, probs[stage], truth[stage], names)
        values = evaluate_split(*args, thresholds=thresholds if stage == "test" else None,
                                challenge_edition=edition)  # fmt: skip
        if stage == "test" and cfg.module.get("bootstrap_resamples", 0) > 0:
            values.update(
                bootstrap_intervals(
                    *args,
                    n_resamples=cfg.module.bootstrap_resamples,
                    thresholds=thresholds,
                    challenge_edition=edition,
                )
            )
        metrics.update({f"{stage}/{k}": v for k, v in values.items()})
    if logger is not None:
        _log_data(logger, datamodule)
        logger.log_metrics(metrics)
        client, run_id = logger.experiment, logger.run_id
        if "test" in probs:
            ids = cache.meta["record_id"].iloc[datamodule.indices["test"]].to_numpy()
            aurocs = {k.removeprefix("test/auroc_"): v for k, v in metrics.items()
                      if k.startswith("test/auroc_")}  # fmt: skip
            log_test_predictions(client, run_id, probs["test"], truth["test"], ids, names, task,
                                 aurocs)  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "estimator.pkl"
            path.write_bytes(pickle.dumps(model))
            log_file(client, run_id, path, "model")
            # No FLOPs or timing for scikit-learn models: their size is what compare can show.
            logger.log_hyperparams({"cost/checkpoint_mb": path.stat().st_size / 2**20})
    log.info("val/%s = %.4f", HEADLINE[task], metrics[f"val/{HEADLINE[task]}"])
    _print_metrics(metrics, "Test metrics (fitted estimator):")
    return metrics


def model_cost(
    net: Any, datamodule: Any, batch_size: int = 32, budget_s: float = 2.0
) -> dict[str, Any]:
    """The ``cost/*`` params ``ecgx compare`` shows beside the metrics: trainable parameters,
    forward FLOPs of one record (torch's counter, 2 per multiply-add), the size of the
    state dict's tensors, and inference time per record on the net's device (median of 3
    no-grad forwards of a batch, after a warm-up).

    The batch is 32 records, fewer for a model too slow to time 32 within ``budget_s``: cost
    is reported, never worth slowing a training run down for. Failures are logged, not raised.
    """
    import statistics
    import time

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ecgx.models.base import count_parameters

    # The tensors' bytes, not a torch.save into memory: the container adds a few KB, and
    # serialising a 600 MB model only to weigh it cost seconds per run.
    state_bytes = sum(t.numel() * t.element_size() for t in net.state_dict().values()
                      if isinstance(t, torch.Tensor))  # fmt: skip
    cost: dict[str, Any] = {
        "cost/parameters": count_parameters(net),
        "cost/checkpoint_mb": round(state_bytes / 2**20, 4),
    }
    was_training = net.training
    try:
        record = datamodule.val_dataloader().dataset[0]["signal"].unsqueeze(0)
        net.eval()
        with torch.no_grad():
            with FlopCounterMode(display=False) as counter:
                net(record)  # also the warm-up: a first call pays one-off setup costs
            start = time.perf_counter()
            net(record)
            one = time.perf_counter() - start
            n = max(1, min(batch_size, int(budget_s / (3 * max(one, 1e-6)))))
            inputs = record.expand(n, *record.shape[1:]).contiguous()
            times = []
            for _ in range(3):
                start = time.perf_counter()
                net(inputs)
                times.append(time.perf_counter() - start)
        cost["cost/flops_per_sample"] = int(counter.get_total_flops())
        cost["cost/inference_ms_per_record"] = round(1000 * statistics.median(times) / n, 4)
        cost["cost/inference_batch"] = n
        cost["cost/inference_device"] = str(record.device)
    except Exception as err:  # noqa: BLE001 - a cost we cannot measure is left out
        log.warning("model cost: FLOPs/timing not measured (%s)", err)
    finally:
        net.train(was_training)
    return cost


def _log_data(logger: Any, datamodule: Any) -> None:
    client, run_id = logger.experiment, logger.run_id
    sizes = {f"data/n_{k}": len(v) for k, v in datamodule.indices.items()}
    sizes["data/n_unlabelled_dropped"] = datamodule.dropped_unlabelled
    sizes["data/n_skipped"] = len(datamodule.cache.skipped)
    sizes["data/classes"] = ",".join(datamodule.class_names)
    logger.log_hyperparams(sizes)
    with tempfile.TemporaryDirectory() as tmp:
        splits = Path(tmp) / "splits.csv"
        datamodule.split_table().to_csv(splits, index=False)
        log_file(client, run_id, splits, "data")
        if datamodule.cache.skipped:
            skipped = Path(tmp) / "skipped_records.json"
            skipped.write_text(json.dumps(datamodule.cache.skipped, indent=1))
            log_file(client, run_id, skipped, "data")


def _log_checkpoint(logger: Any, best: str) -> None:
    if best:
        log_file(logger.experiment, logger.run_id, best, "checkpoints")


def _print_metrics(metrics: dict[str, float], heading: str) -> None:
    rows = sorted((k, v) for k, v in metrics.items() if k.startswith("test/"))
    if not rows:
        return
    width = max(len(k) for k, _ in rows)
    print(f"\n{heading}")
    for k, v in rows:
        print(f"  {k:<{width}}  {v:.4f}")
