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


def test_standardised_probe_trains_on_standard_features_and_saves_a_plain_head(
    compose_train,
) -> None:
    from types import SimpleNamespace

    torch.manual_seed(0)
    dm = instantiate(compose_train().data)
    dm.setup("fit")
    net = S4Classifier(12, 5, d_model=8, d_state=4, n_layers=1)
    module = _module(compose_train, net, "module.protocol=linear_probe",
                     "module.standardize_features=true")  # fmt: skip
    module.eval()
    x = next(iter(dm.val_dataloader()))["signal"][:6]
    before = module(x)
    module._trainer = SimpleNamespace(datamodule=dm)
    module._standardize_head_input()
    module._trainer = None
    # The same function, but the head now sees standardised training features.
    torch.testing.assert_close(module(x), before, rtol=1e-4, atol=1e-5)
    train = torch.from_numpy(dm.transform.normalize(dm.cache.gather(dm.indices["train"])))
    mean, std = module.feature_scaler
    standard = (net.forward_features(train.float()) - mean) / std
    torch.testing.assert_close(standard.mean(0), torch.zeros(8), atol=1e-4, rtol=0)
    torch.testing.assert_close(standard.std(0, unbiased=False), torch.ones(8), atol=1e-3, rtol=0)
    # One training step in the standardised coordinates, then the checkpoint: its head is
    # folded back onto the raw features, and the live module is left as it was.
    module.train()
    optimizer = module.configure_optimizers()["optimizer"]
    batch = {"signal": train[:16].float(), "target": torch.from_numpy(dm.targets[:16]).float()}
    module.training_step(batch, 0).backward()
    optimizer.step()
    module.eval()
    trained = module(x)
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    torch.testing.assert_close(module(x), trained)
    plain = S4Classifier(12, 5, d_model=8, d_state=4, n_layers=1).eval()
    plain.load_state_dict({k[4:]: v for k, v in checkpoint["state_dict"].items()
                           if k.startswith("net.")})  # fmt: skip
    torch.testing.assert_close(plain(x), trained, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(plain.head.weight, net.head.weight)  # folded, not copied
    with pytest.raises(ConfigValueError, match="standardize_features needs module.protocol"):
        ECGClassifier(net, torch.optim.Adam, standardize_features=True)


@pytest.mark.slow
def test_standardised_probe_run_logs_a_checkpoint_with_a_plain_head(compose_train) -> None:
    import pandas as pd
    from mlflow.tracking import MlflowClient

    from ecgx.commands.train import train
    from ecgx.tracking.runs import resolve_checkpoint

    cfg = compose_train("model=s4", "model.d_model=8", "model.n_layers=1", "debug=smoke",
                        "module.protocol=linear_probe", "module.standardize_features=true",
                        "experiment_name=probe-standardised")  # fmt: skip
    metrics = train(cfg)
    client = MlflowClient(cfg.tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("probe-standardised").experiment_id])
    assert run.info.status == "FINISHED" and 0 <= metrics["test/macro_auroc"] <= 1
    # The checkpoint holds the plain model, and the run's test (after fit, from that
    # checkpoint) scored with it: the model config's net with those weights gives the logged
    # test predictions, with no scaler applied.
    net = instantiate(cfg.model, in_channels=12, num_classes=5).eval()
    state = torch.load(resolve_checkpoint(run.info.run_id, cfg.tracking_uri), weights_only=True)
    net.load_state_dict({k[4:]: v for k, v in state["state_dict"].items() if k.startswith("net.")})
    dm = instantiate(cfg.data)
    dm.setup("fit")
    ids = dm.cache.meta["record_id"].astype(str).to_numpy()
    x = torch.from_numpy(dm.transform.normalize(dm.cache.gather(dm.indices["test"]))).float()
    with torch.no_grad():
        probs = torch.sigmoid(net(x)).numpy()
    logged = pd.read_csv(client.download_artifacts(run.info.run_id,  # ids as the cache has them
                                                   "predictions/test_predictions.csv"),
                         dtype={"record_id": str})  # fmt: skip
    logged = logged.set_index("record_id").loc[ids[dm.indices["test"]]]
    columns = [f"prob_{c}" for c in dm.class_names]
    np.testing.assert_allclose(logged[columns].to_numpy(), probs, rtol=1e-4, atol=1e-5)
