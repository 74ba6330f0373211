"""``ecgx train pretrain=...`` end to end: pretrain, then a linear probe and ``ecgx embed``."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from ecgx.commands.embed import embed_run
from ecgx.commands.train import train
from ecgx.tracking.runs import resolve_checkpoint

TINY_CPC = ["model.d_model=16", "model.n_layers=1", "model.encoder_widths=[16,16]",
            "model.encoder_kernels=[3,1]", "model.encoder_strides=[2,1]"]  # fmt: skip


def _last_run(cfg, experiment: str):
    client = MlflowClient(cfg.tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    return client, client.search_runs([exp.experiment_id],
                                      order_by=["attributes.start_time DESC"])[0]  # fmt: skip


@pytest.mark.slow
def test_cpc_pretraining_then_linear_probe_then_embed(compose_train, synthetic_root, tmp_path):
    cfg = compose_train("pretrain=cpc", "debug=smoke", "experiment_name=pre", *TINY_CPC,
                        "trainer.limit_train_batches=2")  # fmt: skip
    metrics = train(cfg)
    client, run = _last_run(cfg, "pre")
    assert run.info.status == "FINISHED"
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert history and np.isfinite(metrics["val/loss"]) and "val/accuracy" in metrics
    # Every record of the train split, labelled or not: nothing was dropped for lack of labels.
    assert run.data.params["data/n_unlabelled_dropped"] == "0"
    assert "test/macro_auroc" not in metrics
    pretrained = torch.load(resolve_checkpoint(run.info.run_id, cfg.tracking_uri),
                            weights_only=True)["state_dict"]  # fmt: skip
    assert any(k.startswith("objective.predictor") for k in pretrained)

    probe = compose_train("model=s4_cpc", "debug=smoke", "experiment_name=probe", *TINY_CPC,
                          f"init_from={run.info.run_id}", "module.protocol=linear_probe",
                          "data.label_fraction=0.5", "trainer.limit_train_batches=2")  # fmt: skip
    probe_metrics = train(probe)
    assert "test/macro_auroc" in probe_metrics
    client, probe_run = _last_run(probe, "probe")
    tuned = torch.load(resolve_checkpoint(probe_run.info.run_id, probe.tracking_uri),
                       weights_only=True)["state_dict"]  # fmt: skip
    encoder = [k for k in pretrained if k.startswith("net.") and not k.startswith("net.head.")]
    assert encoder and all(torch.equal(tuned[k], pretrained[k]) for k in encoder)  # frozen
    assert not torch.equal(tuned["net.head.weight"], pretrained["net.head.weight"])
    n_probe = int(probe_run.data.params["data/n_train"])
    assert n_probe < int(run.data.params["data/n_train"]) * 0.6  # half of the labelled ones

    folder = tmp_path / "records"
    folder.mkdir()
    for hea in sorted((synthetic_root / "records100").rglob("*.hea"))[:3]:
        for part in (hea, hea.with_suffix(".dat")):
            shutil.copy(part, folder)
    out = embed_run(OmegaConf.create({"run_id": run.info.run_id, "input": str(folder),
                                      "output": str(tmp_path / "emb.npy"),
                                      "tracking_uri": cfg.tracking_uri}))  # fmt: skip
    assert np.load(tmp_path / "emb.npy").shape == (3, 16) == out.features.shape
    assert len(set(map(tuple, out.features.round(5)))) == 3  # a vector per record
    assert list(out.index["record_id"]) == sorted(out.index["record_id"])
