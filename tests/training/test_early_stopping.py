"""Early stopping really stops, and the test runs on the best checkpoint, not the last."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from ecgx.commands.train import train

MAX_EPOCHS, PATIENCE = 8, 2


class _Probe(L.Callback):
    """Records the monitored value per epoch and the weights the test starts from."""

    def __init__(self) -> None:
        self.history: list[float] = []
        self.tested: dict[str, torch.Tensor] = {}
        self.final: dict[str, torch.Tensor] = {}
        self.best_path = ""
        self.test_ckpt = ""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.history.append(float(trainer.callback_metrics["val/loss"]))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.final = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.best_path = trainer.checkpoint_callback.best_model_path
        self.test_ckpt = str(trainer.ckpt_path)
        self.tested = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}


@pytest.mark.slow
def test_a_run_whose_monitor_stops_improving_ends_early_and_tests_the_best(compose_train):
    # monitor=val/loss with mode max: as training lowers the loss, the monitor stops
    # "improving" after its first epochs while the weights keep changing, so the best and the
    # last checkpoints differ.
    cfg = compose_train(
        "monitor=val/loss", "monitor_mode=max", f"trainer.max_epochs={MAX_EPOCHS}",
        f"callbacks.early_stopping.patience={PATIENCE}", "+trainer.limit_train_batches=3",
        "+trainer.limit_val_batches=2", "+trainer.limit_test_batches=1", "logger=none",
        "module.bootstrap_resamples=0", "data.batch_size=16",
        "callbacks.progress_bar.refresh_rate=0", "callbacks.test_predictions=null",
    )  # fmt: skip
    probe = _Probe()
    train(cfg, extra_callbacks=[probe])
    history = np.array(probe.history)
    best_epoch = int(history.argmax())
    # Ended `patience` epochs after the last improvement, before max_epochs.
    assert len(history) == best_epoch + 1 + PATIENCE < MAX_EPOCHS, history
    assert Path(probe.best_path).name == f"epoch{best_epoch:03d}.ckpt"
    assert probe.test_ckpt == probe.best_path
    best = torch.load(probe.best_path, map_location="cpu", weights_only=True)["state_dict"]
    assert all(torch.equal(probe.tested[k], best[k]) for k in best)
    # The weights at the end of training are not those tested: training went on after the best.
    assert not all(torch.equal(probe.final[k], best[k]) for k in best)
    # last.ckpt, what resume=true continues from, is the last epoch's, not the best's.
    last = torch.load(Path(probe.best_path).with_name("last.ckpt"), map_location="cpu",
                      weights_only=True)  # fmt: skip
    assert last["epoch"] == len(history) - 1  # saved as that epoch's validation ended
    assert all(torch.equal(probe.final[k], last["state_dict"][k]) for k in best)
