"""``ecgx explain``: rebuild a finished run's data and model, explain records, log to the run."""

from __future__ import annotations

import logging

from omegaconf import DictConfig, OmegaConf

from ecgx.explain.run import Explanation, explain_and_log
from ecgx.tracking.runs import load_checkpoint, load_run, output_dir, rebuild

log = logging.getLogger(__name__)


def explain_run(cfg: DictConfig) -> Explanation:
    """Explain records of a finished run with ``cfg.explainer``; log to the run if it has one."""
    run_cfg, ckpt_path = load_run(cfg, "explain")
    if cfg.get("data"):
        run_cfg.data = OmegaConf.merge(run_cfg.data, cfg.data)
    datamodule, net = rebuild(run_cfg, load_checkpoint(ckpt_path))
    client = None
    if cfg.get("run_id"):
        from mlflow.tracking import MlflowClient

        client = MlflowClient(cfg.tracking_uri)
    out_dir = output_dir("explain") / "explain" / str(cfg.explainer.get("name", "explainer"))
    result = explain_and_log(cfg.explainer, net, datamodule, run_cfg.module.task, client,
                             cfg.get("run_id"), seed=int(cfg.seed), out_dir=out_dir)  # fmt: skip
    print(f"\nExplainer {result.name} on {len(result.record_ids)} records; files in {out_dir}")
    for key, value in sorted(result.metrics.items()):
        print(f"  {key:<40} {value:.4f}")
    if client is not None:
        print(f"Logged to MLflow run {cfg.run_id} under explain/{result.name}/")
    return result
