"""The CPSC seed's classical baselines: expert features and their run through ``ecgx train``."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import pywt
from mlflow.tracking import MlflowClient
from scipy.stats import entropy
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier

from ecgx.commands.train import train
from ecgx.errors import ConfigValueError
from ecgx.formats.record import LEADS
from ecgx.models.catalog import classical_names, model_names
from ecgx.models.classical import FeatureClassifier, expert_features, feature_names


def _stats(v: np.ndarray) -> list[float]:
    return [np.percentile(v, 5), np.percentile(v, 25), np.percentile(v, 75),
            np.percentile(v, 95), np.median(v), v.mean(), v.std(), v.var()]  # fmt: skip


def test_expert_features_follow_the_seed_layout() -> None:
    rng = np.random.default_rng(0)
    x = np.round(rng.normal(size=(12, 3000)), 2)  # rounded: repeated values, a real histogram
    feats = expert_features(x)
    assert feats.shape == (636,)  # 53 per lead, as the seed
    assert len(feature_names(LEADS)) == 636
    # Lead 4 (aVR) computed independently: raw statistics, then per band entropy + statistics.
    lead = x[3]
    expected = _stats(lead)
    for coeffs in pywt.wavedec(lead, "db10", level=4):
        _, counts = np.unique(coeffs, return_counts=True)
        expected += [entropy(counts) / 10.0, *_stats(coeffs)]
    np.testing.assert_allclose(feats.reshape(12, 53)[3], expected, rtol=1e-12)
    names = feature_names(LEADS)
    assert names[3 * 53] == "aVR/p5" and names[3 * 53 + 8] == "aVR/cA4_entropy"
    assert names[-1] == "V6/cD1_var"


def test_expert_features_reject_a_flat_vector() -> None:
    with pytest.raises(ValueError, match=r"\(leads, samples\)"):
        expert_features(np.zeros(1000))


def test_classical_configs_are_listed_apart_from_torch_models() -> None:
    assert {"classical_lr", "classical_rf", "classical_mlp", "classical_gbm"} <= set(
        classical_names()
    )
    assert not set(classical_names()) & set(model_names())


def test_estimator_without_predict_proba_is_a_config_error() -> None:
    with pytest.raises(ConfigValueError, match="predict_proba"):
        FeatureClassifier(12, 5, estimator=object())


def test_multiclass_probabilities_keep_classes_absent_from_train() -> None:
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(40, 6))
    y = np.zeros((40, 3), dtype=np.float32)
    y[np.arange(40), rng.integers(0, 2, 40)] = 1  # class 2 never appears in train
    model = FeatureClassifier(12, 3, estimator=LogisticRegression()).fit(feats, y, "multiclass")
    proba = model.predict_proba(feats, "multiclass")
    assert proba.shape == (40, 3)
    np.testing.assert_allclose(proba.sum(1), 1.0)
    assert (proba[:, 2] == 0).all()
    with pytest.raises(ConfigValueError, match="regression"):
        model.fit(feats, y, "regression")


def test_single_output_estimator_on_multilabel_is_a_clear_error() -> None:
    rng = np.random.default_rng(2)
    feats = rng.normal(size=(30, 4))
    y = (rng.random((30, 3)) > 0.5).astype(np.float32)
    model = FeatureClassifier(12, 3, estimator=OneVsRestClassifier(LogisticRegression()))
    assert model.fit(feats, y, "multilabel").predict_proba(feats, "multilabel").shape == (30, 3)
    lone = FeatureClassifier(12, 3, estimator=LogisticRegression())
    lone.estimator.fit(feats, y[:, 0])
    with pytest.raises(ConfigValueError, match="OneVsRestClassifier"):
        lone.predict_proba(feats, "multilabel")


@pytest.mark.slow
@pytest.mark.parametrize("model", ["classical_lr", "classical_mlp"])
def test_classical_baseline_runs_through_ecgx_train(compose_train, model, tmp_path) -> None:
    cfg = compose_train(f"model={model}", "experiment_name=classical-test")
    metrics = train(cfg)
    # The synthetic classes differ in waveform shape, which amplitude statistics partly see.
    assert metrics["test/macro_auroc"] > 0.6
    client = MlflowClient(cfg.tracking_uri)
    exp = client.get_experiment_by_name("classical-test")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"
    for key in ("val/macro_auroc", "test/macro_auroc", "test/macro_f1", "test/auroc_NORM"):
        assert key in run.data.metrics, key
    assert run.data.params["choice/model"] == model
    logged = {a.path for folder in ("", "model", "predictions", "data")
              for a in client.list_artifacts(run.info.run_id, folder)}  # fmt: skip
    assert {"model/estimator.pkl", "predictions/test_predictions.csv", "data/splits.csv"} <= logged
    local = client.download_artifacts(run.info.run_id, "model/estimator.pkl", str(tmp_path))
    restored = pickle.loads(Path(local).read_bytes())
    assert isinstance(restored, FeatureClassifier) and restored.num_classes == 5
