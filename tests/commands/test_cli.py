"""The ecgx command as a user runs it: a 2×2 multirun compared from MLflow, and early errors."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT


def ecgx(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ecgx.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


def _isolated(tmp_path: Path, root: Path) -> list[str]:
    return [
        f"dataset.root={root}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"paths.log_dir={tmp_path / 'logs'}",
        f"tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
    ]


@pytest.mark.slow
def test_multirun_then_compare(tmp_path: Path, synthetic_root: Path) -> None:
    # Two fast models (the sweep and the table are under test, not the models), tiny batches.
    tiny = ["data.batch_size=4", "data.eval_batch_size=8", "trainer.limit_train_batches=2",
            "trainer.limit_val_batches=1", "trainer.limit_test_batches=2"]  # fmt: skip
    run = ecgx("train", "-m", "model=compact_resnet,xai_lenet", "seed=0,1", "debug=smoke", *tiny,
               "experiment_name=sweep-test", *_isolated(tmp_path, synthetic_root))  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    _check_console(run.stdout + run.stderr)

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "table.csv"
    cmp = ecgx("compare", "--experiment", "sweep-test", "--sweep", "latest", "--format", "csv",
               "--output", str(out), "--tracking-uri", uri)  # fmt: skip
    assert cmp.returncode == 0, cmp.stderr[-3000:]
    import pandas as pd

    table = pd.read_csv(out)
    assert sorted(table["model"]) == ["compact_resnet", "xai_lenet"]  # by what varies, not seed
    assert list(table["n"]) == [2, 2]
    assert "test/macro_auroc mean" in table.columns and "test/macro_auroc std" in table.columns
    assert table["test/macro_auroc mean"].between(0, 1).all()

    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("sweep-test").experiment_id])
    assert len(runs) == 4
    assert len({r.data.tags["ecgx.sweep_id"] for r in runs}) == 1  # one sweep id for all jobs
    means = table.set_index("model")["test/macro_auroc mean"]
    for model in ("compact_resnet", "xai_lenet"):
        mine = [r.data.metrics["test/macro_auroc"] for r in runs
                if r.data.params["choice/model"] == model]  # fmt: skip
        assert means[model] == pytest.approx(sum(mine) / 2)

    md = ecgx("compare", "experiment=sweep-test", "group_by=[model,seed]", "format=markdown",
              "--tracking-uri", uri)  # fmt: skip
    assert md.returncode == 0, md.stderr[-2000:]
    lines = [ln for ln in md.stdout.splitlines() if ln.startswith("| ")]
    assert lines[0].startswith("| model | seed | n |") and len(lines) == 5  # header + 4 groups


def _check_console(text: str) -> None:
    """What a user reads: each line once, no library noise, the plan and the cost figures."""
    lines = [ln.strip() for ln in text.replace("\r", "\n").splitlines()]
    lines = [ln for ln in lines if ln and "it/s]" not in ln and "s/it]" not in ln]  # the bars
    twice = [a for a, b in zip(lines, lines[1:]) if a == b or b.endswith(f"] - {a}")
             or a == f"INFO: {b}"]  # fmt: skip
    assert not twice, twice[:5]
    for noise in ("GPU available", "Tip:", "exists and is not empty", "deprecated",
                  "Creating initial MLflow database", "Experiment with name"):  # fmt: skip
        assert noise not in text, noise
    assert any(ln.startswith("training CompactResNet1d") and "epochs x" in ln for ln in lines), (
        lines[:40])  # fmt: skip
    assert any("Total Flops" in ln and not ln.startswith("0 ") for ln in lines)
    assert "Test metrics (best checkpoint):" in text and "(95 % CI" in text


def test_missing_dataset_root_fails_fast(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    run = ecgx("train", "dataset=ptbxl", *_isolated(tmp_path, tmp_path / "no-such-ptbxl"))
    assert run.returncode != 0
    assert "no-such-ptbxl" in run.stderr
    assert time.perf_counter() - t0 < 60


def test_unknown_option_and_wrong_key_fail_fast(tmp_path: Path) -> None:
    run = ecgx("train", "model=resnet9000")
    assert run.returncode != 0 and "resnet9000" in run.stderr and "compact_resnet" in run.stderr
    run = ecgx("train", "model=compact_resnt", "debug=smoke")
    assert "did you mean model=compact_resnet?" in run.stderr and "Traceback" not in run.stderr
    run = ecgx("train", "trainer.max_epoks=3")
    assert run.returncode != 0 and "max_epoks" in run.stderr


def test_unreachable_tracking_server_fails_before_data(tmp_path: Path) -> None:
    run = ecgx("train", *_isolated(tmp_path, tmp_path / "never-read"),
               "tracking_uri=http://127.0.0.1:9")  # fmt: skip
    assert run.returncode != 0
    assert "127.0.0.1:9" in run.stderr and "unreachable" in run.stderr
    assert not (tmp_path / "never-read").exists()


def test_data_inspect_prints_splits_and_writes_labels(tmp_path: Path, synthetic_root: Path) -> None:
    out = tmp_path / "labels.csv"
    run = ecgx("data", "inspect", f"dataset.root={synthetic_root}",
               f"paths.cache_dir={tmp_path / 'cache'}", "--output", str(out))  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert "classes (5): CD, HYP, MI, NORM, STTC" in run.stdout
    import pandas as pd

    table = pd.read_csv(out, dtype={"record_id": str})
    assert list(table.columns) == ["record_id", "split", "CD", "HYP", "MI", "NORM", "STTC"]
    counts = table["split"].value_counts()
    assert (
        f"records {counts['train']:>5} {counts['val']:>4} {counts['test']:>5}".split()
        == [line for line in run.stdout.splitlines() if line.startswith("records")][0].split()
    )
    db = pd.read_csv(synthetic_root / "ptbxl_database.csv")
    fold = dict(zip(db["ecg_id"].astype(str), db["strat_fold"]))
    assert {fold[r] for r in table.loc[table["split"] == "test", "record_id"]} == {10}
