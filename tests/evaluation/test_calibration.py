"""Calibration errors against their closed form on hand-built probabilities, temperature
scaling recovering a known temperature, and the module applying and storing it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ecgx.errors import ConfigValueError
from ecgx.evaluation.calibration import (
    calibration_metrics,
    fit_temperature,
    reliability_diagram,
    stored_temperature,
)
from ecgx.evaluation.metrics import evaluate_split

# Class A: 4 records at 0.25 (1 positive: observed 0.25, gap 0), 4 at 0.85 (3 positives: 0.75,
# gap 0.10), 2 at 0.95 (2 positives: 1.0, gap 0.05). With 10 bins each group is one bin:
# ECE = (4·0 + 4·0.10 + 2·0.05) / 10 = 0.05, MCE = 0.10,
# Brier = (0.75² + 3·0.25² + 3·0.15² + 0.85² + 2·0.05²) / 10 = 0.1545.
P_A = [0.25] * 4 + [0.85] * 4 + [0.95] * 2
Y_A = [1, 0, 0, 0, 1, 1, 1, 0, 1, 1]
# Class B: every record at 0.55, 5 positives in 10: one bin, gap 0.05 = ECE;
# Brier = (0.45² + 0.55²) / 2 = 0.2525.
P_B, Y_B = [0.55] * 10, [1, 0] * 5


def test_ece_mce_brier_of_hand_built_probabilities_equal_the_closed_form() -> None:
    probs, targets = np.array([P_A, P_B]).T, np.array([Y_A, Y_B]).T
    m = calibration_metrics("multilabel", probs, targets, ["A", "B"], n_bins=10)
    assert m["ece_A"] == pytest.approx(0.05) and m["mce_A"] == pytest.approx(0.10)
    assert m["brier_A"] == pytest.approx(0.1545)
    assert m["ece_B"] == pytest.approx(0.05) and m["brier_B"] == pytest.approx(0.2525)
    # Pooled over the 20 (record, class) pairs: bins 0.25 (gap 0), 0.55 (10 at observed 0.5,
    # gap 0.05), 0.85 (gap 0.10), 0.95 (gap 0.05) -> (10·0.05 + 4·0.10 + 2·0.05) / 20 = 0.05.
    assert m["ece"] == pytest.approx(0.05) and m["mce"] == pytest.approx(0.10)
    assert m["brier"] == pytest.approx((0.1545 + 0.2525) / 2)


def test_multiclass_ece_is_the_top_label_one() -> None:
    # Confidence 0.6 on 5 records, right on 3 (gap 0); 0.9 on 5 records, right on 4 (gap 0.1).
    probs = np.array([[0.6, 0.3, 0.1]] * 5 + [[0.05, 0.9, 0.05]] * 5)
    labels = [0, 0, 0, 1, 2] + [1, 1, 1, 1, 0]
    targets = np.eye(3)[labels]
    m = calibration_metrics("multiclass", probs, targets, ["a", "b", "c"], n_bins=10)
    assert m["ece"] == pytest.approx(0.05) and m["mce"] == pytest.approx(0.1)
    brier = np.mean(np.sum((probs - targets) ** 2, axis=1))
    assert m["brier"] == pytest.approx(brier)


def test_fitting_recovers_a_known_temperature(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    true = torch.randn(20000, 4, generator=g) * 2
    y = (torch.rand(true.shape, generator=g) < torch.sigmoid(true)).float()
    # Logits 2.5 times too confident: the calibrating temperature is 2.5.
    assert fit_temperature(true * 2.5, y, "multilabel").item() == pytest.approx(2.5, rel=0.04)
    scale = torch.tensor([0.5, 1.0, 2.0, 3.0])
    per_class = fit_temperature(true * scale, y, "multilabel", "per_class")
    assert per_class.numpy() == pytest.approx(scale.numpy(), rel=0.04)
    classes = torch.multinomial(torch.softmax(true, 1), 1, generator=g).squeeze(1)
    one_hot = torch.nn.functional.one_hot(classes, 4).float()
    assert fit_temperature(true * 0.4, one_hot, "multiclass").item() == pytest.approx(0.4, rel=0.04)
    # Outputs no better than chance (here: ranked backwards) would need T -> infinity, which
    # flattens every probability to the base rate: kept at the range's edge instead.
    backwards = torch.randn(2000, 2, generator=g)
    assert fit_temperature(backwards, (backwards < 0).float(), "multilabel",
                           "per_class").tolist() == [20.0, 20.0]  # fmt: skip
    with pytest.raises(ConfigValueError, match="module.calibration must be one of"):
        fit_temperature(true, y, "multilabel", "per_lead")
    path = reliability_diagram(torch.sigmoid(true).numpy(), y.numpy(), list("abcd"),
                               tmp_path / "rel.png")  # fmt: skip
    assert path.read_bytes().startswith(b"\x89PNG")


def _module(**kwargs: object):  # noqa: ANN202
    from ecgx.training.module import ECGClassifier

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2 * 8, 3))
    return ECGClassifier(net, optimizer=torch.optim.SGD, class_names=["A", "B", "C"], **kwargs)


def test_calibrated_module_changes_probabilities_not_auroc_and_stores_the_temperature() -> None:
    module = _module(calibrate=True, calibration="per_class")
    logits = torch.randn(64, 3, generator=torch.Generator().manual_seed(1)) * 3
    targets = (logits + torch.randn(64, 3) > 0).float().numpy()
    before = module.outputs(logits)
    module.set_temperature(torch.tensor([2.0, 0.5, 3.0]))
    after = module.outputs(logits)
    assert not torch.allclose(before, after)
    assert after[:, 0].numpy() == pytest.approx(torch.sigmoid(logits[:, 0] / 2).numpy())
    auroc = [evaluate_split("multilabel", p.numpy(), targets, ["A", "B", "C"])["macro_auroc"]
             for p in (before, after)]  # fmt: skip
    assert auroc[0] == pytest.approx(auroc[1], abs=1e-9)

    # The temperature travels in the checkpoint and loads into a fresh module ...
    checkpoint = {"state_dict": module.state_dict()}
    assert stored_temperature(checkpoint).tolist() == [2.0, 0.5, 3.0]
    fresh = _module(calibrate=True)  # built with one (shared) temperature
    fresh.on_load_checkpoint(checkpoint)
    fresh.load_state_dict(checkpoint["state_dict"])
    assert torch.allclose(fresh.outputs(logits), after)
    # ... and a checkpoint from before calibration loads strictly, as the identity, unfitted.
    old = {"state_dict": {k: v for k, v in module.state_dict().items()
                          if not k.startswith("temperature")}}  # fmt: skip
    assert stored_temperature(old) is None
    plain = _module(calibrate=True)
    plain.on_load_checkpoint(old)
    plain.load_state_dict(old["state_dict"])
    assert torch.allclose(plain.outputs(logits), before) and not plain.temperature_fitted
    with pytest.raises(ConfigValueError, match="classification task"):
        _module(calibrate=True, task="regression")
