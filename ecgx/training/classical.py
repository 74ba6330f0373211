"""The CPSC seed's classical baselines (B5) through ``ecgx train``: expert features, a
scikit-learn estimator, and the same MLflow record as a neural run."""

from __future__ import annotations

import logging
import pickle
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from ecgx.errors import ConfigValueError
from ecgx.evaluation.metrics import (
    bootstrap_intervals,
    evaluate_split,
    print_metrics,
    tune_thresholds,
)
from ecgx.models.classical import FeatureClassifier
from ecgx.tracking.callbacks import log_test_predictions
from ecgx.tracking.training_run import TrackedRun
from ecgx.training.module import HEADLINE

log = logging.getLogger(__name__)


def fit_and_test_classical(
    cfg: DictConfig, model: FeatureClassifier, datamodule: Any, run: TrackedRun
) -> dict[str, float]:
    """The seed's classical baselines: features of every split, fit on train, score val/test.

    No Lightning here (scikit-learn fits in one call), but the run records the same things as a
    neural one: params, data splits, ``val/`` and ``test/`` metrics, test predictions, and the
    fitted estimator (a pickle: load it only from runs you trust).
    """
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
    if run.logger is not None:
        run.log_data(datamodule)
        run.logger.log_metrics(metrics)
        client, run_id = run.client, run.run_id
        if "test" in probs:
            ids = cache.meta["record_id"].iloc[datamodule.indices["test"]].to_numpy()
            aurocs = {k.removeprefix("test/auroc_"): v for k, v in metrics.items()
                      if k.startswith("test/auroc_")}  # fmt: skip
            log_test_predictions(client, run_id, probs["test"], truth["test"], ids, names, task,
                                 aurocs)  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "estimator.pkl"
            path.write_bytes(pickle.dumps(model))
            run.log_file(path, "model")
            # No FLOPs or timing for scikit-learn models: their size is what compare can show.
            run.log_params({"cost/checkpoint_mb": path.stat().st_size / 2**20})
    log.info("val/%s = %.4f", HEADLINE[task], metrics[f"val/{HEADLINE[task]}"])
    print_metrics(metrics, "Test metrics (fitted estimator):", names)
    return metrics
