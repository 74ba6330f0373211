"""Data lineage: a dataset's version changes when a record file or its index changes, is kept
with the cache, and a re-test on other data is warned about. (Its logging as the run's MLflow
dataset input is checked on a trained run: tests/deploy/test_pyfunc.py.)"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from hydra.utils import instantiate

from ecgx.tracking.lineage import LINEAGE, data_version, warn_if_other_data


def _version(compose_train, root: Path, cache: Path) -> dict:
    cfg = compose_train(f"dataset.root={root}", f"paths.cache_dir={cache}")
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return data_version(datamodule)


def test_data_version_follows_the_records(compose_train, tmp_path: Path, caplog) -> None:
    from ecgx.datasets.synthetic import generate_ptbxl_like

    # A set of its own (it is edited below), small: the cache is built twice.
    root = generate_ptbxl_like(tmp_path / "set", n_records=60, seed=1, sampling_rates=[100])
    first = _version(compose_train, root, tmp_path / "cache")
    assert first["reader"] == "ptbxl" and first["n_record_files"] == 120  # .hea + .dat each
    assert sum(first["n_records"].values()) == 60
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
