"""Downstream protocols: linear probe, fine-tune with a lower encoder rate, label fractions,
and what init_from accepts from a pretraining checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from ecgx.errors import ConfigValueError
from ecgx.models.catalog import build
from ecgx.models.patch_transformer import PatchTransformer
from ecgx.models.s4 import S4Classifier
from ecgx.splits.fraction import label_subset
from ecgx.training.module import ECGClassifier, load_pretrained


def _module(compose_train, net, *overrides: str) -> ECGClassifier:
    cfg = compose_train(*overrides)
    return instantiate(cfg.module, net=net, class_names=list("ABCDE"))


def test_linear_probe_leaves_the_encoder_weights_and_statistics_unchanged(compose_train) -> None:
    torch.manual_seed(0)
    net = build("compact_resnet", in_channels=12, num_classes=5)  # has BatchNorm and dropout
    module = _module(compose_train, net, "module.protocol=linear_probe")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    optimizer = module.configure_optimizers()["optimizer"]
    module.train()
    for _ in range(3):
        optimizer.zero_grad()
        batch = {"signal": torch.randn(8, 12, 500), "target": torch.randint(0, 2, (8, 5)).float()}
        module.training_step(batch, 0).backward()
        optimizer.step()
    after = net.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed == {"head.weight", "head.bias"}  # BN running statistics included
    assert net.head.training and not net.stem.training


def test_fine_tune_gives_the_encoder_a_lower_learning_rate(compose_train) -> None:
    net = build("compact_resnet", in_channels=12, num_classes=5)
    module = _module(compose_train, net, "module.protocol=fine_tune",
                     "module.encoder_lr_factor=0.1", "module.optimizer.lr=0.002")  # fmt: skip
    groups = module.configure_optimizers()["optimizer"].param_groups
    assert [g["lr"] for g in groups] == pytest.approx([0.0002, 0.002])
    assert {id(p) for p in groups[1]["params"]} == {id(net.head.weight), id(net.head.bias)}
    assert sum(len(g["params"]) for g in groups) == len(list(net.parameters()))


def test_unknown_protocol_is_named(compose_train) -> None:
    with pytest.raises(Exception, match="module.protocol"):
        _module(compose_train, build("compact_resnet", num_classes=5), "module.protocol=probe")


def test_label_subset_is_stratified_deterministic_and_nested() -> None:
    rng = np.random.default_rng(0)
    y = np.zeros((2000, 3), dtype=np.float32)
    y[:1500, 0] = 1
    y[1500:1900, 1] = 1
    y[1900:1920, 2] = 1  # 20 records of a rare class
    y = y[rng.permutation(2000)]
    small, large = label_subset(y, 0.05, seed=3), label_subset(y, 0.5, seed=3)
    assert np.array_equal(small, label_subset(y, 0.05, seed=3))
    assert set(small) <= set(large)
    assert y[small].sum(0).tolist() == [75, 20, 1]  # per stratum: round(0.05 n), at least one
    assert len(small) == 75 + 20 + 1 + 4  # and the records without a label (80 -> 4)
    assert not np.array_equal(small, label_subset(y, 0.05, seed=4))
    with pytest.raises(ConfigValueError, match="label_fraction"):
        label_subset(y, 0.0)


def _pretraining_checkpoint(tmp_path, net, objective: str):
    path = tmp_path / "pre.ckpt"
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    torch.save({"state_dict": state, "ecgx": {"pretrain": objective}}, path)
    return path


def test_init_from_a_pretraining_checkpoint_loads_the_encoder_not_the_head(tmp_path) -> None:
    torch.manual_seed(0)
    pre = S4Classifier(12, 5, d_model=8, d_state=4, n_layers=1)
    path = _pretraining_checkpoint(tmp_path, pre, "CPC")
    torch.manual_seed(1)
    net = S4Classifier(12, 5, d_model=8, d_state=4, n_layers=1)
    fresh = load_pretrained(net, path)
    assert fresh == ["head.bias", "head.weight"]  # same shape, but never trained: left fresh
    assert torch.equal(net.layers[0].kernel.log_dt, pre.layers[0].kernel.log_dt)
    assert not torch.equal(net.head.weight, pre.head.weight)


def test_init_from_a_pretraining_checkpoint_of_another_model_is_an_error(tmp_path) -> None:
    path = _pretraining_checkpoint(tmp_path, PatchTransformer(12, 5, dim=16, depth=1, heads=2),
                                   "MaskedReconstruction")  # fmt: skip
    with pytest.raises(ConfigValueError, match="MaskedReconstruction pretraining checkpoint"):
        load_pretrained(S4Classifier(12, 5, d_model=8, d_state=4, n_layers=1), path)
