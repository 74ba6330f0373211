"""experiments/fm_protocol/: pretraining (stage 1) then linear probe / fine-tune / supervised
baselines at three label fractions (stage 2), as one folder multirun, compared as a study; the
pretraining run's encoder exported by ``ecgx embed``."""

from __future__ import annotations

import shutil
from collections.abc import Callable

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from ecgx.commands.compare import main as compare_main
from ecgx.commands.embed import embed_run
from ecgx.commands.experiment_files import folder_multirun
from ecgx.tracking.runs import resolve_checkpoint
from tests.experiments.conftest import experiment_names, sweep_jobs

STUDY = "fm_protocol"
TINY_S4 = ("model.d_model=16", "model.n_layers=1", "model.encoder_widths=[16,16]",
           "model.encoder_kernels=[3,1]", "model.encoder_strides=[2,1]")  # fmt: skip
SMOKE = ("trainer.limit_train_batches=2", "trainer.limit_val_batches=1")


def test_folder_multirun_pretrains_before_the_files_that_load_the_encoders() -> None:
    names = experiment_names(STUDY)
    jobs = folder_multirun(["-m", f"experiment={','.join(names)}"])
    assert jobs is not None and len(jobs) == len(names) == 12  # one multirun per file
    order = [next(a for a in job if a.startswith("experiment=")) for job in jobs]
    stage1 = [i for i, name in enumerate(order) if "stage1_" in name]
    assert stage1 == [0, 1, 2]
    jobs_of_a_file = sweep_jobs(f"{STUDY}/stage2_cpc_linear_probe")
    assert sorted(j[0] for j in jobs_of_a_file) == [f"data.label_fraction={f}"
                                                    for f in ("0.01", "0.1", "1.0")]  # fmt: skip


def test_each_stage2_file_loads_the_encoder_its_stage1_file_pretrains(
    compose_experiment: Callable[..., DictConfig],
) -> None:
    pretrained = {}
    for name in experiment_names(STUDY):
        cfg = compose_experiment(name, smoke=False)
        if "stage1_" in name:
            assert cfg.pretrain is not None and cfg.data.labelled is False
            pretrained[f"run:fm-protocol/{cfg.run_name}"] = cfg.model
            continue
        assert cfg.data.labelled and cfg.study_row
        assert cfg.module.protocol in ("linear_probe", "fine_tune", "supervised")
        if cfg.init_from:
            assert cfg.model == pretrained[cfg.init_from], name  # the same architecture
        assert (cfg.module.protocol == "fine_tune") == (cfg.module.encoder_lr_factor == 0.1)
    assert len(pretrained) == 3


def _latest(client: MlflowClient, where: str):
    exp = client.get_experiment_by_name("fm-protocol")
    return client.search_runs([exp.experiment_id], where,
                              order_by=["attributes.start_time DESC"])[0]  # fmt: skip


@pytest.mark.slow
def test_study_chain_runs_in_smoke_mode_and_compares(
    run_experiment: Callable[..., dict], compose_experiment, synthetic_root, tmp_path, capsys
) -> None:
    """Pretrain CPC on every record (labels ignored), probe its encoder (frozen) and a random
    one, both at 10 % of the labels; ``ecgx compare layout=study`` has a row each; ``ecgx
    embed`` exports the pretrained encoder's features. (The other stage-2 files differ only in
    config, checked above.)"""
    for name in ("stage1_pretrain_cpc", "stage2_cpc_linear_probe",
                 "stage2_random_s4_cpc_linear_probe"):  # fmt: skip
        fraction = () if "stage1" in name else ("data.label_fraction=0.1",)
        metrics = run_experiment(f"{STUDY}/{name}", *TINY_S4, *SMOKE, *fraction)
        assert ("val/loss" if "stage1" in name else "test/macro_auroc") in metrics
    store = compose_experiment(f"{STUDY}/stage1_pretrain_cpc").tracking_uri
    client = MlflowClient(store)
    pre = _latest(client, "attributes.run_name = 'pretrain-cpc'")
    probe = _latest(client, "params.study_row = 'cpc → s4_cpc, linear_probe'")
    assert pre.data.params["data/n_unlabelled_dropped"] == "0"  # labels ignored: none dropped
    assert client.get_metric_history(pre.info.run_id, "train/loss")
    assert int(probe.data.params["data/n_train"]) < 0.15 * int(pre.data.params["data/n_train"])

    weights = [torch.load(resolve_checkpoint(r.info.run_id, store), weights_only=True)["state_dict"]
               for r in (pre, probe)]  # fmt: skip
    encoder = [k for k in weights[0] if k.startswith("net.") and not k.startswith("net.head.")]
    assert encoder and all(torch.equal(weights[0][k], weights[1][k]) for k in encoder)  # frozen
    assert not torch.equal(weights[0]["net.head.weight"], weights[1]["net.head.weight"])

    capsys.readouterr()
    compare_main(["experiment=fm-protocol", "layout=study", f"tracking_uri={store}", "format=csv"])
    table = capsys.readouterr().out
    for row in ("cpc → s4_cpc, linear_probe", "random → s4_cpc, linear_probe"):
        assert row in table, table

    folder = tmp_path / "records"
    folder.mkdir()
    for hea in sorted((synthetic_root / "records100").rglob("*.hea"))[:3]:
        for part in (hea, hea.with_suffix(".dat")):
            shutil.copy(part, folder)
    out = embed_run(OmegaConf.create({"run_id": pre.info.run_id, "input": str(folder),
                                      "output": str(tmp_path / "emb.npy"), "tracking_uri": store}))  # fmt: skip
    assert np.load(tmp_path / "emb.npy").shape == (3, 16) == out.features.shape
    assert len({tuple(v) for v in out.features.round(5)}) == 3  # a vector per record
    assert list(out.index["record_id"]) == sorted(out.index["record_id"])
