"""A run's model as one self-contained file: TorchScript (``torch.jit.trace``) or ONNX.

What can be written as tensor operations is folded into the file: the lead selection of a
``LeadSubset``, the normaliser fitted on the train split, temperature scaling and the
sigmoid/softmax, so the file maps the record after the run's remaining offline transforms to
class probabilities. The rest of the contract (those offline transforms: resampling, filters,
fixed length; the evaluation crop; test-time windows; class names; thresholds) is written as a
JSON sidecar (``<output>.json``), since scipy filters and windowed scoring are not tensors.
Every export is checked against eager PyTorch before it is kept.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ecgx.deploy.contract import Contract
from ecgx.errors import ConfigValueError
from ecgx.models.base import task_outputs

log = logging.getLogger(__name__)

FORMATS = ("torchscript", "onnx")
SUFFIX = {"torchscript": ".pt", "onnx": ".onnx"}
TOLERANCE = 1e-5  # an export differing from eager PyTorch by more is refused
ONNX_OPSET = 17


class FoldedModel(nn.Module):
    """The network with the tensor-expressible preprocessing and the output activation."""

    def __init__(self, net: nn.Module, task: str, lead_index: list[int] | None = None,
                 shift: np.ndarray | None = None, scale: np.ndarray | None = None,
                 temperature: torch.Tensor | None = None,
                 extra_inputs: tuple[str, ...] = ()) -> None:  # fmt: skip
        super().__init__()
        self.net = net.requires_grad_(False)  # a traced graph for inference, no autograd
        self.task = task
        self.extra_inputs = tuple(extra_inputs)
        self.select = lead_index is not None
        self.register_buffer("lead_index", torch.tensor(lead_index or [], dtype=torch.long))
        self.normalize = shift is not None and scale is not None
        self.register_buffer("shift", torch.from_numpy(np.asarray(shift, np.float32))
                             if self.normalize else torch.zeros(0))  # fmt: skip
        self.register_buffer("scale", torch.from_numpy(np.asarray(scale, np.float32))
                             if self.normalize else torch.ones(0))  # fmt: skip
        self.calibrated = temperature is not None
        self.register_buffer("temperature", temperature if temperature is not None
                             else torch.ones(1))  # fmt: skip

    def forward(self, x: torch.Tensor, *extras: torch.Tensor) -> torch.Tensor:
        if self.select:
            x = x.index_select(1, self.lead_index)
        if self.normalize:
            x = (x - self.shift) / self.scale  # as Standardize / MinMax compute it
        logits = self.net(x, **dict(zip(self.extra_inputs, extras)))
        return task_outputs(logits, self.task, self.temperature if self.calibrated else None)


def affine(normalize: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """(shift, scale) with ``normalize(x) == (x - shift) / scale``, float32 as the eager one."""
    from ecgx.transforms.signal import MinMax, Standardize

    if normalize is None:
        return None
    if isinstance(normalize, Standardize):
        return normalize.mean, (normalize.std + normalize.eps).astype(np.float32)
    if isinstance(normalize, MinMax):
        span = normalize.max - normalize.min
        return normalize.min, np.where(span > 0, span, 1.0).astype(np.float32)
    raise ConfigValueError(f"export: cannot fold the normaliser {type(normalize).__name__}")


def folded(pipeline: Any) -> tuple[FoldedModel, list[str], bool]:
    """The exportable module of a :class:`~ecgx.commands.predict.RunPipeline`, the input rows
    it takes (the lead selection is folded unless a chart is drawn from the leads) and whether
    those rows are a chart's pixels."""
    from ecgx.data.extras import wanted
    from ecgx.formats.record import LEADS
    from ecgx.transforms.chart import ChartImage
    from ecgx.transforms.signal import LeadSubset

    offline = pipeline.transform.offline
    model_leads = list(pipeline.transform.output_leads(LEADS))
    chart = any(isinstance(t, ChartImage) for t in offline)
    fold_leads = not chart and any(isinstance(t, LeadSubset) for t in offline)
    index = [LEADS.index(n) for n in model_leads] if fold_leads else None
    shift_scale = affine(pipeline.transform.normalize)
    shift, scale = shift_scale if shift_scale else (None, None)
    module = FoldedModel(pipeline.net, pipeline.task, index, shift, scale,
                         pipeline.temperature, wanted(pipeline.net))  # fmt: skip
    return module.eval(), list(LEADS) if fold_leads else model_leads, chart


