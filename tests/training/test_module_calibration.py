"""``module.calibrate=true`` end to end: fitted on validation during training, stored in the
checkpoint, applied and scored at test, reproduced by ``ecgx eval``, applied by predict."""

from __future__ import annotations

import pytest
import torch
from mlflow.tracking import MlflowClient

from ecgx.commands.evaluate import evaluate_run
from ecgx.commands.predict import RunPipeline
from ecgx.commands.train import train
from ecgx.errors import ConfigValueError
from ecgx.evaluation.calibration import stored_temperature
from ecgx.tracking.runs import load_checkpoint, load_run


@pytest.mark.slow
def test_calibrated_run_logs_stores_and_reapplies_its_temperature(compose_train) -> None:
    cfg = compose_train("debug=smoke", "experiment_name=calibrated", "module.calibrate=true",
                        "module.calibration=per_class")  # fmt: skip
    train(cfg)
    client = MlflowClient(cfg.tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("calibrated").experiment_id])
    metrics = run.data.metrics
    classes = run.data.params["data/classes"].split(",")
    for key in (
        "test/ece",
        "test/mce",
        "test/brier",
        "test/ece_uncalibrated",
        f"test/ece_{classes[0]}",
    ):
        assert 0 <= metrics[key] <= 1, key
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert "plots/reliability_test.png" in plots

    run_cfg, ckpt_path = load_run(compose_train(f"run_id={run.info.run_id}", config="predict"))
    checkpoint = load_checkpoint(ckpt_path)
    temperature = stored_temperature(checkpoint)
    assert temperature is not None and len(temperature) == len(classes)
    assert [metrics[f"test/temperature_{c}"] for c in classes] == pytest.approx(
        temperature.tolist()
    )
    assert not torch.allclose(temperature, torch.ones_like(temperature))  # fitted, not the identity
    assert ((temperature >= 0.05) & (temperature <= 20)).all()  # TEMPERATURE_RANGE

    # eval re-tests with the stored temperature: the same calibration metrics.
    result = evaluate_run(compose_train(f"run_id={run.info.run_id}", "log=false", config="eval"))
    for key in ("test/ece", "test/macro_auroc", "test/ece_uncalibrated"):
        assert result.metrics[key] == pytest.approx(metrics[key], abs=1e-6), key
    # ... and without it the probabilities change, the AUROC does not.
    raw = evaluate_run(compose_train(f"run_id={run.info.run_id}", "log=false", "calibrate=false",
                                     config="eval"))  # fmt: skip
    assert raw.metrics["test/ece"] == pytest.approx(metrics["test/ece_uncalibrated"], abs=1e-6)
    # (AUROC unchanged is tested on exact logits in tests/evaluation/test_calibration.py: a
    # one-epoch smoke model's tiny logits can tie in float32 once scaled.)
    prob = f"prob_{classes[0]}"
    assert not (raw.predictions[prob] == result.predictions[prob]).all()

    # predict divides by the stored temperature; asked to calibrate without one, it refuses.
    pipeline = RunPipeline(run_cfg, checkpoint)
    assert torch.equal(pipeline.temperature, temperature)
    assert RunPipeline(run_cfg, checkpoint, calibrate=False).temperature is None
    checkpoint["state_dict"]["temperature_fitted"] = torch.tensor(False)
    with pytest.raises(ConfigValueError, match="no fitted temperature"):
        RunPipeline(run_cfg, checkpoint)
