"""experiments/xai4ecg/: the XAI4ECG study (spec 3) in smoke mode: the three classifiers, the
T-wave-amplitude regression on PTB-XL+-style features, the four attribution methods, the glocal
analysis and TCAV for LVH / CLBBB / MI concepts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import DictConfig

from ecgx.commands.experiment_files import experiment_overrides
from ecgx.explain.delineation import SEGMENTS
from ecgx.formats.record import LEADS
from tests.experiments.conftest import experiment_names

STUDY = "xai4ecg"
# The explainers on a few records (faithfulness and sensitivity re-run the model per step), TCAV
# with 2 random sets and one layer: each smoke run stays at seconds.
EXPLAIN_SMOKE = ("explainer.records=8", "explainer.plots=1", "explainer.faithfulness_steps=4",
                 "explainer.sensitivity_records=2", "explainer.sensitivity_samples=2")  # fmt: skip
TCAV_SMOKE = ("explainer.n_random_sets=2", "explainer.concept_size=10",
              "explainer.random_pool=40", "explainer.layers=[features.relu3]")  # fmt: skip
# The small synthetic set has no CLBBB record in test fold 10: score the training records.
DATA_SMOKE = {"tcav_clbbb": ("explainer.split=train",)}


@pytest.fixture(scope="session")
def unig_features(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PTB-XL+ Uni-G-style table for the synthetic set: ecg_id and T_Amp_<lead> per lead,
    each the largest |amplitude| of that lead in the last third of every R-R cycle stand-in
    (the second half of each second), so the targets follow the signals."""
    from ecgx.formats.wfdb_format16 import read_record

    db = pd.read_csv(synthetic_root / "ptbxl_database.csv")
    rows = []
    for ecg_id, path in zip(db["ecg_id"], db["filename_lr"], strict=True):
        signal, fs, _ = read_record(synthetic_root / path)
        halves = signal.reshape(signal.shape[0], -1, int(fs))[:, :, int(fs) // 2 :]
        rows.append([ecg_id, *np.abs(halves).max(-1).mean(-1)])
    table = pd.DataFrame(rows, columns=["ecg_id", *(f"T_Amp_{lead}" for lead in LEADS)])
    table.loc[0, "T_Amp_V2"] = np.nan  # a record without a target value is left out
    path = tmp_path_factory.mktemp("ptbxl-plus") / "unig_features.csv"
    table.to_csv(path, index=False)
    return path


def _overrides(name: str, features: Path) -> tuple[str, ...]:
    stem = name.split("/", 1)[1]
    extra: tuple[str, ...] = ()
    if stem.startswith("twave_regression"):
        extra = (f"dataset.features_csv={features}",)
    elif stem.startswith("tcav"):
        extra = TCAV_SMOKE
    elif stem.startswith(("attr_", "glocal")):
        extra = EXPLAIN_SMOKE
    return (*extra, *DATA_SMOKE.get(stem, ()))


def test_folder_multirun_lists_every_file(compose_experiment: Callable[..., DictConfig]) -> None:
    (expanded,) = experiment_overrides([f"experiment=glob({STUDY}/*)"])
    assert expanded == f"experiment={','.join(experiment_names(STUDY))}"
    cfg = compose_experiment(f"{STUDY}/lenet", smoke=False)
    # The seed's protocol: raw mV, 250-sample crops only, AdamW 1e-3 / 1e-3, batch 128, 100 epochs
    assert cfg.transform.normalize is None
    assert [t.length for t in cfg.transform.online] == [250]
    assert cfg.module.optimizer._target_ == "torch.optim.AdamW" and cfg.module.scheduler is None
    assert (cfg.data.batch_size, cfg.trainer.max_epochs) == (128, 100)
    tcav = compose_experiment(f"{STUDY}/tcav_lvh", smoke=False).explainer
    assert tcav.target == "LVH" and set(tcav.concepts) == {"voltage_criteria", "age75", "female"}


@pytest.mark.slow
@pytest.mark.parametrize("name", experiment_names(STUDY))
def test_experiment_runs(
    compose_experiment: Callable[..., DictConfig],
    run_experiment: Callable[..., dict],
    unig_features: Path,
    name: str,
) -> None:
    metrics = run_experiment(name, *_overrides(name, unig_features))
    explainer = compose_experiment(name, *_overrides(name, unig_features)).explainer
    if "twave_regression" in name:
        assert {"test/r2", "test/mae", "test/r2_T_Amp_V2"} <= set(metrics)
        assert "test/macro_auroc" not in metrics
    else:
        assert "test/macro_auroc" in metrics
    if explainer.get("concepts"):
        for concept in explainer.concepts:
            assert f"explain/tcav/{concept}/features.relu3/score" in metrics, concept
    elif explainer.get("method"):
        assert f"explain/{explainer.name}/seconds_per_record" in metrics
        shares = [metrics[f"explain/{explainer.name}/segment_share_{s}"] for s in SEGMENTS]
        assert np.isclose(np.nansum(shares), 1.0)
