"""The logged MLflow model of a run: loaded, served over HTTP and registered, it predicts what
``ecgx predict`` predicts, and refuses input the model was not trained on, naming what."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from scipy.signal import resample_poly

from ecgx.commands.predict import predict_run, read_file
from ecgx.deploy.contract import Contract
from ecgx.deploy.registry import register_run
from ecgx.formats.record import LEADS, RecordError
from tests.conftest import ROOT, SAMPLES, needs_samples
from tests.deploy.conftest import REGISTERED, SUBSET, TrainedRun

WFDB_100 = SAMPLES / "ptbxl" / "records100" / "00000" / "00001_lr.hea"  # WFDB, 100 Hz
CINC_500 = SAMPLES / "cinc2020_cpsc" / "A0001.hea"  # CinC .hea + .mat, 500 Hz


def _real_records(folder: Path) -> dict[str, np.ndarray]:
    """The two real records at the run's 100 Hz: the WFDB one as its files, the CinC one
    resampled and written as .npy (the run does not resample), both predicted from ``folder``."""
    folder.mkdir()
    for suffix in (".hea", ".dat"):
        shutil.copy(WFDB_100.with_suffix(suffix), folder)
    cinc = resample_poly(read_file(CINC_500).signal, 1, 5, axis=-1).astype(np.float32)
    np.save(folder / "A0001_100hz.npy", cinc)
    return {"00001_lr": read_file(WFDB_100).signal, "A0001_100hz": cinc}


def _leads(signal: np.ndarray, names: list[str] = SUBSET) -> np.ndarray:
    """The rows of the canonical 12-lead ``signal`` the model takes, as a batch of one."""
    return signal[[LEADS.index(n) for n in names]][None]


def _probs(table: pd.DataFrame) -> np.ndarray:
    return table.filter(like="prob_").to_numpy(dtype=float)


@pytest.mark.slow
@needs_samples()
def test_logged_model_is_ecgx_predict_loaded_and_served(trained_run: TrainedRun,
                                                        tmp_path: Path) -> None:  # fmt: skip
    run = trained_run
    files = [a.path for a in run.client.list_artifacts(run.run_id, "model")]
    assert {"model/MLmodel", "model/data", "model/serving_input_example.json"} <= set(files)
    records = _real_records(tmp_path / "records")
    # MLflow's own default store is another one: the commands use their tracking_uri.
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'elsewhere.db'}")
    expected = predict_run(run.compose(f"run_id={run.run_id}", f"input={tmp_path / 'records'}",
                                       "fs=100", f"output={tmp_path / 'p.csv'}",
                                       config="predict")).table.set_index("record_id")  # fmt: skip
    # The registry: train ... register=<name> set the champion alias; ecgx predict follows it.
    via_alias = predict_run(run.compose(f"model_uri=models:/{REGISTERED}@champion",
                                        f"input={tmp_path / 'records'}", "fs=100",
                                        f"output={tmp_path / 'alias.csv'}", config="predict"))  # fmt: skip
    assert via_alias.threshold_source == "model"
    np.testing.assert_allclose(_probs(via_alias.table.set_index("record_id").loc[expected.index]),
                               _probs(expected), atol=1e-6)  # fmt: skip

    mlflow.set_tracking_uri(run.tracking_uri)  # load_model reads runs:/ from the default store
    model = mlflow.pyfunc.load_model(f"runs:/{run.run_id}/model")
    signature = model.metadata.signature
    assert signature.inputs.input_names() == ["signal"]
    assert list(signature.inputs.inputs[0].shape) == [-1, -1, -1]
    params = {p.name: p.default for p in signature.params.params}
    assert params == {"fs": 100.0, "leads": SUBSET}  # the lead-subset model's own leads
    for name, signal in records.items():
        got = model.predict({"signal": _leads(signal)})
        np.testing.assert_allclose(_probs(got)[0], _probs(expected.loc[[name]])[0], atol=1e-5)
        labels = expected.loc[[name]].filter(like="label_").to_numpy(dtype=int)
        assert (got.filter(like="label_").to_numpy() == labels).all()

    # Refused, naming what is wrong: the CinC record at its own 500 Hz, a missing lead, leads in
    # another order.
    cinc_500 = _leads(read_file(CINC_500).signal)
    with pytest.raises(RecordError, match=r"fs=500 Hz, but the model was trained at 100 Hz"):
        model.predict({"signal": cinc_500}, params={"fs": 500.0})
    no_v5 = SUBSET[:-1]
    with pytest.raises(RecordError, match=r"missing leads \['V5'\]"):
        model.predict({"signal": _leads(records["00001_lr"], no_v5)}, params={"leads": no_v5})
    swapped = ["II", "I", *SUBSET[2:]]
    with pytest.raises(RecordError, match=r"lead order \['II', 'I'.* does not match"):
        model.predict({"signal": _leads(records["00001_lr"], swapped)}, params={"leads": swapped})

    version = register_run(run.compose(f"run_id={run.run_id}", f"name={REGISTERED}",
                                       "alias=staging", config="register"))  # fmt: skip
    assert int(version.version) == 2
    aliased = run.client.get_model_version_by_alias(REGISTERED, "staging")
    assert int(aliased.version) == 2 and aliased.run_id == run.run_id
    assert (
        run.client.get_run(run.run_id).data.tags["ecgx.registered_model"]
        == f"{REGISTERED}/2@staging"
    )

    # Served by MLflow on 127.0.0.1 (a fresh process that loads the model itself).
    with _served(f"runs:/{run.run_id}/model", run.tracking_uri) as url:
        for name, signal in records.items():
            answer = _post(url, {"inputs": {"signal": _leads(signal).tolist()}})
            served = pd.DataFrame(answer["predictions"])
            np.testing.assert_allclose(_probs(served)[0], _probs(expected.loc[[name]])[0],
                                       atol=1e-5)  # fmt: skip
        with pytest.raises(urllib.error.HTTPError) as refused:
            _post(url, {"inputs": {"signal": cinc_500.tolist()}, "params": {"fs": 500.0}})
        assert "trained at 100 Hz" in refused.value.read().decode()


def test_contract_round_trip(tmp_path: Path) -> None:
    contract = Contract("multilabel", ["A", "B"], 100.0, list(LEADS), list(LEADS), False,
                        [0.3, 0.6], "run")  # fmt: skip
    assert Contract.read(contract.write(tmp_path / "c.json")) == contract
    data = json.loads((tmp_path / "c.json").read_text())
    (tmp_path / "old.json").write_text(json.dumps({**data, "version": 0}))
    with pytest.raises(ValueError, match=r"old.json: contract version 0"):
        Contract.read(tmp_path / "old.json")


def test_a_logged_config_may_only_build_ecgx_classes() -> None:
    from ecgx.deploy.contract import check_targets

    check_targets({"_target_": "ecgx.models.ecgnet.ECGNet", "x": [{"_target_": "ecgx.a"}]}, "m")
    with pytest.raises(ValueError, match=r"config model: _target_ 'os.system' is not an ecgx"):
        check_targets({"a": [{"_target_": "os.system", "_args_": ["true"]}]}, "config model")


# -- serving helpers ------------------------------------------------------------------------------
class _served:
    """``mlflow models serve`` on a free port of 127.0.0.1, stopped (its process group) on exit."""

    def __init__(self, uri: str, tracking_uri: str) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        # MLflow execs uvicorn by name: this interpreter's environment's scripts come first.
        path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "PATH": path,
               "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
        mlflow_cli = [sys.executable, "-m", "mlflow", "models", "serve", "-m", uri,
                      "--env-manager", "local", "-h", "127.0.0.1", "-p", str(self.port)]  # fmt: skip
        self.proc = subprocess.Popen(mlflow_cli, env=env, start_new_session=True,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip

    def __enter__(self) -> str:
        url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"mlflow models serve exited: {self.proc.stderr.read()}")
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=1) as answer:
                    if answer.status == 200:
                        return url
            except OSError:
                time.sleep(0.3)
        raise AssertionError("mlflow models serve did not answer /ping in 120 s")

    def __exit__(self, *exc: object) -> None:
        import signal

        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(f"{url}/invocations", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.loads(answer.read())


@pytest.mark.slow
def test_run_names_its_data_and_opens_as_model_training(trained_run: TrainedRun) -> None:
    """The trained run's dataset input and data version, its experiment's kind for the MLflow
    UI, and the registered name and data version as compare columns."""
    from ecgx.tracking.compare import compare_table
    from ecgx.tracking.lineage import DATA_VERSION_TAG

    run = trained_run.client.get_run(trained_run.run_id)
    experiment = trained_run.client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    (entry,) = run.inputs.dataset_inputs
    profile = json.loads(entry.dataset.profile)
    assert profile["reader"] == "ptbxl" and profile["task"] == "superdiagnostic"
    assert profile["n_records"] == {k: int(run.data.params[f"data/n_{k}"])
                                    for k in ("train", "val", "test")}  # fmt: skip
    assert run.data.params["data/digest"].startswith(entry.dataset.digest)
    assert profile["records_digest"] and profile["n_record_files"] == 600  # .hea + .dat each
    assert [t.value for t in entry.tags] == ["training"]
    assert run.data.metrics["cost/log_model_seconds"] > 0
    table = compare_table([run], group_by=[DATA_VERSION_TAG, "ecgx.registered_model"],
                          metrics=["test/macro_auroc"])  # fmt: skip
    assert table.iloc[0][DATA_VERSION_TAG] == run.data.params["data/digest"][:12]
    assert table.iloc[0]["ecgx.registered_model"].startswith(f"{REGISTERED}/")


@pytest.mark.slow
def test_eval_warns_when_the_data_is_not_what_the_run_trained_on(
    trained_run: TrainedRun, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from hydra.utils import instantiate

    from ecgx.commands.evaluate import _check_data_version
    from ecgx.datasets.synthetic import generate_ptbxl_like

    run = trained_run
    cfg = run.compose(f"run_id={run.run_id}", config="eval")

    def datamodule(*overrides: str):  # the run's data config, as ecgx eval rebuilds it
        data = instantiate(run.compose(*overrides).data)
        data.prepare_data()
        data.setup("test")
        return data

    caplog.set_level(logging.WARNING, "ecgx.tracking.lineage")
    assert not _check_data_version(cfg, datamodule())  # its own data: no warning
    other = generate_ptbxl_like(tmp_path / "other", n_records=60, seed=3, sampling_rates=[100])
    assert _check_data_version(cfg, datamodule(f"dataset.root={other}"))
    assert f"run {run.run_id} trained on data version" in caplog.text
