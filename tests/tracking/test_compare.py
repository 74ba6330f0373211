"""``ecgx compare`` on runs fabricated in a temporary MLflow store (no training): groups, means,
stds and counts by hand, filters, the report formats, and report runs left out of comparisons."""

from __future__ import annotations

import base64
import json
import re
import statistics
from pathlib import Path

import pandas as pd
import pytest
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from ecgx.commands.compare import main
from ecgx.tracking.compare import compare_table, format_table, search_runs, select_runs

# (experiment, sweep, model, seed, test/macro_auroc, status, extra tags); ecgnet and imle_net
# carry cost params, the others do not.
RUNS = [
    ("study-a", "sw1", "ecgnet", 0, 0.80, "FINISHED", {}),
    ("study-a", "sw1", "ecgnet", 1, 0.82, "FINISHED", {}),
    ("study-a", "sw1", "ecgnet", 2, 0.87, "FINISHED", {}),
    ("study-a", "sw1", "imle_net", 0, 0.90, "FINISHED", {}),
    ("study-a", "sw1", "imle_net", 1, 0.86, "FINISHED", {}),
    ("study-a", "sw2", "compact_resnet", 0, 0.70, "FINISHED", {"note": "baseline"}),
    ("study-b", None, "ecgnet", 0, 0.50, "FINISHED", {}),
    ("study-b", None, "ecgnet", 1, 0.55, "FAILED", {}),
]
COST = {"ecgnet": (100_000, 2.0e8, 0.4, 1.5), "imle_net": (3_000_000, 1.5e10, 11.5, 20.0)}


def _fabricate(uri: str, rows: list[tuple]) -> MlflowClient:
    """Runs as ``ecgx train`` logs them: overrides/sweep tags, choice/ params, test/ metrics."""
    client = MlflowClient(uri)
    for exp, sweep, model, seed, auroc, status, tags in rows:
        found = client.get_experiment_by_name(exp)
        exp_id = found.experiment_id if found else client.create_experiment(exp)
        run_id = client.create_run(exp_id, run_name=f"{model}-s{seed}").info.run_id
        params = {"choice/model": model, "seed": str(seed), "data/classes": "NORM,MI",
                  "module.optimizer.lr": "0.001"}  # fmt: skip
        if model in COST:
            keys = ("parameters", "flops_per_sample", "checkpoint_mb", "inference_ms_per_record")
            params.update({f"cost/{k}": str(v) for k, v in zip(keys, COST[model])})
        run_tags = {"ecgx.overrides": json.dumps([f"model={model}", f"seed={seed}"]), **tags}
        if sweep:
            run_tags["ecgx.sweep_id"] = sweep
        metrics = {"test/macro_auroc": auroc, "test/fmax_ptbxl": auroc - 0.1,
                   "test/loss": 1 - auroc, "test/auroc_NORM": auroc, "test/auroc_MI": auroc,
                   "test/f1_tuned_MI": 0.5, "test/macro_auroc_ci_low": auroc - 0.05,
                   "test/macro_auroc_ci_high": auroc + 0.03}  # fmt: skip
        client.log_batch(
            run_id,
            metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()],
            params=[Param(k, v) for k, v in params.items()],
            tags=[RunTag(k, v) for k, v in run_tags.items()],
        )
        client.set_terminated(run_id, status)
    return client


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One store for the read-only tests (creating one costs seconds of migrations)."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    _fabricate(uri, RUNS)
    return uri


def _auroc(model: str, exp: str = "study-a") -> list[float]:
    return [r[4] for r in RUNS if r[2] == model and r[0] == exp and r[5] == "FINISHED"]


def test_groups_means_stds_counts_by_hand(store: str) -> None:
    table = compare_table(search_runs(store, ["study-a"], sweep="sw1"))
    # Grouped by what varies except the seed; best first by the first metric.
    assert list(table.columns[:2]) == ["model", "n"]
    assert list(table["model"]) == ["imle_net", "ecgnet"]  # 0.88 > 0.83
    assert list(table["n"]) == [2, 3]
    for _, row in table.iterrows():
        values = _auroc(row["model"])
        assert row["test/macro_auroc mean"] == pytest.approx(statistics.mean(values))
        assert row["test/macro_auroc std"] == pytest.approx(statistics.stdev(values))
        assert row["test/loss mean"] == pytest.approx(1 - statistics.mean(values))
    # Headline first, loss last; per-class metrics and bootstrap bounds are not defaults.
    metrics = [c.removesuffix(" mean") for c in table.columns if c.endswith(" mean")]
    assert metrics == ["test/macro_auroc", "test/fmax_ptbxl", "test/loss"]


def test_losses_sort_ascending_and_group_by_two_keys(store: str) -> None:
    runs = search_runs(store, ["study-a"], sweep="sw1")
    table = compare_table(runs, ["model", "seed"], ["test/loss"])
    assert len(table) == 5 and set(table["n"]) == {1}
    assert list(table["test/loss mean"]) == sorted(table["test/loss mean"])
    assert table["test/loss std"].isna().all()  # one run per group: no spread
    assert table.iloc[0]["model"] == "imle_net" and table.iloc[0]["seed"] == "0"