def export_input(pipeline: Any, record: Any) -> np.ndarray:
    """One record as the exported file takes it: the run's offline transforms but a folded lead
    subset, then the evaluation view (e.g. a centre crop), not normalised."""
    from ecgx.transforms.signal import LeadSubset

    _, _, chart = folded(pipeline)
    x, fs = record.signal, record.fs
    for t in pipeline.transform.offline:
        if chart or not isinstance(t, LeadSubset):
            x, fs = t(x, fs)
    x = np.asarray(x, dtype=np.float32)
    return np.asarray(pipeline.view.apply_online(x, None), dtype=np.float32)


@dataclass
class Exported:
    path: Path
    sidecar: Path
    format: str
    max_abs_diff: float  # against eager PyTorch on the check inputs
    dynamic_length: bool  # other record lengths give eager's outputs too


def export_pipeline(pipeline: Any, contract: Contract, fmt: str, output: str | Path,
                    example: np.ndarray, model_name: str = "") -> Exported:  # fmt: skip
    """Write ``pipeline``'s model as ``fmt`` to ``output`` (+ ``.json`` sidecar); ``example`` is
    one input as the exported file takes it (leads × samples after the offline transforms)."""
    if fmt not in FORMATS:
        raise ConfigValueError(f"format={fmt!r}: one of {list(FORMATS)}")
    if fmt == "onnx":
        try:
            import onnx  # noqa: F401 - torch.onnx.export writes through it
            import onnxruntime  # noqa: F401 - the check against eager PyTorch runs in it
        except ImportError as err:
            raise ConfigValueError("export format=onnx needs onnx and onnxruntime: "
                                   "pip install 'ecgx[export]'") from err  # fmt: skip
    name = model_name or contract.model or type(pipeline.net).__name__
    module, leads, chart = folded(pipeline)
    x = torch.from_numpy(np.ascontiguousarray(example, dtype=np.float32))[None]
    extras = tuple(torch.zeros(1, int(getattr(pipeline.net, f"{e}_dim"))) for e in
                   contract.extra_inputs)  # fmt: skip
    output = Path(output).expanduser()
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        run = _write_torchscript if fmt == "torchscript" else _write_onnx
        infer = run(module, (x, *extras), output, chart)
    except Exception as err:  # the exporters raise many types for an unsupported operation
        raise ConfigValueError(
            f"export format={fmt}: model {name} cannot be exported ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''})"
        ) from err
    diff = _max_diff(module, infer, (x, *extras))
    if diff > TOLERANCE:
        output.unlink(missing_ok=True)
        raise ConfigValueError(f"export format={fmt}: model {name} exports, but its outputs "
                               f"differ from eager PyTorch by {diff:.2e} (> {TOLERANCE:g})")  # fmt: skip
    dynamic = _other_lengths(module, infer, (x, *extras), chart)
    sidecar = output.with_name(output.name + ".json")
    sidecar.write_text(json.dumps({
        "format": fmt, "file": output.name, "model": name,
        "input": {"shape": ["records", len(leads), x.shape[-1] if not dynamic else "samples"],
                  "leads": leads, "fs": contract.fs, "units": "mV",
                  "extra_inputs": contract.extra_inputs,
                  "before": "contract.offline (resample, filters, fixed length), a lead subset excepted "
                  "(folded in), then contract.online_eval (e.g. a centre crop)",
                  "traced_length": int(x.shape[-1]), "other_lengths": dynamic},
        "folded": {"lead_selection": leads != contract.model_leads and not chart,
                   "normalize": contract.normalize, "temperature": contract.temperature,
                   "output": {"multilabel": "sigmoid", "multiclass": "softmax"}.get(
                       contract.task, "none")},
        "output": {"columns": [f"prob_{c}" for c in contract.class_names], "task": contract.task},
        "max_abs_diff_vs_eager": diff,
        "contract": asdict(contract),
    }, indent=1))  # fmt: skip
    return Exported(output, sidecar, fmt, diff, dynamic)


