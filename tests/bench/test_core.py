"""The report every suite writes into: ratios, targets, files, MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from ecgx.bench.core import Figure, Report, rates, repeat
from ecgx.commands.bench import compose_bench, log_report, run_bench, selected_suites
from ecgx.errors import ConfigValueError


def _report() -> Report:
    report = Report({"cpu": "test cpu", "cores": 2})
    report.add([
        Figure("ingest", "seed way", "records/s", [100.0, 120.0, 110.0]),
        Figure("ingest", "ecgx", "records/s", [600.0, 500.0, 550.0], ratio_to="seed way",
               target=">= 5"),
        Figure("ingest", "ecgx vs floor", "records/s", [550.0], ratio_to="ecgx", target=">= 2"),
        Figure("memory", "peak RSS", "GB", [2.5], target="<= 3", note="21,837 records"),
    ])  # fmt: skip
    return report


def test_ratio_uses_medians_and_target_is_checked() -> None:
    report = _report()
    ecgx = report.get("ingest", "ecgx")
    assert (ecgx.min, ecgx.median, ecgx.max) == (500.0, 550.0, 600.0)
    assert ecgx.ratio == pytest.approx(5.0) and ecgx.met is True
    assert report.get("ingest", "ecgx vs floor").met is False  # 1.0 < 2
    assert report.get("memory", "peak RSS").met is True  # no baseline: the median is checked


def test_unknown_baseline_and_bad_target_are_named() -> None:
    with pytest.raises(ValueError, match="'nope' not measured"):
        Report({}).add([Figure("s", "a", "x", [1.0], ratio_to="nope")])
    with pytest.raises(ValueError, match="'~ 3'"):
        Report({}).add([Figure("s", "a", "x", [1.0], target="~ 3")])


def test_json_round_trip_and_markdown(tmp_path: Path) -> None:
    report = _report()
    json_path, md_path = report.write(tmp_path)
    again = Report.load(json_path)
    assert [f.as_dict() for f in again.figures] == [f.as_dict() for f in report.figures]
    text = md_path.read_text()
    assert "test cpu" in text and "## ingest" in text and "## memory" in text
    assert "| ecgx | 550 | 500 | 600 | records/s | 5.00× seed way | >= 5 | met |" in text
    assert "**missed**" in text and "21,837 records" in text
    data = json.loads(json_path.read_text())
    assert data["figures"][1]["median"] == 550.0


def test_repeat_and_rates() -> None:
    calls = []
    times = repeat(lambda: calls.append(1), repeats=3, warmup=2)
    assert len(times) == 3 and len(calls) == 5 and all(t >= 0 for t in times)
    assert rates(10, [2.0, 5.0]) == [5.0, 2.0]


def test_suite_selection() -> None:
    assert selected_suites(compose_bench([])) == ["ingest", "load", "train", "explain", "sweep",
                                                  "memory", "deploy", "evaluation"]  # fmt: skip
    assert selected_suites(compose_bench(["suite=train"])) == ["train"]
    with pytest.raises(ConfigValueError, match="unknown"):
        selected_suites(compose_bench(["suite=[train,speed]"]))
    with pytest.raises(ConfigValueError, match="device="):
        run_bench(compose_bench(["suite=[]", "device=tpu"]))


def test_report_logged_to_mlflow(tmp_path: Path) -> None:
    report = _report()
    report.write(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    rid = log_report(report, tmp_path, uri, "bench")
    client = MlflowClient(uri)
    run = client.get_run(rid)
    assert run.data.metrics["ingest/ecgx"] == 550.0
    assert run.data.metrics["ingest/ecgx/ratio"] == pytest.approx(5.0)
    assert run.data.params["machine/cpu"] == "test cpu"
    assert {a.path for a in client.list_artifacts(rid)} == {"bench.json", "bench.md"}


def test_empty_run_writes_files(tmp_path: Path) -> None:
    report, folder = run_bench(compose_bench(["suite=[]", f"output_dir={tmp_path}"]))
    assert report.figures == [] and (folder / "bench.json").is_file()
