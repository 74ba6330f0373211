"""Suite ``sweep``: the first-step probe, the start-up breakdown and the suite end to end."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from ecgx.bench import sweep
from ecgx.commands.bench import compose_bench
from ecgx.tracking.callbacks import FIRST_STEP_ENV, FirstStepTime
from tests.helpers.bench import quick_figures


def _process_start() -> float:
    """Wall-clock start of this process from /proc (clock-tick resolution)."""
    ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
    boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                if line.startswith("btime"))  # fmt: skip
    return boot + ticks / os.sysconf("SC_CLK_TCK")


class _Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)


def _fit(callback: FirstStepTime, max_steps: int) -> int:
    import lightning as L

    class Module(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = _Tiny()

        def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
            return self.net.layer(batch[0]).pow(2).mean()

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = torch.utils.data.TensorDataset(torch.randn(64, 4))
    trainer = L.Trainer(max_steps=max_steps, min_epochs=1, callbacks=[callback], logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu")  # fmt: skip
    trainer.fit(Module(), torch.utils.data.DataLoader(data, batch_size=4))
    return trainer.global_step


def test_first_step_callback_fires_once_after_process_start(tmp_path: Path) -> None:
    path = tmp_path / "steps.jsonl"
    assert _fit(FirstStepTime(str(path), label="7"), max_steps=5) == 5  # no stop: runs on
    (record,) = sweep.read_first_steps(path)  # one line for five steps
    assert record["label"] == "7" and record["pid"] == os.getpid()
    times = [record[k] for k in ("fit_start", "train_start", "first_batch", "first_step_end")]
    assert times == sorted(times)
    assert _process_start() - 0.05 <= times[0]

    # stop=true ends fitting after that step although min_epochs=1 asks for a whole epoch;
    # the path may come from the environment; the records append.
    os.environ[FIRST_STEP_ENV] = str(path)
    try:
        assert _fit(FirstStepTime(stop=True), max_steps=50) == 1
    finally:
        del os.environ[FIRST_STEP_ENV]
    assert len(sweep.read_first_steps(path)) == 2
    with pytest.raises(ValueError, match=FIRST_STEP_ENV):
        FirstStepTime()


def test_importtime_is_summed_per_package() -> None:
    text = (
        "import time: self [us] | cumulative | imported package\n"
        "import time:      2000 |       2000 |     torch._C\n"
        "import time:       500 |       2500 |   torch\n"
        "import time:    100000 |     100000 | mlflow\n"
    )
    assert sweep.parse_importtime(text) == pytest.approx({"torch": 0.0025, "mlflow": 0.1})


def test_phases_add_up_to_the_first_batch() -> None:
    record = {"t0": 100.0, "up": 100.1, "imported": 103.0, "train": 103.5,
              "spans": [["MLflow run creation", 103.6, 104.0], ["path check", 103.5, 103.51],
                        ["model cost", 104.0, 104.5], ["model cost", 110.0, 111.0]]}  # fmt: skip
    step = {"fit_start": 105.0, "first_batch": 105.25}
    out = sweep.phases(record, step)
    assert out["import ecgx.commands.train"] == pytest.approx(2.9)
    assert out["model cost"] == pytest.approx(0.5)  # the call after fit_start is not start-up
    assert "path check" not in out and out["other"] == pytest.approx(1.5 - 0.9)  # tiny: other
    total = out.pop("total to first batch")
    assert total == pytest.approx(5.25) and sum(out.values()) == pytest.approx(total)


@pytest.mark.slow
def test_sweep_suite_quick(tmp_path: Path, synthetic_root: Path) -> None:
    cfg = compose_bench([f"sweep.dataset_root={synthetic_root}"]).sweep
    OmegaConf.set_struct(cfg, False)
    figures = quick_figures(sweep, cfg, tmp_path)
    start = figures["one job: start to first step"]
    assert start.target == "<= 6" and start.met is not None
    assert start.median < figures["one job: whole process, stopped after step 1"].median
    breakdown = figures["start-up: total to first batch"].median
    parts = [f.median for n, f in figures.items()
             if n.startswith("start-up: ") and n != "start-up: total to first batch"]  # fmt: skip
    assert sum(parts) == pytest.approx(breakdown, rel=1e-6)
    assert figures["start-up: import ecgx.commands.train"].median > 0.1
    jobs = [n for n in figures if n.startswith("multirun job seed=")]
    assert len(jobs) == cfg.quick_jobs
    every = figures["multirun: start to every job's first step"].median
    assert every == pytest.approx(max(figures[n].median for n in jobs))
    assert every < figures[f"multirun: start to end ({cfg.multirun_steps} steps, val, test)"].median
    assert "torch" in figures["import ecgx.commands.train (fresh interpreter)"].note
    json.dumps([f.as_dict() for f in figures.values()])  # the report is serialisable