def _other_lengths(module: nn.Module, infer: Any, inputs: tuple, chart: bool) -> bool:
    """Whether a shorter record gives eager's outputs too (or the length is baked in)."""
    x = inputs[0]
    if chart or x.shape[-1] <= 8:
        return False
    shorter = (x[..., : x.shape[-1] - x.shape[-1] // 4], *inputs[1:])
    try:
        return _max_diff(module, infer, shorter) <= TOLERANCE
    except Exception:  # noqa: BLE001 - a fixed-shape graph may also just fail
        return False


def _write_torchscript(module: nn.Module, inputs: tuple, output: Path, chart: bool) -> Any:
    with torch.no_grad():
        traced = torch.jit.trace(module, inputs, check_trace=False)
    traced.save(str(output))
    loaded = torch.jit.load(str(output), map_location="cpu")
    return lambda *xs: loaded(*xs)


def _write_onnx(module: nn.Module, inputs: tuple, output: Path, chart: bool) -> Any:
    import onnxruntime

    names = ["signal", *[f"extra{i}" for i in range(len(inputs) - 1)]]

    def write(length_axis: bool) -> Any:
        axes = {"signal": {0: "records", 2: "samples"} if length_axis else {0: "records"},
                "probabilities": {0: "records"}}  # fmt: skip
        axes.update({n: {0: "records"} for n in names[1:]})
        with torch.no_grad():
            torch.onnx.export(module, inputs, str(output), input_names=names,
                              output_names=["probabilities"], dynamic_axes=axes,
                              opset_version=ONNX_OPSET, dynamo=False)  # fmt: skip
        session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
        return lambda *xs: torch.from_numpy(session.run(None, {n: x.numpy() for n, x in
                                                               zip(names, xs)})[0])  # fmt: skip

    if not chart:
        try:
            infer = write(length_axis=True)
            if _max_diff(module, infer, inputs) <= TOLERANCE:
                return infer
        except Exception as err:  # noqa: BLE001 - e.g. "same" padding computed from the length
            log.info("ONNX with a free length axis failed (%s): exporting the traced length", err)
    # Models that compute padding from the input length (IMLE-Net, Rajpurkar) trace it as a
    # constant next to a symbolic length; with the length fixed, the graph is consistent.
    return write(length_axis=False)


def _max_diff(module: nn.Module, infer: Any, inputs: tuple) -> float:
    with torch.no_grad():
        eager = module(*inputs)
        got = infer(*inputs)
    if got.shape != eager.shape:
        return float("inf")
    return float((got.float() - eager.float()).abs().max())


def support(names: list[str] | None = None, formats: tuple[str, ...] = FORMATS,
            folder: str | Path | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Which models of ``conf/model`` export to which format, at their seed configuration with
    random weights (``ecgx export support=true``): one row per model and format, with the
    largest difference to eager PyTorch or the reason it is refused."""
    import tempfile

    from ecgx.data.extras import wanted
    from ecgx.models.catalog import build, model_names

    if folder is None:
        # The exported files only serve the check: without a folder to keep them in, they go
        # with the call (a full support table writes over a gigabyte).
        with tempfile.TemporaryDirectory(prefix="ecgx-export-") as tmp:
            return support(names, formats, tmp)
    folder = Path(folder)
    rows = []
    for name in names or model_names():
        torch.manual_seed(0)
        net = build(name).eval()
        module = FoldedModel(net, "multilabel", extra_inputs=wanted(net)).eval()
        x = torch.randn(1, *net.input_shape) * 0.2
        inputs = (x, *(torch.zeros(1, int(getattr(net, f"{e}_dim"))) for e in wanted(net)))
        chart = bool(getattr(net, "image_size", None))
        for fmt in formats:
            row: dict[str, Any] = {"model": name, "format": fmt}
            try:
                write = _write_torchscript if fmt == "torchscript" else _write_onnx
                infer = write(module, inputs, folder / f"{name}{SUFFIX[fmt]}", chart)
                row["max_abs_diff"] = _max_diff(module, infer, inputs)
                row["ok"] = row["max_abs_diff"] <= TOLERANCE
                row["reason"] = "" if row["ok"] else "outputs differ from eager PyTorch"
                row["other_lengths"] = _other_lengths(module, infer, inputs, chart)
            except Exception as err:  # noqa: BLE001 - the reason is the row's content
                row.update(ok=False, max_abs_diff=None,
                           reason=f"{type(err).__name__}: {str(err).splitlines()[0][:200]}")  # fmt: skip
            rows.append(row)
    return rows
