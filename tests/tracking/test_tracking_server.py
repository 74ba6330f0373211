"""A shared MLflow tracking server: a smoke training logs to it over HTTP, compare reads it back
(run, metric, config.yaml artifact), and a stopped server is reported in seconds."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from ecgx.errors import TrackingError
from ecgx.tracking.mlflow_run import check_tracking_uri

MLFLOW = Path(sys.executable).with_name("mlflow")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(uri: str, server: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {server.returncode}")
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{uri}/health did not answer in {timeout:.0f} s")


@pytest.mark.slow
def test_shared_server_round_trip(tmp_path: Path, compose_train) -> None:
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    cmd = [str(MLFLOW), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{tmp_path / 'srv.db'}",
           "--artifacts-destination", str(tmp_path / "artifacts")]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    log = (tmp_path / "server.log").open("w")  # a file, not a pipe: the server never blocks
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                              start_new_session=True)  # fmt: skip
    try:
        try:
            _wait_healthy(uri, server)
        except (RuntimeError, TimeoutError) as err:
            raise AssertionError(f"{err}\n{(tmp_path / 'server.log').read_text()[-3000:]}") from err
        from ecgx.commands.train import train

        cfg = compose_train("debug=smoke", "module.bootstrap_resamples=0",
                            "experiment_name=shared", f"tracking_uri={uri}")  # fmt: skip
        metrics = train(cfg)
        assert 0.0 <= metrics["test/macro_auroc"] <= 1.0
        assert not (tmp_path / "mlflow.db").exists()  # nothing went to the local store

        from ecgx.tracking.compare import compare_table, search_runs

        (run,) = search_runs(uri, ["shared"])
        assert run.info.status == "FINISHED"
        assert run.data.metrics["test/macro_auroc"] == pytest.approx(metrics["test/macro_auroc"])
        table = compare_table([run], group_by=["model"], metrics=["test/macro_auroc"])
        assert list(table["n"]) == [1]
        assert table["test/macro_auroc mean"].iloc[0] == pytest.approx(metrics["test/macro_auroc"])

        from mlflow.tracking import MlflowClient

        client = MlflowClient(uri)
        assert "config.yaml" in {a.path for a in client.list_artifacts(run.info.run_id)}
        local = client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))
        assert "experiment_name: shared" in Path(local).read_text()
        # proxied artifacts: the server wrote them under --artifacts-destination
        assert any((tmp_path / "artifacts").rglob("config.yaml"))
    finally:
        os.killpg(server.pid, 15)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, 9)
            server.wait(timeout=10)
        log.close()

    t0 = time.perf_counter()
    with pytest.raises(TrackingError, match=f"127.0.0.1:{port}.*unreachable"):
        check_tracking_uri(uri)
    assert time.perf_counter() - t0 < 10


@pytest.mark.slow
def test_server_lost_mid_run_keeps_checkpoints_and_says_how_to_relog(
    tmp_path: Path, compose_train, monkeypatch
) -> None:
    import lightning as L

    # MLflow retries an unreachable server for minutes by default; a user can shorten it too.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    cmd = [str(MLFLOW), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{tmp_path / 'srv.db'}",
           "--artifacts-destination", str(tmp_path / "artifacts")]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                              start_new_session=True)  # fmt: skip

    def stop_server() -> None:
        if server.poll() is None:
            os.killpg(server.pid, 9)
            server.wait(timeout=20)

    class StopServerAfterFirstEpoch(L.Callback):
        def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            if trainer.current_epoch == 0:
                stop_server()

    try:
        _wait_healthy(uri, server)
        from ecgx.commands.train import train

        cfg = compose_train("debug=smoke", "trainer.max_epochs=3", "module.bootstrap_resamples=0",
                            "experiment_name=lost", f"tracking_uri={uri}")  # fmt: skip
        with pytest.raises(TrackingError, match="resume=true") as caught:
            train(cfg, extra_callbacks=[StopServerAfterFirstEpoch()])
        assert "stopped answering during the run" in str(caught.value)
        folder = Path(str(caught.value).split("kept in ")[1].split(";")[0])
        assert (folder / "last.ckpt").is_file()  # the trained epoch is not lost
    finally:
        stop_server()
        log.close()
