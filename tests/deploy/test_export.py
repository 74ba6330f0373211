"""``ecgx export``: TorchScript and ONNX files of a run equal ``ecgx predict`` (eager PyTorch with
the run's preprocessing) on real records; what cannot export is refused by name."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ecgx.commands.export import export
from ecgx.commands.predict import read_file
from ecgx.deploy.export import export_input, support
from ecgx.deploy.pyfunc import pipeline_and_contract
from ecgx.errors import ConfigValueError
from ecgx.formats.record import LEADS
from tests.conftest import needs_samples
from tests.deploy.conftest import SUBSET, TrainedRun
from tests.deploy.test_pyfunc import CINC_500, WFDB_100

onnxruntime = pytest.importorskip("onnxruntime", reason="the export extra (onnxruntime) absent")


@pytest.mark.slow
@needs_samples()
def test_exported_files_equal_eager_on_real_records(trained_run: TrainedRun,
                                                    tmp_path: Path) -> None:  # fmt: skip
    run = trained_run
    cfg = run.compose(f"run_id={run.run_id}", config="export")
    pipeline, contract = pipeline_and_contract(cfg, "export")
    record = read_file(WFDB_100)
    x, _, _ = pipeline.inputs(record)
    eager = pipeline.outputs(x, pipeline.extras(record))  # what ecgx predict computes
    signal = torch.from_numpy(export_input(pipeline, read_file(WFDB_100)))[None]

    script = export(run.compose(f"run_id={run.run_id}", "format=torchscript", f"input={WFDB_100}",
                                f"output={tmp_path / 'model.pt'}", config="export"))  # fmt: skip
    loaded = torch.jit.load(str(script.path))
    np.testing.assert_allclose(loaded(signal)[0].detach().numpy(), eager, atol=1e-5)

    # Traced on the logged model's input example (a synthetic test record), run on a real one.
    onnx = export(run.compose(f"run_id={run.run_id}", "format=onnx",
                              f"output={tmp_path / 'model.onnx'}", config="export"))  # fmt: skip
    session = onnxruntime.InferenceSession(str(onnx.path), providers=["CPUExecutionProvider"])
    (probs,) = session.run(None, {"signal": signal.numpy()})
    np.testing.assert_allclose(probs[0], eager, atol=1e-5)
    assert onnx.dynamic_length

    sidecar = json.loads(onnx.sidecar.read_text())
    assert sidecar["output"]["columns"] == [f"prob_{c}" for c in contract.class_names]
    # The lead subset is folded in: the file takes the 12 leads and selects the model's.
    assert sidecar["input"]["fs"] == 100.0 and sidecar["input"]["leads"] == list(LEADS)
    assert sidecar["folded"]["lead_selection"] and contract.input_leads == SUBSET
    norm = sidecar["folded"]["normalize"]
    assert (
        norm["name"] == "Standardize" and norm["mean"] == pipeline.transform.normalize.mean.tolist()
    )
    assert sidecar["contract"]["thresholds"] == contract.thresholds

    # The CinC record at 500 Hz: the run does not resample, so the export is not traced on it.
    with pytest.raises(Exception, match=r"500 Hz"):
        pipeline.inputs(read_file(CINC_500))


def test_onnx_without_its_extra_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from ecgx.deploy import export as export_module

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ConfigValueError, match=r"format=onnx needs onnx and onnxruntime: "
                       r"pip install 'ecgx\[export\]'"):  # fmt: skip
        export_module.export_pipeline(None, None, "onnx", "x.onnx", np.zeros((12, 10)))  # type: ignore[arg-type]
    with pytest.raises(ConfigValueError, match=r"format='tflite': one of"):
        export_module.export_pipeline(None, None, "tflite", "x", np.zeros((12, 10)))  # type: ignore[arg-type]


def test_a_catalog_model_with_an_extra_input_exports(tmp_path: Path) -> None:
    """SE-ResNet18 takes demographics besides the signal (the whole catalogue: README table,
    ``ecgx export support=true``)."""
    rows = support(["seresnet18"], folder=tmp_path)
    assert {r["format"] for r in rows} == {"torchscript", "onnx"}
    for row in rows:
        assert row["ok"], row
        assert (
            Path(tmp_path / f"seresnet18{'.pt' if row['format'] == 'torchscript' else '.onnx'}")
            .stat()
            .st_size
            > 1e6
        )
        assert row["max_abs_diff"] <= 1e-5
