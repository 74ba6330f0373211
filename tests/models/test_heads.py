"""Every model declares its classifier head; head-only fine-tuning trains just that."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from ecgx.errors import ConfigValueError
from ecgx.models.base import head_parameter_names
from ecgx.models.catalog import build, model_names
from ecgx.training.module import ECGClassifier


@pytest.mark.parametrize("name", model_names())
def test_head_modules_end_in_the_logits_layer(name: str) -> None:
    model = build(name, num_classes=7)
    last = model.get_submodule(model.head_modules[-1])
    linears = [m for m in last.modules() if isinstance(m, nn.Linear)]
    assert linears and linears[-1].out_features == 7
    head = head_parameter_names(model)
    every = {n for n, _ in model.named_parameters()}
    assert head < every  # some parameters are the backbone's


def test_unknown_head_module_is_named() -> None:
    model = build("compact_resnet", num_classes=3)
    model.head_modules = ("classifier",)
    with pytest.raises(ValueError, match="'classifier'"):
        head_parameter_names(model)


def test_train_head_only_updates_nothing_else(compose_train) -> None:
    cfg = compose_train("module.train_head_only=true")
    net = build("compact_resnet", in_channels=12, num_classes=5)
    module: ECGClassifier = instantiate(cfg.module, net=net, class_names=list("ABCDE"))
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    optimizer = module.configure_optimizers()["optimizer"]
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert in_optimizer == {id(net.head.weight), id(net.head.bias)}
    loss = module.training_step({"signal": torch.randn(4, 12, 500), "target": torch.ones(4, 5)}, 0)
    loss.backward()
    optimizer.step()
    changed = {n for n, p in net.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {"head.weight", "head.bias"}


def test_train_head_only_without_head_is_a_config_error() -> None:
    class Headless(nn.Module):
        head_modules = ()

    with pytest.raises(ConfigValueError, match="head_modules"):
        ECGClassifier(Headless(), optimizer=torch.optim.SGD, train_head_only=True)
