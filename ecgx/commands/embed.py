"""``ecgx embed``: a run's encoder features of any records, as one ``.npy`` matrix.

Each record goes through :class:`ecgx.commands.predict.RunPipeline` (the run's offline
transforms, fitted normalisation and evaluation view, as ``ecgx predict``), then the model's
``forward_features`` (the pooled encoder output the head reads). Works for pretraining runs
(``pretrain=...``) and classifiers alike. Row ``i`` of ``output`` is the ``i``-th row of the CSV
written beside it (file, record id), in the sorted order of the files found under ``input``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig

from ecgx.commands.predict import RunPipeline, input_records, read_file
from ecgx.errors import ConfigValueError
from ecgx.formats.record import RecordError
from ecgx.tracking.runs import load_checkpoint, load_run
from ecgx.tracking.runs import output_dir as job_output_dir

log = logging.getLogger(__name__)


@dataclass
class Embeddings:
    """What ``ecgx embed`` wrote."""

    features: np.ndarray  # (records, feature width)
    index: pd.DataFrame  # file, record_id of each row
    path: Path
    skipped: list[tuple[str, str]] = field(default_factory=list)


def embed_run(cfg: DictConfig) -> Embeddings:
    """Embed every record of ``cfg.input`` with a run's encoder (see conf/embed.yaml)."""
    files, on_error = input_records(cfg, "embed")
    out = Path(str(cfg.output)).expanduser() if cfg.get("output") else None
    out = out or job_output_dir("embed") / "embeddings.npy"
    if out.suffix != ".npy":
        raise ConfigValueError(f"output={out}: embeddings are written as .npy")
    run_cfg, ckpt_path = load_run(cfg, "embed")
    pipeline = RunPipeline(run_cfg, load_checkpoint(ckpt_path), cfg.get("model_fs"),
                           calibrate=False, need_classes=False)  # fmt: skip
    features, rows, skipped = [], [], []
    for path in files:
        try:
            record = read_file(path, float(cfg.fs) if cfg.get("fs") else None)
            x, _, _ = pipeline.inputs(record)
        except RecordError as err:
            if on_error == "raise":
                raise
            log.warning("skipped: %s", err)
            skipped.append((str(path), str(err)))
            continue
        with torch.no_grad():
            vector = pipeline.net.forward_features(torch.from_numpy(x)[None],
                                                   **pipeline.extras(record))  # fmt: skip
        features.append(vector.flatten(1)[0].float().numpy())
        rows.append({"file": str(path), "record_id": record.record_id})
    if not features:
        raise RecordError(f"input={cfg.input}: no record could be read")
    matrix = np.stack(features)
    index = pd.DataFrame(rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, matrix)
    index.to_csv(out.with_suffix(".csv"), index=False)
    print(f"\nEmbedded {len(matrix)} of {len(files)} records ({matrix.shape[1]} features) with "
          f"{ckpt_path.name}; wrote {out} and {out.with_suffix('.csv').name}")  # fmt: skip
    for file, reason in skipped:
        print(f"  skipped {file}: {reason}")
    return Embeddings(matrix, index, out, skipped)
