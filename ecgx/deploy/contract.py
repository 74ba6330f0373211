"""The preprocessing contract of a run's model: what its input must be and what it returns.

Written as ``contract.json`` beside the weights of the logged MLflow model and as the sidecar of
an exported file, so a user (or another runtime) reads what the model expects without ecgx.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ecgx.errors import ConfigValueError
from ecgx.transforms.signal import LeadSubset, Resample

CONTRACT_VERSION = 1
# Only ecgx's own classes are built from a logged model's config: the config travels with the
# model, and Hydra's instantiate would otherwise call whatever ``_target_`` a file names.
TRUSTED_TARGETS = ("ecgx.",)


@dataclass
class Contract:
    """What a run's model expects (``input_leads`` at ``fs`` Hz, mV) and returns."""

    task: str
    class_names: list[str]
    fs: float | None  # the model's input rate; None: the run's reader had no single rate
    input_leads: list[str]  # the leads a caller sends, in this order
    model_leads: list[str]  # the leads the network sees (after a lead subset)
    resamples: bool  # the run's offline transforms resample: another input rate is accepted
    thresholds: list[float] | None  # multi-label: label = prob >= threshold (tuned on validation)
    threshold_source: str  # "run" (its test/threshold_<class>), "checkpoint" or "0.5"
    offline: list[dict[str, Any]] = field(default_factory=list)  # resample, filters, crop/pad
    normalize: dict[str, Any] | None = None  # fitted on the train split
    online_eval: list[dict[str, Any]] = field(default_factory=list)  # evaluation view (crop)
    test_windows: dict[str, Any] | None = None  # windowed scoring of the uncropped record
    temperature: list[float] | None = None  # temperature scaling of the logits
    extra_inputs: list[str] = field(default_factory=list)  # e.g. demographics (from age, sex)
    model: str = ""  # the model config's _target_
    run_id: str | None = None
    version: int = CONTRACT_VERSION

    @classmethod
    def of(cls, pipeline: Any, run_cfg: DictConfig, thresholds: list[float] | None,
           threshold_source: str, run_id: str | None = None) -> Contract:  # fmt: skip
        """The contract of a :class:`~ecgx.commands.predict.RunPipeline`."""
        from ecgx.data.extras import wanted
        from ecgx.formats.record import LEADS

        transform = pipeline.transform
        model_leads = list(transform.output_leads(LEADS))
        subset = any(isinstance(t, LeadSubset) for t in transform.offline)
        norm = transform.normalize
        windows = run_cfg.module.get("test_windows")
        return cls(
            task=pipeline.task,
            class_names=list(pipeline.class_names),
            fs=pipeline.fs,
            # A lead subset model needs only its leads; the others are never read.
            input_leads=model_leads if subset else list(LEADS),
            model_leads=model_leads,
            resamples=any(isinstance(t, Resample) for t in transform.offline),
            thresholds=None if thresholds is None else [float(t) for t in thresholds],
            threshold_source=threshold_source,
            offline=[_plain(t.spec()) for t in transform.offline],
            normalize=None
            if norm is None
            else _plain({"name": type(norm).__name__, **norm.state_dict()}),  # fmt: skip
            online_eval=[_plain(t.spec()) for t in pipeline.view.online if hasattr(t, "eval")],
            test_windows=None if not windows else _plain(OmegaConf.to_container(windows)),
            temperature=None
            if pipeline.temperature is None
            else [float(t) for t in pipeline.temperature],
            extra_inputs=list(wanted(pipeline.net)),
            model=str(run_cfg.model.get("_target_", "")),
            run_id=run_id,
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    def write(self, path: str | Path) -> Path:
        Path(path).write_text(self.to_json())
        return Path(path)

    @classmethod
    def read(cls, path: str | Path) -> Contract:
        data = json.loads(Path(path).read_text())
        if data.get("version") != CONTRACT_VERSION:
            raise ConfigValueError(
                f"{path}: contract version {data.get('version')!r}, this ecgx reads "
                f"{CONTRACT_VERSION}"
            )
        return cls(**data)


def check_targets(node: Any, where: str) -> None:
    """Refuse a config that would instantiate anything but ecgx's own classes."""
    tree = OmegaConf.to_container(node, resolve=False) if isinstance(node, DictConfig) else node
    stack = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            target = item.get("_target_")
            if target is not None and not str(target).startswith(TRUSTED_TARGETS):
                raise ConfigValueError(
                    f"{where}: _target_ {target!r} is not an ecgx class; a logged model's "
                    "config may only build ecgx's own transforms, windows and models"
                )
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _plain(value: Any) -> Any:
    """JSON-ready: arrays as (nested) lists."""
    import numpy as np

    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
