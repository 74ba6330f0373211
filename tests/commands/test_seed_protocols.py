"""Seed protocols reached from config: extra model inputs (SE-ResNet18's demographics) fed from
the data and from file headers, test-time windows, thresholds that travel with a checkpoint."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from ecgx.commands.evaluate import evaluate_run
from ecgx.commands.predict import RunPipeline, predict_run, read_file
from ecgx.commands.train import train
from ecgx.tracking.runs import load_checkpoint, load_run, resolve_checkpoint
from ecgx.training.windows import SlidingWindows
from tests.conftest import SAMPLES

RESAMPLE_100 = "transform.offline=[{_target_:ecgx.transforms.signal.Resample,fs:100}]"
CINC = SAMPLES / "cinc2020_cpsc"


def _run(cfg) -> tuple[MlflowClient, str, dict[str, float]]:
    metrics = train(cfg)
    client = MlflowClient(cfg.tracking_uri)
    experiment = client.get_experiment_by_name(cfg.experiment_name).experiment_id
    (run,) = client.search_runs([experiment])
    return client, run.info.run_id, metrics


def _labelled_by_sex(synthetic_root: Path, root: Path) -> Path:
    """The synthetic set with every woman's record NORM and every man's MI (a copy of the table,
    the signals linked): a task only the demographics can solve."""
    root.mkdir()
    for name in ("records100", "scp_statements.csv"):
        (root / name).symlink_to(synthetic_root / name)
    table = pd.read_csv(synthetic_root / "ptbxl_database.csv")
    table["scp_codes"] = np.where(table["sex"] == 1, "{'NORM': 100.0}", "{'IMI': 100.0}")
    table.to_csv(root / "ptbxl_database.csv", index=False)
    return root


def _header_sex(hea: Path) -> int | None:
    match = re.search(r"^#Sex:\s*(\w+)", hea.read_text(), re.MULTILINE)
    return {"male": 0, "female": 1}.get(match.group(1).lower()) if match else None


@pytest.mark.slow
def test_demographics_reach_the_model_from_data_and_headers(
    compose_train, synthetic_root: Path, tmp_path: Path
) -> None:
    root = _labelled_by_sex(synthetic_root, tmp_path / "by-sex")
    cfg = compose_train(
        "debug=smoke", f"dataset.root={root}", "experiment_name=demographics", RESAMPLE_100,
        "model._target_=tests.helpers.models.DemographicsOnly", "module.optimizer.lr=0.1",
        "trainer.max_epochs=4", "callbacks.early_stopping=null",
    )  # fmt: skip
    client, run_id, metrics = _run(cfg)
    # Only the sex flags carry the label, and the model sees nothing else.
    assert metrics["test/macro_auroc"] > 0.99
    params = client.get_run(run_id).data.params
    assert params["data/n_missing_sex"] == "0" and "data/n_missing_age" in params

    if not CINC.is_dir():
        pytest.skip(f"no real CinC samples under {CINC}")
    records = tmp_path / "cinc"
    records.mkdir()
    heads = [h for h in sorted(CINC.glob("*.hea")) if _header_sex(h) is not None][:6]
    for hea in heads:
        shutil.copy(hea, records)
        shutil.copy(hea.with_suffix(".mat"), records)
    assert {_header_sex(h) for h in heads} == {0, 1}
    by_run = predict_run(
        compose_train(
            f"run_id={run_id}",
            f"input={records}",
            f"output={tmp_path / 'run.csv'}",
            config="predict",
        )
    ).table
    by_run = by_run.set_index("record_id")
    for hea in heads:  # the header's #Sex decides, as the task was built
        norm, mi = by_run.loc[hea.stem, ["prob_NORM", "prob_MI"]]
        assert (norm > mi) == (_header_sex(hea) == 1), hea.name

    # A bare checkpoint (no run id, no config file) predicts exactly as the run: its config and
    # validation-tuned thresholds travel inside it.
    ckpt = resolve_checkpoint(run_id, cfg.tracking_uri)
    bare = predict_run(
        compose_train(
            f"checkpoint={ckpt}",
            f"input={records}",
            f"output={tmp_path / 'bare.csv'}",
            config="predict",
        )
    )
    assert bare.threshold_source == "checkpoint"
    logged = client.get_run(run_id).data.metrics
    names = bare.table.filter(like="prob_").columns.str.removeprefix("prob_")
    assert bare.thresholds == pytest.approx([logged[f"test/threshold_{n}"] for n in names])
    pd.testing.assert_frame_equal(bare.table.set_index("record_id").drop(columns="file"),
                                  by_run.drop(columns="file"))  # fmt: skip


def _spike_detector() -> torch.nn.Module:
    """A logit that is high only where a window holds a tall spike on lead II."""

    class Spike(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x[:, 1].amax(-1, keepdim=True) - 5.0) * 4.0

    return Spike()


def test_windows_find_what_the_centre_crop_misses() -> None:
    rng = np.random.default_rng(0)
    x = torch.zeros(20, 12, 1000)
    where = rng.choice(np.r_[0:370, 630:1000], size=20)  # outside the centre 2.5 s
    x[torch.arange(20), 1, torch.from_numpy(where)] = 10.0
    net = _spike_detector()
    outputs = lambda w: torch.sigmoid(net(w))  # noqa: E731
    centre = outputs(x[..., 375:625])
    found = SlidingWindows(250, 125, reduce="max").score(outputs, x)
    assert (centre < 0.01).all() and (found > 0.99).all()
    # Mean over windows dilutes a spike seen by one or two of the seven windows.
    assert (SlidingWindows(250, 125, reduce="mean").score(outputs, x) < 0.5).all()
    # Records of other lengths in one padded batch score as each alone: the padding is unseen.
    lengths = torch.tensor([1000, 700, 260])
    padded = x[:3].clone()
    padded[1, :, 700:] = 99.0  # anything past a record's end must not be read
    padded[2, :, 260:] = 99.0
    together = SlidingWindows(250, 125).score(outputs, padded, lengths)
    alone = torch.cat([SlidingWindows(250, 125).score(outputs, x[i : i + 1, :, :n])
                       for i, n in enumerate(lengths.tolist())])  # fmt: skip
    torch.testing.assert_close(together, alone)
    assert SlidingWindows(250, 125).spans(1000)[-1] == (750, 1000)
    assert SlidingWindows(250, 200).spans(1000)[-1] == (750, 1000)  # the end is always scored


@pytest.mark.slow
def test_test_windows_from_config_in_test_eval_and_predict(compose_train, tmp_path: Path) -> None:
    windows = "{_target_:ecgx.training.windows.SlidingWindows,length:250,stride:125,reduce:max}"
    cfg = compose_train("debug=smoke", "experiment_name=windows", "transform=random_crop",
                        RESAMPLE_100, f"module.test_windows={windows}")  # fmt: skip
    assert cfg.data.test_windows is not None  # the datamodule gives the test split uncropped
    client, run_id, metrics = _run(cfg)

    # ecgx eval re-tests the same way: the run's test metrics again.
    result = evaluate_run(compose_train(f"run_id={run_id}", "log=false", config="eval"))
    assert result.metrics["test/macro_auroc"] == pytest.approx(metrics["test/macro_auroc"])

    if not CINC.is_dir():
        pytest.skip(f"no real CinC samples under {CINC}")
    heads = sorted(CINC.glob("*.hea"))[:4]
    records = tmp_path / "cinc"
    records.mkdir()
    for hea in heads:
        shutil.copy(hea, records)
        shutil.copy(hea.with_suffix(".mat"), records)
    table = predict_run(
        compose_train(
            f"run_id={run_id}", f"input={records}", f"output={tmp_path / 'p.csv'}", config="predict"
        )
    ).table
    run_cfg, ckpt = load_run(compose_train(f"run_id={run_id}", config="predict"))
    pipeline = RunPipeline(run_cfg, load_checkpoint(ckpt))
    names = pipeline.class_names
    lengths = set()
    for hea in heads:  # 10-60 s records: every 2.5 s window of the whole record, the maximum
        x, _, _ = pipeline.inputs(read_file(records / hea.name))
        lengths.add(x.shape[-1])
        with torch.no_grad():
            windows = torch.from_numpy(x).unfold(-1, 250, 125).permute(1, 0, 2)
            tail = torch.from_numpy(x[None, :, -250:])
            want = torch.sigmoid(pipeline.net(torch.cat([windows, tail]))).amax(0).numpy()
        got = table.set_index("record_id").loc[hea.stem, [f"prob_{n}" for n in names]]
        np.testing.assert_allclose(got.to_numpy(dtype=float), want, atol=1e-5)
    assert len(lengths) > 1  # records of several lengths, none cropped to 2.5 s
