"""What one training run writes to MLflow besides Lightning's per-epoch metrics."""

from __future__ import annotations

import hashlib
import json
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ecgx.errors import MissingPathError, TrackingError

SWEEP_TAG = "ecgx.sweep_id"
OVERRIDES_TAG = "ecgx.overrides"
CONFIG_HASH_TAG = "ecgx.config_hash"
CHOICE_PREFIX = "choice/"


def check_tracking_uri(uri: str, timeout: float = 5.0) -> None:
    """Fail in seconds, before any data is read, when a tracking server cannot be reached."""
    if not uri.startswith(("http://", "https://")):
        if uri.startswith("sqlite:///"):
            db = Path(uri.removeprefix("sqlite:///"))
            if not db.parent.is_dir():
                raise MissingPathError(f"tracking_uri={uri}: folder {db.parent} does not exist")
            _create_sqlite_store(uri, db)
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as response:
            if response.status != 200:
                raise TrackingError(f"tracking_uri={uri}: /health answered {response.status}")
    except (urllib.error.URLError, OSError) as err:
        raise TrackingError(
            f"tracking_uri={uri}: MLflow tracking server unreachable ({err}). Start it, or set "
            "MLFLOW_TRACKING_URI / tracking_uri to a reachable server or sqlite:///path.db"
        ) from err


def _create_sqlite_store(uri: str, db: Path) -> None:
    """Create a new SQLite store's tables once, under a file lock: parallel sweep jobs that
    all find no store would otherwise each run MLflow's migrations and collide ("table
    experiments already exists")."""
    if db.exists() and db.stat().st_size > 0:
        return
    from filelock import FileLock
    from mlflow.tracking import MlflowClient

    with FileLock(str(db) + ".lock"):
        MlflowClient(uri).search_experiments(max_results=1)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}, "c": [x, y]}`` -> ``{"a.b": 1, "c.0": x, "c.1": y}``."""
    out: dict[str, Any] = {}
    items = tree.items() if isinstance(tree, dict) else enumerate(tree)
    for key, value in items:
        name = f"{prefix}{key}"
        if isinstance(value, dict | list) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


# Keys that differ between two launches of the same job: never part of its identity.
HASH_EXCLUDED = (
    "paths",
    "hydra",
    "tracking_uri",
    "force",
    "resume",
    "skip_finished",
    "log_model",
    "register",
    "register_alias",
)  # what is logged, not trained


def config_hash(cfg: DictConfig) -> str:
    """Identity of a composed config (resolved; paths, tracking and ``force`` excluded).

    Every ``paths.*`` value is replaced by a placeholder before resolving, so keys that merely
    point into a run's own folders (the checkpoint dirpath under ``paths.output_dir``, a
    timestamped Hydra run dir) hash the same for two launches of one job.
    """
    raw = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(raw, dict)
    raw.pop("hydra", None)
    if isinstance(raw.get("paths"), dict):
        raw["paths"] = {k: f"<paths.{k}>" for k in raw["paths"]}
    tree = OmegaConf.to_container(OmegaConf.create(raw), resolve=True)
    assert isinstance(tree, dict)
    for key in HASH_EXCLUDED:
        tree.pop(key, None)
    # The logger node repeats where runs are recorded (its resolved ${tracking_uri}): two
    # spellings of one store must not make two identities.
    if isinstance(tree.get("logger"), dict):
        tree["logger"].pop("tracking_uri", None)
    blob = json.dumps(tree, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def finished_run(tracking_uri: str, experiment_name: str, config_hash: str) -> Any | None:
    """The latest FINISHED MLflow run of ``experiment_name`` tagged with ``config_hash``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return None
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`{CONFIG_HASH_TAG}` = '{config_hash}' "
        "and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None


def log_config(
    client: Any,
    run_id: str,
    cfg: DictConfig,
    choices: dict[str, str],
    overrides: list[str],
    sweep_id: str | None,
) -> None:
    """The composed config as params and as ``config.yaml``; choices and overrides as tags."""
    from mlflow.entities import Param, RunTag

    tree = OmegaConf.to_container(cfg, resolve=True)
    params = {k: v for k, v in flatten(tree).items() if not k.startswith("paths.")}
    params.update(
        {f"{CHOICE_PREFIX}{g}": c for g, c in choices.items() if not g.startswith("hydra")}
    )
    entries = [Param(k, str(v)[:6000]) for k, v in params.items()]
    for start in range(0, len(entries), 100):  # MLflow's log_batch takes 100 params at a time
        client.log_batch(run_id, params=entries[start : start + 100])
    tags = {
        OVERRIDES_TAG: json.dumps(overrides),
        CONFIG_HASH_TAG: config_hash(cfg),
    }
    if sweep_id:
        tags[SWEEP_TAG] = sweep_id
    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(OmegaConf.to_yaml(cfg, resolve=True))
        client.log_artifact(run_id, str(path))


def log_file(client: Any, run_id: str, path: str | Path, folder: str | None = None) -> None:
    client.log_artifact(run_id, str(path), folder)
