"""The pretraining LightningModule: a classifier's encoder trained by a self-supervised objective.

``ecgx train pretrain=<cpc|masked|contrastive> model=<matching model>`` instantiates it in place
of :class:`ecgx.training.module.ECGClassifier` (conf/pretrain/*.yaml). It reads no labels; its
checkpoints hold the classifier's weights under ``net.`` (head untouched: frozen here) beside the
objective's own under ``objective.``, so ``init_from=<this run>`` loads the encoder into the same
``model=`` for linear probing or fine-tuning (:func:`ecgx.training.module.load_pretrained`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import nn

from ecgx.errors import ConfigValueError
from ecgx.models.base import head_parameter_names


class Pretrainer(L.LightningModule):
    """Args:
    net: the classifier whose encoder is pretrained (its head stays frozen and unused).
    objective: a partial taking ``net`` and returning the objective module
        (:mod:`ecgx.pretrain.objectives`).
    optimizer / scheduler / monitor: as :class:`ecgx.training.module.ECGClassifier`.
    class_names: unused (pretraining reads no labels); accepted so ``ecgx train`` builds
        either module with one call.
    """

    def __init__(
        self,
        net: nn.Module,
        objective: Callable[[nn.Module], nn.Module],
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        monitor: str = "val/loss",
        class_names: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        self.objective = objective(net)
        for name, param in net.named_parameters():
            if name in head_parameter_names(net):
                param.requires_grad_(False)  # the downstream task gets a fresh head
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.monitor = monitor
        self.class_names = list(class_names or [])
        self.run_config: str | None = None
        self.test_result = None  # no per-record predictions to log

    def forward(self, x: torch.Tensor, **extras: torch.Tensor) -> torch.Tensor:
        """The encoder's pooled features (what ``ecgx embed`` exports)."""
        return self.net.forward_features(x)

    def _step(self, stage: str, batch: dict) -> torch.Tensor:
        partner = batch.get("partner")
        if partner is None:
            loss, extra = self.objective(self.net, batch["signal"])
        elif getattr(self.objective, "takes_partner", False):
            loss, extra = self.objective(self.net, batch["signal"], partner)
        else:
            raise ConfigValueError(
                f"data.pairs=patient: pretraining objective {type(self.objective).__name__} "
                "uses no second record (only pretrain=contrastive does); unset data.pairs"
            )
        size = len(batch["signal"])
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, prog_bar=True,
                 sync_dist=stage != "train", batch_size=size)  # fmt: skip
        for key, value in extra.items():
            self.log(f"{stage}/{key}", float(value), on_step=False, on_epoch=True,
                     sync_dist=stage != "train", batch_size=size)  # fmt: skip
        return loss

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._step("train", batch)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._step("val", batch)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._step("test", batch)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["ecgx"] = {"config": self.run_config, "thresholds": None,
                              "pretrain": type(self.objective).__name__}  # fmt: skip

    def configure_optimizers(self) -> Any:
        from ecgx.training.module import optimizers

        trainable = [p for p in self.parameters() if p.requires_grad]
        return optimizers(self.optimizer_factory, self.scheduler_factory, trainable, self.monitor)
