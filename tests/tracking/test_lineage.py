"""Data lineage: a dataset's version changes when a record file or its index changes, is kept
with the cache, and a re-test on other data is warned about."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from hydra.utils import instantiate
from mlflow.tracking import MlflowClient

from ecgx.tracking.lineage import (
    DATA_VERSION_TAG,
    DIGEST_PARAM,
    LINEAGE,
    data_version,
    log_dataset,
    warn_if_other_data,
)


def _version(compose_train, root: Path, cache: Path) -> dict:
    cfg = compose_train(f"dataset.root={root}", f"paths.cache_dir={cache}")
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return data_version(datamodule)


def test_data_version_follows_the_records(compose_train, synthetic_root: Path, tmp_path: Path,
                                          caplog) -> None:  # fmt: skip
    root = tmp_path / "set"
    shutil.copytree(synthetic_root, root)
    first = _version(compose_train, root, tmp_path / "cache")
    assert first["reader"] == "ptbxl" and first["n_record_files"] == 600  # .hea + .dat each
    assert sum(first["n_records"].values()) == 300
    kept = json.loads((tmp_path / "cache" / first["cache_key"] / LINEAGE).read_text())
    assert kept["records_digest"] == first["records_digest"]
    assert _version(compose_train, root, tmp_path / "cache") == first  # read back, same

    # One sample of one record file changed (the index re-saved, so the cache is rebuilt).
    dat = sorted(root.rglob("*.dat"))[5]
    data = bytearray(dat.read_bytes())
    data[100] ^= 0xFF
    dat.write_bytes(bytes(data))
    index = root / "ptbxl_database.csv"
    index.write_text(index.read_text())
    second = _version(compose_train, root, tmp_path / "cache")
    assert second["cache_key"] != first["cache_key"]
    assert second["records_digest"] != first["records_digest"]
    assert second["index_digest"] == first["index_digest"] and second["digest"] != first["digest"]

    caplog.set_level(logging.WARNING, "ecgx.tracking.lineage")
    assert not warn_if_other_data(first["digest"], first, "r1")
    assert warn_if_other_data(first["digest"], second, "r1")
    assert f"trained on data version {first['digest'][:12]}" in caplog.text

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.create_run(client.create_experiment("lineage"))
    log_dataset(client, run.info.run_id, second)
    logged = client.get_run(run.info.run_id)
    (entry,) = logged.inputs.dataset_inputs
    assert entry.dataset.name == "ptbxl-superdiagnostic"
    assert json.loads(entry.dataset.profile)["records_digest"] == second["records_digest"]
    assert [t.value for t in entry.tags] == ["training"]
    assert logged.data.params[DIGEST_PARAM] == second["digest"]
    assert logged.data.tags[DATA_VERSION_TAG] == second["digest"][:12]
