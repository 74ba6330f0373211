"""``ecgx export``: a run's model as TorchScript or ONNX with its contract as a JSON sidecar
(conf/export.yaml); the work is :mod:`ecgx.deploy.export`'s."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from ecgx.deploy.export import SUFFIX, Exported, export_input, export_pipeline
from ecgx.deploy.pyfunc import example_input, pipeline_and_contract
from ecgx.errors import ConfigValueError
from ecgx.tracking.runs import output_dir


def export(cfg: DictConfig) -> Exported | list[dict]:
    if cfg.get("support"):  # which catalogue models export, with random weights
        import pandas as pd

        from ecgx.deploy.export import support

        rows = support()
        print(pd.DataFrame(rows).to_string(index=False))
        return rows
    fmt = str(cfg.get("format") or "torchscript")
    if fmt not in SUFFIX:
        raise ConfigValueError(f"format={fmt!r}: one of {sorted(SUFFIX)}")
    pipeline, contract = pipeline_and_contract(cfg, "export")
    if cfg.get("input"):
        from ecgx.commands.predict import read_file

        record = read_file(Path(str(cfg.input)).expanduser(), cfg.get("fs"))
        example = export_input(pipeline, record)
    else:
        example = example_input(cfg, pipeline, contract)
    out = Path(str(cfg.output)).expanduser() if cfg.get("output") else None
    out = out or output_dir("export") / f"model{SUFFIX[fmt]}"
    done = export_pipeline(pipeline, contract, fmt, out, example)
    print(
        f"\nWrote {done.path} ({fmt}; max |difference| to eager PyTorch {done.max_abs_diff:.1e}"
        f"{'' if done.dynamic_length else '; traced length only'}) and {done.sidecar}"
    )
    return done
