"""Which data a run trained on: an MLflow dataset input with content digests.

The digest covers the dataset's index as read (the cache's ``meta.csv``: record ids, labels,
paths, demographics) and the bytes of every record file it names, so a dataset edited in place
(a relabelled record, a replaced signal file) gets another version. Hashing the record files
reads the whole dataset once: the result is kept as ``lineage.json`` in the cache folder, whose
key already changes whenever the reader's index files or listing change.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

LINEAGE = "lineage.json"
DIGEST_PARAM = "data/digest"
DATA_VERSION_TAG = "ecgx.data_version"  # the digest's first 12 hex digits (compare groups by it)
CHUNK = 1 << 20


def _file_digest(path: Path, into: Any) -> None:
    with path.open("rb") as handle:
        while block := handle.read(CHUNK):
            into.update(block)


def record_files(root: Path, meta: Any) -> list[Path]:
    """The files of the records in ``meta`` (its ``path`` column, relative to ``root``: a file,
    or a stem whose ``.hea``/``.dat``/``.mat`` siblings are the record); every file under
    ``root`` for a reader that names no paths."""
    if "path" not in meta.columns:
        return sorted(p for p in root.rglob("*") if p.is_file())
    files: set[Path] = set()
    for rel in meta["path"].astype(str):
        path = root / rel
        if path.is_file():
            files.add(path)
        files.update(p for p in path.parent.glob(f"{path.stem}.*")
                     if p.suffix in (".hea", ".dat", ".mat") and p.is_file())  # fmt: skip
    return sorted(files)


def _stored_digests(path: Path) -> dict[str, Any] | None:
    """The digests a job kept in the cache, or None (absent, or unreadable: computed again)."""
    try:
        digests = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return digests if isinstance(digests, dict) and "records_digest" in digests else None


def data_version(datamodule: Any) -> dict[str, Any]:
    """Reader, root, task, cache key, digests and split sizes of a set-up DataModule (the
    digests computed once per cache and kept in it)."""
    cache = datamodule.cache
    spec = datamodule.dataset.signal_spec()
    root = Path(str(spec.get("root") or getattr(datamodule.dataset, "root", "."))).expanduser()
    stored = cache.path / LINEAGE
    digests = _stored_digests(stored)
    if digests is None:
        index = hashlib.sha256((cache.path / "meta.csv").read_bytes()).hexdigest()
        files = record_files(root, cache.meta)
        records = hashlib.sha256()
        for path in files:
            records.update(path.relative_to(root).as_posix().encode() + b"\0")
            _file_digest(path, records)
        digests = {"index_digest": index, "records_digest": records.hexdigest(),
                   "n_record_files": len(files)}  # fmt: skip
        try:
            # Whole or not at all: concurrent jobs on one cache read this file while another
            # job writes it (a temporary file renamed over it is atomic on POSIX).
            partial = stored.with_name(f".{LINEAGE}.{os.getpid()}")
            partial.write_text(json.dumps(digests))
            os.replace(partial, stored)
        except OSError as err:  # a read-only shared cache: computed again next time
            log.info("could not keep the data digests in %s: %s", stored, err)
    both = hashlib.sha256((digests["index_digest"] + digests["records_digest"]).encode())
    return {
        "reader": str(spec.get("reader") or type(datamodule.dataset).__name__),
        "root": str(root),
        "task": str(getattr(datamodule.dataset, "task", "") or ""),
        "cache_key": cache.path.name,
        **digests,
        "digest": both.hexdigest(),
        "n_records": {k: int(len(v)) for k, v in datamodule.indices.items()},
    }


def log_dataset(client: Any, run_id: str, version: dict[str, Any]) -> None:
    """``version`` as the run's MLflow dataset input (context ``training``), its digest as a
    param and its short form as a tag (``ecgx compare group_by=[ecgx.data_version]``)."""
    from mlflow.entities import Dataset, DatasetInput, InputTag, Param, RunTag

    name = f"{version['reader']}" + (f"-{version['task']}" if version["task"] else "")
    dataset = Dataset(
        name=name,
        digest=version["digest"][:36],  # MLflow shows (and limits) digests this short
        source_type="local",
        source=json.dumps({"uri": version["root"]}),
        schema=json.dumps(
            {"signal": "(leads, samples) float32 mV", "cache_key": version["cache_key"]}
        ),  # fmt: skip
        profile=json.dumps({k: v for k, v in version.items() if k not in ("root",)}),
    )
    context = InputTag(key="mlflow.data.context", value="training")
    client.log_inputs(run_id, datasets=[DatasetInput(dataset, tags=[context])])
    client.log_batch(run_id, params=[Param(DIGEST_PARAM, version["digest"]),
                                     Param("data/cache_key", version["cache_key"])],
                     tags=[RunTag(DATA_VERSION_TAG, version["digest"][:12])])  # fmt: skip


def warn_if_other_data(trained_digest: str | None, version: dict[str, Any], run_id: str) -> bool:
    """Warn (and say True) when the data a run is re-tested on is not the data it trained on."""
    if not trained_digest or trained_digest == version["digest"]:
        return False
    log.warning(
        "run %s trained on data version %s, but %s at %s is version %s now (records or labels "
        "changed): its metrics here are not those of its own data",
        run_id, trained_digest[:12], version["reader"], version["root"], version["digest"][:12],
    )  # fmt: skip
    return True
