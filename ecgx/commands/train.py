"""``ecgx train``: compose -> instantiate -> fit -> test the best checkpoint -> log to MLflow.

What a run owns lives with its owner: pre-flight checks in :mod:`ecgx.training.preflight`,
skip-if-finished and the MLflow run in :mod:`ecgx.tracking.training_run`, crash resume in
:mod:`ecgx.training.resume`, model cost in :mod:`ecgx.training.cost`, the end-of-training
explanation in :mod:`ecgx.explain.run`.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ecgx.evaluation.metrics import print_metrics
from ecgx.models.classical import FeatureClassifier
from ecgx.tracking.runs import resolve_checkpoint
from ecgx.tracking.training_run import TrackedRun
from ecgx.training.cost import model_cost
from ecgx.training.module import load_pretrained
from ecgx.training.preflight import enabled, preflight

log = logging.getLogger(__name__)


def train(
    cfg: DictConfig,
    extra_callbacks: list[Any] | None = None,
    extra_tags: dict[str, str] | None = None,
) -> dict[str, float]:
    """Run one experiment from a composed config; returns the final metrics.

    ``extra_callbacks`` join the configured Lightning callbacks and ``extra_tags`` the run's
    tags (``ecgx search`` passes its pruning callback and study/trial tags).
    """
    preflight(cfg)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    run = TrackedRun.open(cfg, extra_tags)
    if run.done is not None:
        return run.done

    with run.recording():
        datamodule = instantiate(cfg.data)
        datamodule.prepare_data()
        datamodule.setup("fit")
        net = instantiate(cfg.model, in_channels=datamodule.num_leads,
                          num_classes=datamodule.num_classes)  # fmt: skip
        datamodule.add_extra_inputs(net)  # e.g. SE-ResNet18's demographics
        if isinstance(net, FeatureClassifier):
            from ecgx.training.classical import fit_and_test_classical

            return fit_and_test_classical(cfg, net, datamodule, run)
        if cfg.get("init_from"):
            fresh = load_pretrained(net, resolve_checkpoint(str(cfg.init_from), cfg.tracking_uri))
            log.info("initialised from %s; left as initialised: %s", cfg.init_from, fresh)
        # pretrain=<objective>: its Pretrainer in place of the classifier (conf/pretrain).
        node = cfg.pretrain if enabled(cfg.get("pretrain")) else cfg.module
        module = instantiate(node, net=net, class_names=datamodule.class_names)
        module.example_input_array = datamodule.example_input()  # the summary's FLOPs
        # In every checkpoint: a bare checkpoint rebuilds its run's pipeline (ecgx predict).
        module.run_config = OmegaConf.to_yaml(OmegaConf.to_container(cfg, resolve=True))
        callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if enabled(c)]
        callbacks += list(extra_callbacks or [])
        run.resume.prepare(callbacks)
        trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks,
                                         logger=run.logger or False)  # fmt: skip
        if not run.has_param("data/n_train"):
            run.log_data(datamodule)

        if run.resume.fit_done:  # killed after training: the test is what is left
            best = run.resume.best_path
            log.info("training had finished before the interruption: testing %s", best)
        else:
            ckpt_path = run.resume.ckpt_path if run.resumed else cfg.get("ckpt_path")
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
            checkpoint = trainer.checkpoint_callback
            best = checkpoint.best_model_path if checkpoint else ""
            run.resume.mark_fit_done(best)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}

        if cfg.get("test", True):
            if not best:
                log.warning("no best checkpoint: testing the last weights")
            results = trainer.test(module, datamodule=datamodule, ckpt_path=best or None,
                                   weights_only=True, verbose=False)  # fmt: skip
            metrics.update({k: float(v) for k, v in results[0].items()})
            run.log_file(best, "checkpoints")
        if (
            run.logger is not None
            and best
            and cfg.get("log_model", True)
            and not enabled(cfg.get("pretrain"))  # an encoder, not a classifier to serve
            and trainer.is_global_zero
        ):
            from ecgx.deploy.pyfunc import log_model

            _, seconds = log_model(run.client, run.run_id, best, metrics, datamodule, cfg)
            run.client.log_metric(run.run_id, "cost/log_model_seconds", seconds)
            from ecgx.deploy.registry import REGISTERED_TAG, register

            # A resumed run that registered before it was killed keeps its one version.
            if (
                cfg.get("register")
                and REGISTERED_TAG not in run.client.get_run(run.run_id).data.tags
            ):
                register(cfg.tracking_uri, run.run_id, str(cfg.register),
                         cfg.get("register_alias") or None)  # fmt: skip
        if run.logger is not None and not run.has_param("cost/parameters"):  # write-once
            run.log_params(model_cost(net, datamodule))
        if trainer.is_global_zero:
            from ecgx.explain.run import explain_after_training

            # After trainer.test the module holds the best checkpoint's weights.
            metrics.update(explain_after_training(cfg, module, datamodule, run))
        print_metrics(metrics, "Test metrics (best checkpoint):", datamodule.class_names)
    return metrics
