"""experiments/cpsc2018/: smoke runs on the CPSC 2018 recordings, and the sweeps they define."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from ecgx.commands.experiment_files import read_experiment
from ecgx.formats.record import LEADS
from tests.conftest import ROOT
from tests.experiments.conftest import EXPERIMENTS, experiment_names, sweep_jobs

# ResNet34-1D at 15,000 samples is the heavy part of a smoke run: fewer, smaller batches.
LIGHT = ("data.batch_size=4", "data.eval_batch_size=8", "trainer.limit_train_batches=1",
         "trainer.limit_val_batches=1", "trainer.limit_test_batches=1")  # fmt: skip
# The SHAP run explains 2 records against 2 background records with 2 samples each.
LIGHT_EXPLAIN = ("explainer.records=2", "explainer.background=2", "explainer.plots=1",
                 "explainer.method.n_samples=2", "explainer.sensitivity_records=0",
                 "explainer.faithfulness_steps=4")  # fmt: skip


def _standalone(name: str) -> bool:
    return not read_experiment(name).missing  # e.g. a fine-tune needs init_from


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in experiment_names("cpsc2018") if _standalone(n)])
def test_experiment_runs(run_experiment, name: str) -> None:
    text = (EXPERIMENTS / f"{name}.yaml").read_text()
    extra = () if "classical" in name else LIGHT
    if "explainer" in text:
        extra += LIGHT_EXPLAIN
    metrics = run_experiment(name, *extra)
    assert "test/macro_auroc" in metrics
    assert "test/macro_f1_tuned" in metrics  # the seed's F1 at thresholds tuned on val
    if "explainer" in text:
        assert any(k.startswith("explain/gradient_shap/") for k in metrics), sorted(metrics)


def _compose(job: list[str]):
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=job)


def test_single_lead_sweep_covers_every_lead() -> None:
    jobs = sweep_jobs("cpsc2018/single_lead")
    leads = [list(_compose(j).transform.offline[0].leads) for j in jobs]
    assert leads == [[lead] for lead in LEADS]


def test_lead_subset_and_classical_sweep() -> None:
    cfg = _compose(["experiment=cpsc2018/lead_subset_i_avr_v5"])
    assert list(cfg.transform.offline[0].leads) == ["I", "aVR", "V5"]
    assert cfg.transform.online[-1].length == 15000  # the seed's crop after lead selection
    models = [_compose(j).model.estimator for j in sweep_jobs("cpsc2018/classical_baselines")]
    kinds = [m.get("estimator", m)._target_.rsplit(".", 1)[-1] for m in models]
    assert kinds == ["LogisticRegression", "RandomForestClassifier", "MLPClassifier",
                     "HistGradientBoostingClassifier"]  # fmt: skip
