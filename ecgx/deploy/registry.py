"""The MLflow model registry: a run's logged model as a version of a registered model, with an
alias (``champion``) that ``ecgx predict model=models:/<name>@<alias>`` follows."""

from __future__ import annotations

import logging
import re
from typing import Any

from ecgx.errors import ConfigValueError, MissingPathError

log = logging.getLogger(__name__)

REGISTERED_TAG = "ecgx.registered_model"  # on the run: "<name>/<version>[@alias]"
# MLflow's own rule for alias names (letters, digits, _ and -; not "latest" nor v<digits>).
ALIAS = re.compile(r"^(?!latest$)(?!v\d+$)[\w-]+$")


def register(tracking_uri: str, run_id: str, name: str, alias: str | None = None) -> Any:
    """Register ``runs:/<run_id>/model`` as a new version of ``name`` (created if new) and point
    ``alias`` at it; the version (an MLflow ``ModelVersion``)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from ecgx.deploy.pyfunc import ARTIFACT_PATH

    if not name:
        raise ConfigValueError("register: a registered model name is needed (name=<name>)")
    if alias and not ALIAS.match(alias):
        raise ConfigValueError(f"alias={alias!r}: letters, digits, _ and - only, not 'latest' "
                               "nor v<number>")  # fmt: skip
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    try:
        run = client.get_run(run_id)
    except MlflowException as err:
        raise MissingPathError(f"run_id={run_id}: no such MLflow run") from err
    if not any(a.path == ARTIFACT_PATH for a in client.list_artifacts(run_id)):
        raise MissingPathError(
            f"run_id={run_id}: logged no model ({ARTIFACT_PATH}/); train with log_model=true"
        )
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="ecgx ECG classifier")
    source = f"{run.info.artifact_uri.rstrip('/')}/{ARTIFACT_PATH}"
    version = client.create_model_version(name, source, run_id=run_id)
    if alias:
        client.set_registered_model_alias(name, alias, version.version)
    label = f"{name}/{version.version}" + (f"@{alias}" if alias else "")
    client.set_tag(run_id, REGISTERED_TAG, label)
    print(f"Registered runs:/{run_id}/{ARTIFACT_PATH} as models:/{name}/{version.version}"
          + (f" (models:/{name}@{alias})" if alias else ""))  # fmt: skip
    return version


def register_run(cfg: Any) -> Any:
    """``ecgx register run_id=<id> name=<name> [alias=champion]`` (conf/register.yaml)."""
    if not cfg.get("run_id"):
        raise ConfigValueError("ecgx register needs run_id=<MLflow run of ecgx train>")
    from ecgx.tracking.mlflow_run import check_tracking_uri

    check_tracking_uri(cfg.tracking_uri)
    return register(cfg.tracking_uri, str(cfg.run_id), str(cfg.get("name") or ""),
                    cfg.get("alias") or None)  # fmt: skip
