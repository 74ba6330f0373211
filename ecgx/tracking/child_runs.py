"""Child runs of a logged run: what ``ecgx eval``'s analyses (robustness, subgroups) write back
to MLflow under the run they evaluated."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ecgx.tracking.mlflow_run import CHOICE_PREFIX, OVERRIDES_TAG, log_file

#: MLflow accepts these in metric and param names; anything else in a group value becomes "_"
_NAME_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-. /")


def metric_name(text: str) -> str:
    """``text`` with the characters MLflow refuses in a metric name replaced by ``_``."""
    return "".join(c if c in _NAME_OK else "_" for c in str(text))


def log_child_run(
    tracking_uri: str,
    parent_id: str,
    name: str,
    tags: Mapping[str, str],
    metrics: Mapping[str, float],
    params: Mapping[str, Any] = (),  # type: ignore[assignment]
    files: Iterable[tuple[Path, str]] = (),
    inherit: bool = False,
) -> str:
    """A FINISHED run under ``parent_id`` holding ``metrics``, ``params`` and ``files``
    (path, artifact folder); FAILED if logging breaks half-way.

    ``inherit=True`` copies the parent's group choices (``choice/*`` params) and overrides
    tag, so ``ecgx compare group_by=[model, perturbation]`` groups child runs of several
    trained runs by the parents' settings too.
    """
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    parent = client.get_run(parent_id)
    all_tags = {"mlflow.parentRunId": parent_id, "ecgx.command": "eval", **tags}
    all_params = {k: str(v) for k, v in dict(params).items()}
    if inherit:
        all_params = {**{k: v for k, v in parent.data.params.items()
                         if k.startswith(CHOICE_PREFIX)}, **all_params}  # fmt: skip
        all_tags.setdefault(OVERRIDES_TAG, parent.data.tags.get(OVERRIDES_TAG, json.dumps([])))
    run = client.create_run(parent.info.experiment_id, run_name=name, tags=all_tags)
    run_id = run.info.run_id
    try:
        now = int(time.time() * 1000)
        entries = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
        for start in range(0, len(entries), 500):  # MLflow's batch limit is 1000 metrics
            client.log_batch(run_id, metrics=entries[start : start + 500])
        items = [Param(k, v[:6000]) for k, v in all_params.items()]
        for start in range(0, len(items), 100):  # and 100 params
            client.log_batch(run_id, params=items[start : start + 100])
        for path, folder in files:
            log_file(client, run_id, path, folder)
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_id
