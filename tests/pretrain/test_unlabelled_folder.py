"""Pretraining on records nobody labelled: a folder of real WFDB files, no labels CSV."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ecgx.commands.train import train
from tests.conftest import SAMPLES

FOLDER = SAMPLES / "ptbxl" / "records100"


@pytest.mark.slow
@pytest.mark.skipif(not FOLDER.is_dir(), reason=f"no PTB-XL samples under {FOLDER}")
def test_cpc_pretrains_on_an_unlabelled_folder(compose_train, tmp_path: Path) -> None:
    root = tmp_path / "unlabelled"  # 48 real records, linked
    for hea in sorted(FOLDER.rglob("*.hea"))[:48]:
        for part in (hea, hea.with_suffix(".dat")):
            (root / part.parent.name).mkdir(parents=True, exist_ok=True)
            (root / part.parent.name / part.name).symlink_to(part)
    cfg = compose_train("pretrain=cpc", "dataset=folder", f"dataset.root={root}", "debug=smoke",
                        "experiment_name=pretrain-folder", "data.batch_size=8")  # fmt: skip
    metrics = train(cfg)
    client = MlflowClient(cfg.tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("pretrain-folder").experiment_id])
    assert run.info.status == "FINISHED" and metrics["test/loss"] > 0
    assert run.data.params["data/classes"] == "" and int(run.data.params["data/n_train"]) > 20
    # The encoder checkpoint is logged; no classifier model is (nothing to serve).
    logged = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert "checkpoints" in logged and "model" not in logged