def test_interval_of_a_group_is_its_runs_own_or_over_seeds(store: str) -> None:
    runs = search_runs(store, ["study-a"], sweep="sw1")
    # One run per group: the bootstrap interval that run logged over its test records.
    single = compare_table(runs, ["model", "seed"], ["test/macro_auroc"])
    for _, row in single.iterrows():
        (auroc,) = [r[4] for r in RUNS if r[2] == row["model"] and str(r[3]) == row["seed"]
                    and r[1] == "sw1"]  # fmt: skip
        assert row["test/macro_auroc ci_low"] == pytest.approx(auroc - 0.05)
        assert row["test/macro_auroc ci_high"] == pytest.approx(auroc + 0.03)
    # Several seeds: the Student-t interval of their mean (t(0.975, 2) = 4.303 for 3 runs).
    pooled = compare_table(runs, ["model"], ["test/macro_auroc"]).set_index("model")
    values = _auroc("ecgnet")
    half = 4.302653 * statistics.stdev(values) / 3**0.5
    assert pooled.loc["ecgnet", "test/macro_auroc ci_low"] == pytest.approx(
        statistics.mean(values) - half, abs=1e-5
    )
    assert pooled.loc["ecgnet", "test/macro_auroc ci_high"] == pytest.approx(
        statistics.mean(values) + half, abs=1e-5)  # fmt: skip


def test_filters_experiment_sweep_tag_param_status(store: str) -> None:
    assert len(search_runs(store)) == 7  # every finished run of every experiment
    assert len(search_runs(store, ["study-b"])) == 1
    assert len(search_runs(store, ["study-b"], status="any")) == 2
    assert len(search_runs(store, ["study-a"], sweep="sw2")) == 1
    runs = search_runs(store, ["study-a"])
    assert len(runs) == 6
    assert [r.info.run_name for r in select_runs(runs, tags={"note": ["baseline"]})] == [
        "compact_resnet-s0"
    ]
    ecgnet = select_runs(runs, params={"model": ["ecgnet"]})
    assert sorted(r.info.run_name for r in ecgnet) == ["ecgnet-s0", "ecgnet-s1", "ecgnet-s2"]
    # Repeating a key means "or"; a number matches however it is written.
    both = select_runs(runs, params={"seed": ["0", "2"], "module.optimizer.lr": ["1e-3"]})
    assert len(both) == 4


def test_cli_filters_and_markdown(store: str, capsys: pytest.CaptureFixture) -> None:
    main(["experiment=study-a,study-b", "param.seed=0", "tag.note=baseline", "format=markdown",
          f"tracking_uri={store}"])  # fmt: skip
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("|")]
    assert lines[0] == ("| group | n | test/macro_auroc | test/fmax_ptbxl | test/loss "
                        "| test/macro_auroc 95% CI |")  # fmt: skip
    # No spread for one run; its interval is its own bootstrap over test records.
    assert lines[2] == "| all | 1 | 0.7000 | 0.6000 | 0.3000 | [0.6500, 0.7300] |"

    main(["--experiment", "study-a", "--sweep", "sw1", "model=ecgnet", "group_by=[model]",
          "metrics=test/macro_auroc", "format=markdown", "--tracking-uri", store])  # fmt: skip
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("|")]
    values = _auroc("ecgnet")
    m, s = statistics.mean(values), statistics.stdev(values)
    assert lines[0].startswith("| model | n | test/macro_auroc |")
    assert lines[2].startswith(f"| ecgnet | 3 | {m:.4f} ± {s:.4f} |")

    main(["experiment=study-a", "metrics=test/macro_auroc", "sort=group", "format=markdown",
          f"tracking_uri={store}"])  # fmt: skip
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("|")]
    assert [ln.split(" | ")[0].strip("| ") for ln in lines[2:]] == [
        "compact_resnet", "ecgnet", "imle_net"
    ]  # fmt: skip


def test_csv_output_and_cost_columns(store: str, tmp_path: Path) -> None:
    out = tmp_path / "table.csv"
    main(["experiment=study-a", "sweep=sw1", "format=csv", f"output={out}",
          f"tracking_uri={store}"])  # fmt: skip
    table = pd.read_csv(out).set_index("model")
    assert table.loc["ecgnet", "n"] == 3
    assert table.loc["ecgnet", "test/macro_auroc mean"] == pytest.approx(0.83)
    assert table.loc["imle_net", "test/macro_auroc std"] == pytest.approx(
        statistics.stdev([0.90, 0.86])
    )
    assert table.loc["imle_net", "cost/parameters"] == 3_000_000
    assert table.loc["ecgnet", "cost/inference_ms_per_record"] == pytest.approx(1.5)
    shown = format_table(compare_table(search_runs(store, ["study-a"], sweep="sw1")))
    assert "3,000,000" in shown and "15.000" in shown  # parameters, GFLOPs
    # No cost logged, no cost columns.
    plain = compare_table(search_runs(store, ["study-a"], sweep="sw2"))
    assert not [c for c in plain.columns if c.startswith("cost/")]


