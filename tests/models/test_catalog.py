"""`ecgx models`: every model of conf/model at its seed configuration, with its cost."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import get_class
from omegaconf import OmegaConf

from ecgx.models.base import ECGModel, count_parameters
from ecgx.models.catalog import build, cost, model_names, table
from ecgx.models.image import ImageModel
from ecgx.paths import config_dir

# Trainable parameters of the originals at their seed configuration (counted on the original
# code, BN running statistics excluded), for the models the zoo has ported.
PUBLISHED = {
    "imle_net": 746_725,
    "ecgnet": 1_031_949,
    "mousavi": 2_382_565,
    "rajpurkar": 10_475_877,
    "resnet101_1d": 156_889_221,
    "seresnet18": 8_837_060,
    "resnet34_cpsc": 16_610_185,
    "xai_lenet": 70_949,
    "xai_resnet": 3_680_645,
    "xai_xresnet1d50": 896_517,
    "xresnet1d101": 1_880_775,
    "inception1d": 516_167,
    "resnet1d_wang": 481_863,
}


@pytest.mark.parametrize("name", model_names())
def test_every_model_builds_at_its_seed_configuration(name: str) -> None:
    model = build(name)
    assert isinstance(model, ECGModel)
    if name in PUBLISHED:
        assert count_parameters(model) == PUBLISHED[name]
    row = cost(name)
    assert row.parameters == count_parameters(model)
    assert row.flops > 0 and row.checkpoint_mb > 0


def test_table_lists_every_model() -> None:
    text = table(["compact_resnet", "imle_net"])
    assert "746,725" in text and "compact_resnet" in text
    lines = text.splitlines()
    assert len(lines) == 4  # header, rule, two models


@pytest.mark.parametrize("name", model_names())
def test_every_model_is_deterministic_and_trains(name: str) -> None:
    """Same seed, same weights and outputs; every parameter gets a gradient."""
    cls = get_class(OmegaConf.load(config_dir() / "model" / f"{name}.yaml")._target_)
    # 2D chart models: a small image keeps the two forwards and the backward quick.
    small = {"image_size": [64, 64]} if issubclass(cls, ImageModel) else {}
    torch.manual_seed(0)
    first = build(name, num_classes=3, **small)
    torch.manual_seed(0)
    second = build(name, num_classes=3, **small)
    leads, samples = first.input_shape
    x = torch.randn(2, leads, samples)
    first.eval()
    second.eval()
    with torch.no_grad():
        assert torch.equal(first(x), second(x))
    first.train()
    first(x).sum().backward()
    missing = [n for n, p in first.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing
