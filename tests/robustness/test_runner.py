"""The robustness runner on a hand-made model whose dependence on the leads is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ecgx.formats.record import LEADS, Record
from ecgx.robustness import perturbations as P
from ecgx.robustness.plots import metric_vs_snr
from ecgx.robustness.runner import robustness_table
from ecgx.transforms.signal import TransformPipeline


def _lead_ii_model(x: torch.Tensor) -> torch.Tensor:
    """Reads lead II only: the probability of the class rises with lead II's mean."""
    return torch.sigmoid(4 * x[:, 1].mean(dim=-1, keepdim=True))


def _records(n: int = 80, fs: float = 100.0) -> tuple[list[Record], np.ndarray]:
    rng = np.random.default_rng(0)
    y = (np.arange(n) % 2).astype(np.float32)[:, None]
    out = []
    for i in range(n):
        x = rng.standard_normal((12, 300)).astype(np.float32) * 0.2
        # Lead II (and, as a decoy, V1) is lifted in the positive records.
        x[1] += 0.3 * y[i, 0] + rng.normal(0, 0.1)
        x[6] += 0.3 * y[i, 0]
        out.append(Record(f"r{i}", x, fs, LEADS))
    return out, y


def test_a_model_reading_only_lead_ii_drops_to_chance_without_it() -> None:
    records, y = _records()
    perturbations = {
        "no_II": P.DropLeads(["II"]),
        "only_I": P.KeepLeads(["I"]),
        "no_V1": P.DropLeads(["V1"]),
        "only_II": P.KeepLeads(["II"]),
        "chest_zeroed": P.KeepLeads(["I", "II", "III", "aVR", "aVL", "aVF"]),
        "wander_-6dB": P.BaselineWander(-6),
    }
    table, outputs = robustness_table(records, y, perturbations, TransformPipeline(),
                                      _lead_ii_model, "multilabel", ["X"], "macro_auroc",
                                      n_resamples=50)  # fmt: skip
    rows = table.set_index("perturbation")
    assert list(table["perturbation"]) == ["clean", *perturbations]
    clean = rows.loc["clean", "perturbed"]
    assert clean > 0.95
    for name in ("no_II", "only_I"):  # every output 0.5: the AUROC of a constant, chance
        assert rows.loc[name, "perturbed"] == pytest.approx(0.5), name
        assert rows.loc[name, "drop_abs"] == pytest.approx(clean - 0.5), name
        assert rows.loc[name, "drop_ci_low"] > 0.3, name
    for name in ("no_V1", "only_II", "chest_zeroed"):  # lead II untouched: outputs identical
        np.testing.assert_array_equal(outputs[name], outputs["clean"], err_msg=name)
        assert rows.loc[name, "drop_abs"] == 0 and rows.loc[name, "drop_ci_high"] == 0, name
    assert rows.loc["wander_-6dB", "drop_abs"] > 0.05  # a drift larger than the signal hurts
    assert rows.loc["wander_-6dB", "snr_db"] == -6 and np.isnan(rows.loc["no_II", "snr_db"])
    assert rows.loc["no_II", "drop_rel"] == pytest.approx((clean - 0.5) / clean)
    assert (table["n_records"] == len(records)).all()


def test_the_run_pipeline_meets_the_perturbation_and_the_plot(tmp_path) -> None:
    """Perturbations act before the run's offline transforms: a high-pass filter there removes
    baseline wander, so the same model behind it keeps its score; without it, it does not."""
    from ecgx.transforms.signal import Bandpass

    rng = np.random.default_rng(1)
    y = (np.arange(80) % 2).astype(np.float32)[:, None]
    # The class is in lead II's broadband amplitude; the model reads that amplitude. The other
    # leads carry most of the power, alike in both classes, so the wander (scaled to each
    # record's power) is as strong in both.
    amplitude = np.ones((80, 12, 1))
    amplitude[:, 1, 0] = 0.2 + 0.2 * y[:, 0]
    signals = (rng.standard_normal((80, 12, 300)) * amplitude).astype(np.float32)
    records = [Record(f"r{i}", signals[i], 100.0, LEADS) for i in range(80)]

    def model(x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(10 * (x[:, 1].std(dim=-1, keepdim=True) - 0.3))

    wander = {f"wander_{s}dB": P.BaselineWander(s, low=0.2, high=0.3) for s in (10, 0, -10)}
    args = ("multilabel", ["X"], "macro_auroc")
    plain, _ = robustness_table(records, y, wander, TransformPipeline(), model, *args,
                                n_resamples=20)  # fmt: skip
    highpass = TransformPipeline(offline=[Bandpass(low=1.0, high=None)])
    filtered, _ = robustness_table(records, y, wander, highpass, model, *args, n_resamples=20)
    plain, filtered = plain.set_index("perturbation"), filtered.set_index("perturbation")
    assert plain.loc["clean", "perturbed"] > 0.95 and filtered.loc["clean", "perturbed"] > 0.95
    assert plain.loc["wander_-10dB", "drop_abs"] > 0.2
    assert abs(filtered.loc["wander_-10dB", "drop_abs"]) < 0.02

    plot = metric_vs_snr(plain.reset_index(), tmp_path / "snr.png", "test")
    assert plot is not None and plot.stat().st_size > 5000
    # No row with an SNR (only the clean one): no plot.
    assert metric_vs_snr(plain.reset_index().iloc[:1], tmp_path / "none.png", "t") is None