def test_study_layout_rows_are_models(store: str, capsys: pytest.CaptureFixture) -> None:
    main(["experiment=study-a", "layout=study", "metrics=test/macro_auroc,test/fmax_ptbxl",
          "format=markdown", f"tracking_uri={store}"])  # fmt: skip
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("|")]
    assert lines[0].startswith("| model | n | macro_auroc | fmax_ptbxl |")
    assert [ln.split(" | ")[0].strip("| ") for ln in lines[2:]] == [
        "imle_net", "ecgnet", "compact_resnet"
    ]  # fmt: skip


def test_html_report_is_self_contained_and_names_every_group(store: str, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    main(["experiment=study-a", "format=html", f"output={out}", f"tracking_uri={store}"])
    text = out.read_text()
    for group in ("ecgnet", "imle_net", "compact_resnet"):
        assert f'<td class="key">{group}</td>' in text
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    # One bar chart per default metric and the scatter against cost.
    assert len(images) == 4
    assert all(base64.b64decode(i).startswith(b"\x89PNG") for i in images)
    assert not re.search(r"(src|href)=\"(?!data:)", text)  # nothing fetched from elsewhere


def test_bad_keys_fail_naming_the_key(store: str) -> None:
    with pytest.raises(SystemExit, match="param filter key 'modle'.*did you mean model"):
        main(["experiment=study-a", "modle=ecgnet", f"tracking_uri={store}"])
    with pytest.raises(SystemExit, match="tag filter key 'nope'.*did you mean note"):
        main(["experiment=study-a", "tag.nope=1", f"tracking_uri={store}"])
    with pytest.raises(SystemExit, match="group_by key 'optimiser'"):
        main(["experiment=study-a", "group_by=optimiser", f"tracking_uri={store}"])
    with pytest.raises(SystemExit, match="metric 'test/macro_aurco'"):
        main(["experiment=study-a", "metrics=test/macro_aurco", f"tracking_uri={store}"])
    with pytest.raises(SystemExit, match="param filter key 'fromat'.*did you mean format"):
        main(["experiment=study-a", "fromat=csv", f"tracking_uri={store}"])
    with pytest.raises(SystemExit, match="status=DONE"):
        main(["status=DONE", f"tracking_uri={store}"])


def test_logged_report_run_is_excluded_later(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = _fabricate(uri, RUNS[:5])
    main(["experiment=study-a", "log=true", f"tracking_uri={uri}"])
    exp_id = client.get_experiment_by_name("study-a").experiment_id
    (report,) = [r for r in client.search_runs([exp_id]) if r.data.tags.get("ecgx.report")]
    assert report.info.run_name == "compare-report" and report.info.status == "FINISHED"
    files = {a.path for a in client.list_artifacts(report.info.run_id, "report")}
    assert files == {"report/compare.html", "report/compare.csv", "report/compare.md"}
    assert len(search_runs(uri, ["study-a"])) == 5  # the report run is no run to compare

    target = client.search_runs([exp_id], "attributes.run_name = 'ecgnet-s0'")[0]
    main(["experiment=study-a", f"log_to={target.info.run_id}", f"tracking_uri={uri}"])
    assert {a.path for a in client.list_artifacts(target.info.run_id, "report")} == files
    assert len(client.search_runs([exp_id])) == 6  # log_to adds no run


def test_model_cost_of_a_small_net() -> None:
    """What ``ecgx train`` logs as ``cost/*`` params, on a net small enough to count by hand."""
    from types import SimpleNamespace

    import torch

    from ecgx.training.cost import model_cost

    net = torch.nn.Sequential(torch.nn.Conv1d(12, 4, 3, bias=False), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 98, 5))  # fmt: skip
    record = torch.randn(12, 100)
    datamodule = SimpleNamespace(example_input=lambda: record.unsqueeze(0))
    cost = model_cost(net, datamodule)
    assert cost["cost/parameters"] == 12 * 4 * 3 + 4 * 98 * 5 + 5
    # 2 FLOPs per multiply-add: the convolution's and the linear layer's (bias adds not counted).
    assert cost["cost/flops_per_sample"] == 2 * (12 * 3 * 4 * 98 + 4 * 98 * 5)
    assert 0 < cost["cost/checkpoint_mb"] < 0.1
    # 32 records, fewer when the machine is so busy that 32 would not fit the time budget.
    assert cost["cost/inference_ms_per_record"] > 0 and 1 <= cost["cost/inference_batch"] <= 32
    assert net.training  # left in the mode it was given in
