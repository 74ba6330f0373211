"""Every option of every config group composes and instantiates; experiments compose."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf

from ecgx.data.datamodule import ECGDataModule
from ecgx.formats.record import LEADS
from ecgx.models.base import ECGModel
from ecgx.models.catalog import classical_names
from ecgx.models.classical import FeatureClassifier
from ecgx.transforms.signal import OfflineTransform, OnlineTransform
from tests.conftest import ROOT


def options(group: str) -> list[str]:
    # Files starting with "_" are shared settings other options include, not options.
    return sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml") if p.stem[0] != "_")


def experiments() -> list[str]:
    base = ROOT / "experiments"
    return sorted(str(p.relative_to(base).with_suffix("")) for p in base.rglob("*.yaml"))


def test_every_group_has_options() -> None:
    for group in ("dataset", "transform", "split", "model", "explainer", "trainer", "logger",
                  "callbacks", "paths", "hydra", "debug"):  # fmt: skip
        assert options(group), group


@pytest.mark.parametrize("name", options("model"))
def test_models_instantiate_and_run(compose_train, name: str) -> None:
    cfg = compose_train(f"model={name}")
    if name in classical_names():
        model = instantiate(cfg.model, in_channels=12, num_classes=5)
        assert isinstance(model, FeatureClassifier)
        assert hasattr(model.estimator, "predict_proba")
        return
    cls = get_class(cfg.model._target_)
    leads = cls.input_shape[0] if cls.input_shape[0] != 12 else 12
    small = {"image_size": [64, 64]} if leads != 12 else {}
    net = instantiate(cfg.model, in_channels=leads, num_classes=5, **small)
    assert isinstance(net, ECGModel)
    assert net.get_target_layer() is not None
    with torch.no_grad():
        out = net.eval()(torch.randn(2, leads, 64 * 64 if small else 1000))
    assert out.shape == (2, 5)


@pytest.mark.parametrize("name", options("explainer"))
def test_explainers_compose(compose_train, name: str) -> None:
    cfg = compose_train(f"explainer={name}")
    if name == "none":
        assert not cfg.explainer
        return
    assert cfg.explainer.name == name
    if name == "tcav":  # concepts instead of an attribution method
        assert cfg.explainer.concepts and cfg.explainer.target
        return
    method = instantiate(cfg.explainer.method)
    assert callable(method) and cfg.explainer.records > 0


@pytest.mark.parametrize("name", options("transform"))
def test_transforms_instantiate(compose_train, name: str) -> None:
    pipeline = instantiate(compose_train(f"transform={name}").transform)
    assert all(isinstance(t, OfflineTransform) for t in pipeline.offline)
    assert all(isinstance(t, OnlineTransform) for t in pipeline.online)
    x, fs = pipeline.apply_offline(torch.randn(12, 5000).numpy(), 500.0)
    assert x.ndim == 2 and x.shape[0] == len(pipeline.output_leads(LEADS)) and fs > 0


@pytest.mark.parametrize("name", options("dataset"))
def test_datasets_compose(compose_train, name: str) -> None:
    cfg = compose_train(f"dataset={name}")
    reader = instantiate(cfg.dataset)
    # The reader protocol (ecgx/formats/reader.py); signal_spec is valid after ensure().
    for method in ("ensure", "signal_spec", "metadata", "read", "labels"):
        assert callable(getattr(reader, method)), method
    dm = instantiate(cfg.data)
    assert isinstance(dm, ECGDataModule)


@pytest.mark.parametrize("name", options("split"))
def test_splits_instantiate(compose_train, name: str) -> None:
    cfg = compose_train(f"split={name}")
    for key in OmegaConf.missing_keys(cfg.split):  # required values (`???`) a user must give
        OmegaConf.update(cfg, key, "placeholder")
    assert callable(instantiate(cfg.split))


@pytest.mark.parametrize("name", options("trainer"))
def test_trainers_compose(compose_train, name: str) -> None:
    cfg = compose_train(f"trainer={name}")
    if cfg.trainer.accelerator == "cpu" or torch.cuda.is_available():
        trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
        assert trainer.max_epochs == cfg.trainer.max_epochs


@pytest.mark.parametrize("name", options("callbacks"))
def test_callbacks_instantiate(compose_train, name: str) -> None:
    cfg = compose_train(f"callbacks={name}")
    for node in (cfg.callbacks or {}).values():
        assert instantiate(node) is not None


@pytest.mark.parametrize("name", options("logger"))
def test_loggers_compose(compose_train, name: str) -> None:
    cfg = compose_train(f"logger={name}")
    if cfg.logger:
        logger = instantiate(cfg.logger)
        assert logger._tracking_uri == cfg.tracking_uri


def test_debug_smoke_limits_batches(compose_train) -> None:
    cfg = compose_train("debug=smoke")
    assert cfg.trainer.max_epochs == 1 and cfg.trainer.limit_train_batches <= 8


@pytest.mark.parametrize("name", experiments())
def test_experiments_compose(compose_train, name: str) -> None:
    cfg = compose_train(f"experiment={name}")
    assert cfg.experiment_name
    # The leads the experiment's transform gives the model: 3 (RGB) for a chart, else 12.
    offline = [t._target_ for t in cfg.transform.get("offline") or []]
    leads = 3 if "ecgx.transforms.chart.ChartImage" in offline else 12
    instantiate(cfg.model, in_channels=leads, num_classes=5)


def test_default_tracking_uri_is_the_project_db(compose_train, monkeypatch) -> None:
    from hydra import compose, initialize_config_dir

    # MLflow exports the URI of the last client to the environment; start from none.
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["paths.output_dir=/tmp/x"])
    assert cfg.tracking_uri == f"sqlite:///{Path(cfg.paths.root_dir)}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["paths.output_dir=/tmp/x"])
    assert cfg.tracking_uri == "http://127.0.0.1:5999"


def test_unknown_option_names_the_choices(compose_train) -> None:
    with pytest.raises(ConfigCompositionException, match="compact_resnet"):
        compose_train("model=not_a_model")
