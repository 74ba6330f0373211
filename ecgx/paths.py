"""Where ecgx finds its configs and where a run's files go by default."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def project_root() -> Path:
    """The folder holding ``conf/``, ``data/`` and the default ``mlflow.db``.

    ``ECGX_ROOT`` wins; otherwise the checkout this package was installed from (ecgx is
    installed editable by ``make``), otherwise the current directory.
    """
    env = os.environ.get("ECGX_ROOT")
    if env:
        return Path(env).expanduser().resolve()
    checkout = PACKAGE_DIR.parent
    if (checkout / "conf" / "train.yaml").is_file():
        return checkout
    return Path.cwd().resolve()


def config_dir() -> Path:
    conf = project_root() / "conf"
    if not (conf / "train.yaml").is_file():
        raise FileNotFoundError(
            f"ecgx configs not found at {conf}: set ECGX_ROOT to the ecgx checkout "
            "(the folder that holds conf/ and experiments/)"
        )
    return conf
