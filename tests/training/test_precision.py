"""bf16-mixed on CPU (this machine has AVX-512 BF16): the `gpu` preset's precision, run here."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from hydra.core.hydra_config import HydraConfig

from ecgx.commands.train import train


class _Probe(L.Callback):
    """Per-step training loss, and the dtype the model's layers compute in."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.dtypes: set[torch.dtype] = set()
        self._in_step = False

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        conv = next(m for m in pl_module.modules() if isinstance(m, torch.nn.Conv1d))

        def seen(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            if self._in_step:
                self.dtypes.add(output.dtype)

        conv.register_forward_hook(seen)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._in_step = True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._in_step = False
        self.losses.append(float(outputs["loss"]))


@pytest.mark.slow
def test_bf16_mixed_trains_on_cpu_through_the_gpu_preset(compose_train) -> None:
    # trainer=gpu with the accelerator switched to CPU: the preset's own precision setting is
    # what runs, so a change to it is tested here too.
    cfg = compose_train("trainer=gpu", "trainer.accelerator=cpu", "trainer.max_epochs=3",
                        "+trainer.limit_train_batches=6", "+trainer.limit_val_batches=2",
                        "+trainer.limit_test_batches=2", "logger=none", "data.batch_size=32",
                        "module.optimizer.lr=0.003", "module.bootstrap_resamples=0",
                        "callbacks.progress_bar.refresh_rate=0", "callbacks.early_stopping=null",
                        "callbacks.test_predictions=null")  # fmt: skip
    assert HydraConfig.get().runtime.choices["trainer"] == "gpu"
    assert cfg.trainer.precision == "bf16-mixed" and cfg.trainer.accelerator == "cpu"
    probe = _Probe()
    metrics = train(cfg, extra_callbacks=[probe])
    assert probe.dtypes == {torch.bfloat16}  # autocast ran the training convolutions in bf16
    first, last = sum(probe.losses[:6]) / 6, sum(probe.losses[-6:]) / 6
    assert last < 0.9 * first, probe.losses  # the loss falls
    for key in ("val/macro_auroc", "test/macro_auroc", "test/loss", "test/macro_f1"):
        assert key in metrics and metrics[key] == metrics[key], key  # logged, not NaN
