"""The LightningModule: a model, its loss, optimiser, scheduler and metrics."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn
from torchmetrics.aggregation import CatMetric

from ecgx.data.extras import wanted
from ecgx.errors import ConfigValueError
from ecgx.evaluation.calibration import calibration_metrics, check_calibration, fit_temperature
from ecgx.evaluation.metrics import bootstrap_intervals, evaluate_split, tune_thresholds
from ecgx.models.base import head_parameter_names, task_outputs
from ecgx.training.windows import Windows

TASKS = ("multilabel", "multiclass", "regression")


class ECGClassifier(L.LightningModule):
    """Multi-label classification (or regression) of ECG records.

    Args:
        net: the model (B, leads, samples) -> logits.
        optimizer: a partial taking the parameters (``_partial_: true`` in config).
        scheduler: a partial taking the optimiser, or None.
        monitor: the metric a plateau scheduler follows.
        class_names: filled from the data by the training entry point.
        task: ``multilabel`` (sigmoid outputs, BCE, AUROC/F1), ``multiclass`` (one class per
            record: softmax outputs, cross-entropy on the one-hot targets, AUROC one-vs-rest,
            F1, accuracy) or ``regression`` (raw outputs, MSE, MAE/R²; PTB-XL+ amplitudes).
        calibrate: divide the logits by a temperature fitted on the validation logits (at the
            end of every validation epoch, so each checkpoint stores the one fitted with its
            weights, buffer ``temperature``) before sigmoid/softmax, in test, eval and predict.
        calibration: ``shared`` (one temperature) or ``per_class``.
        protocol: ``supervised`` (every layer learns), ``linear_probe`` (only the head learns;
            the encoder is frozen and kept in eval mode, so BatchNorm statistics and dropout
            stay as pretrained) or ``fine_tune`` (every layer; the encoder's learning rate is
            ``encoder_lr_factor`` × the optimiser's).
        standardize_features: linear probe only: the head is trained on the frozen encoder's
            pooled features standardised by their mean and std over the training records
            (MAE's BatchNorm without affine before its linear probe). Pooled features can vary
            little around large offsets, which an optimiser on the raw features fits slowly.
            Every checkpoint holds the head folded back onto the raw features (``W/σ``,
            ``b − W·μ/σ``), so what ``eval``, ``predict``, ``export`` and ``init_from`` load
            is the model's own plain head.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        monitor: str = "val/macro_auroc",
        class_names: list[str] | None = None,
        task: str = "multilabel",
        compile: bool = False,
        train_head_only: bool = False,
        tune_thresholds: bool = True,
        bootstrap_resamples: int = 200,
        challenge_edition: int | None = None,
        test_windows: Windows | None = None,
        calibrate: bool = False,
        calibration: str = "shared",
        protocol: str = "supervised",
        encoder_lr_factor: float = 1.0,
        standardize_features: bool = False,
    ) -> None:
        super().__init__()
        if task not in TASKS:
            raise ConfigValueError(f"module.task must be one of {TASKS}, got {task!r}")
        if protocol not in PROTOCOLS:
            raise ConfigValueError(f"module.protocol must be one of {PROTOCOLS}, got {protocol!r}")
        self.task = task
        self.protocol = protocol
        self.encoder_lr_factor = float(encoder_lr_factor)
        self.standardize_features = bool(standardize_features)
        if self.standardize_features and protocol != "linear_probe":
            raise ConfigValueError(
                "module.standardize_features needs module.protocol=linear_probe (the features "
                f"of an encoder that learns change as it does), got {protocol!r}"
            )
        #: (mean, std) of the frozen features while the head trains on them standardised
        self.feature_scaler: tuple[torch.Tensor, torch.Tensor] | None = None
        if train_head_only or protocol == "linear_probe":
            _freeze_all_but_head(net)
        self.net = torch.compile(net) if compile else net
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.monitor = monitor
        self.class_names = list(class_names or [])
        self.loss_fn = {
            "multilabel": nn.BCEWithLogitsLoss(),
            "multiclass": _OneHotCrossEntropy(),
            "regression": nn.MSELoss(),
        }[task]
        # CatMetric gathers across DDP ranks, so epoch metrics see every record once.
        self.preds = nn.ModuleDict({s: CatMetric() for s in ("val", "test")})
        self.targets = nn.ModuleDict({s: CatMetric() for s in ("val", "test")})
        self.record_index = nn.ModuleDict({s: CatMetric() for s in ("val", "test")})
        self.tune_thresholds = tune_thresholds
        self.bootstrap_resamples = int(bootstrap_resamples)
        self.challenge_edition = challenge_edition
        #: test-time aggregation: test records scored window by window (None: as validated)
        self.test_windows = test_windows
        #: per-class thresholds tuned on validation for the weights being tested
        self.thresholds: np.ndarray | None = None
        #: thresholds tuned on the last validation epoch: saved with the checkpoint of those
        #: weights, so a bare checkpoint labels records as the run's test did
        self.val_thresholds: np.ndarray | None = None
        #: the run's composed config (YAML), saved with every checkpoint: set by ``ecgx train``
        self.run_config: str | None = None
        #: (probabilities, targets, cache row of each record) of the last test epoch
        self.test_result: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self.calibrate = bool(calibrate)
        self.calibration = calibration
        if self.calibrate:
            check_calibration(task, calibration)
        width = len(self.class_names) if calibration == "per_class" and class_names else 1
        # Buffers, so the fitted temperature travels in every checkpoint with the weights.
        self.register_buffer("temperature", torch.ones(width))
        self.register_buffer("temperature_fitted", torch.tensor(False))
        self.raw_logits = nn.ModuleDict({s: CatMetric() for s in ("val", "test")})

    def forward(self, x: torch.Tensor, **extras: torch.Tensor) -> torch.Tensor:
        if self.feature_scaler is None:
            return self.net(x, **extras)
        mean, std = self.feature_scaler
        features = self.net.forward_features(x, **extras)
        return self.net.forward_head((features - mean) / std, **extras)

    def on_fit_start(self) -> None:
        if self.standardize_features:
            self._standardize_head_input()

    def on_fit_end(self) -> None:
        if self.feature_scaler is not None:
            self._fold_scaler_into_head(self._head().weight, self._head().bias)
            self.feature_scaler = None

    def _head(self) -> nn.Linear:
        net = getattr(self.net, "_orig_mod", self.net)
        head = getattr(net, "head", None)
        if tuple(net.head_modules) != ("head",) or not isinstance(head, nn.Linear):
            raise ConfigValueError(
                f"module.standardize_features: {type(net).__name__}'s head is not one linear "
                "layer, which the standardisation is folded into"
            )
        return head

    @torch.no_grad()
    def _standardize_head_input(self) -> None:
        """Mean and std of the frozen features over the training records (centre crops, as
        evaluated), and the head re-expressed on standardised features: the same function."""
        from ecgx.data.datamodule import collate

        head = self._head()
        datamodule = self.trainer.datamodule
        if not hasattr(datamodule, "dataset_of"):
            raise ConfigValueError("module.standardize_features needs ecgx's DataModule")
        loader = torch.utils.data.DataLoader(
            datamodule.dataset_of("train", train=False),
            batch_size=datamodule.eval_batch_size,
            collate_fn=collate,
        )
        net = getattr(self.net, "_orig_mod", self.net)
        was_training = net.training
        net.eval()
        features = torch.cat([
            net.forward_features(batch["signal"].to(self.device),
                                 **{k: v.to(self.device) for k, v in self.extras(batch).items()})
            .flatten(1).float()
            for batch in loader
        ])  # fmt: skip
        net.train(was_training)
        self._hold_encoder_frozen()
        mean, std = features.mean(0), features.std(0, unbiased=False).clamp_min(1e-6)
        # Resumed runs restore the folded head: unfolded, it is exactly the one trained so far.
        head.bias += head.weight @ mean
        head.weight *= std
        self.feature_scaler = (mean, std)

    @torch.no_grad()
    def _fold_scaler_into_head(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """``weight``/``bias`` (in place) from standardised features back to raw ones."""
        if self.feature_scaler is None:
            return
        mean, std = (t.to(weight.device) for t in self.feature_scaler)
        weight /= std
        bias -= weight @ mean

    def extras(self, batch: dict) -> dict[str, torch.Tensor]:
        """The batch's inputs besides the signal that the model takes (by keyword)."""
        return {k: batch[k] for k in wanted(self.net) if k in batch}

    def outputs(self, logits: torch.Tensor) -> torch.Tensor:
        """Probabilities (classification) or values (regression) from the model's logits."""
        return task_outputs(logits, self.task, self.temperature if self.calibrate else None)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        self._hold_encoder_frozen()
        logits = self(batch["signal"], **self.extras(batch))
        loss = self.loss_fn(logits, batch["target"])
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True,
                 batch_size=len(logits))  # fmt: skip
        return loss

    def _eval_step(self, stage: str, batch: dict) -> None:
        extras, logits = self.extras(batch), None
        if stage == "test" and self.test_windows is not None:
            probs = self.test_windows.score(lambda w, **e: self.outputs(self(w, **e)),
                                            batch["signal"], batch.get("length"), extras)  # fmt: skip
            loss = self._loss_of_outputs(probs, batch["target"])
        else:
            logits = self(batch["signal"], **extras)
            loss, probs = self.loss_fn(logits, batch["target"]), self.outputs(logits)
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, sync_dist=True,
                 batch_size=len(probs))  # fmt: skip
        self.preds[stage].update(probs)
        self.targets[stage].update(batch["target"])
        self.record_index[stage].update(batch["index"])
        if self.calibrate and logits is not None:  # windows give no logit per record
            self.raw_logits[stage].update(logits.float())

    def _loss_of_outputs(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The task's loss from aggregated outputs (windows reduce probabilities, not logits)."""
        if self.task == "regression":
            return nn.functional.mse_loss(out, target)
        p = out.clamp(1e-7, 1 - 1e-7)
        if self.task == "multiclass":
            return nn.functional.nll_loss(p.log(), target.argmax(dim=1))
        return nn.functional.binary_cross_entropy(p, target.to(p.dtype))

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step("val", batch)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step("test", batch)

    def _eval_epoch_end(self, stage: str) -> None:
        if not self.preds[stage].update_called:
            return
        probs, targets = self.preds[stage].compute(), self.targets[stage].compute()
        rows = self.record_index[stage].compute()
        for metric in (self.preds, self.targets, self.record_index):
            metric[stage].reset()
        thresholds = self.thresholds if stage == "test" else None
        args = (self.task, probs.cpu().numpy(), targets.cpu().numpy(), self.class_names)
        metrics = evaluate_split(*args, thresholds=thresholds,
                                 challenge_edition=self.challenge_edition)  # fmt: skip
        if stage == "test" and self.bootstrap_resamples > 0:
            metrics.update(bootstrap_intervals(*args, n_resamples=self.bootstrap_resamples,
                                               thresholds=thresholds,
                                               challenge_edition=self.challenge_edition))  # fmt: skip
        headline = HEADLINE[self.task]
        self.log(f"{stage}/{headline}", metrics.pop(headline), prog_bar=True)
        self.log_dict({f"{stage}/{k}": v for k, v in metrics.items()})
        if stage == "test":
            self.test_result = (probs.cpu(), targets.cpu(), rows.long().cpu())
        elif self.task == "multilabel" and self.tune_thresholds:
            self.val_thresholds = tune_thresholds(targets.cpu().numpy(), probs.cpu().numpy())
        if self.task != "regression":
            self._calibration_epoch_end(stage, probs, targets)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.feature_scaler is not None:
            state = checkpoint["state_dict"]
            prefix = "net._orig_mod.head." if "net._orig_mod.head.weight" in state else "net.head."
            weight, bias = state[prefix + "weight"].clone(), state[prefix + "bias"].clone()
            self._fold_scaler_into_head(weight, bias)
            state[prefix + "weight"], state[prefix + "bias"] = weight, bias
        # Plain lists and strings: checkpoints load with weights_only=True.
        checkpoint["ecgx"] = {
            "thresholds": None if self.val_thresholds is None else self.val_thresholds.tolist(),
            "config": self.run_config,
        }

    def _calibration_epoch_end(
        self, stage: str, probs: torch.Tensor, targets: torch.Tensor
    ) -> None:
        """Validation: fit the temperature the next checkpoint stores. Test: log ECE, MCE and
        Brier (and with ``calibrate``, the ECE without it and the temperature)."""
        fed = self.calibrate and self.raw_logits[stage].update_called
        logits = self.raw_logits[stage].compute() if fed else None
        self.raw_logits[stage].reset()
        if stage == "val" and logits is not None and self.trainer.state.fn == "fit":
            self.set_temperature(fit_temperature(logits, targets, self.task, self.calibration))
        if stage != "test":
            return
        args = (self.task, probs.cpu().numpy(), targets.cpu().numpy(), self.class_names)
        metrics = calibration_metrics(*args)
        if logits is not None:
            raw = self.outputs_uncalibrated(logits)
            metrics["ece_uncalibrated"] = calibration_metrics(self.task, raw.cpu().numpy(),
                                                              *args[2:])["ece"]  # fmt: skip
            metrics["temperature"] = float(self.temperature.mean())
            if len(self.temperature) == len(self.class_names) > 1:
                metrics.update({f"temperature_{n}": float(t)
                                for n, t in zip(self.class_names, self.temperature)})  # fmt: skip
        self.log_dict({f"test/{k}": v for k, v in metrics.items()})

    def outputs_uncalibrated(self, logits: torch.Tensor) -> torch.Tensor:
        calibrate, self.calibrate = self.calibrate, False
        try:
            return self.outputs(logits)
        finally:
            self.calibrate = calibrate

    def set_temperature(self, temperature: torch.Tensor) -> None:
        """Install a fitted temperature (shape (1,) or one per class)."""
        self.temperature = temperature.to(self.temperature.device, torch.float32).reshape(-1)
        self.temperature_fitted.fill_(True)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.feature_scaler = None  # checkpoints hold the folded head (see on_save_checkpoint)
        thresholds = (checkpoint.get("ecgx") or {}).get("thresholds")
        self.val_thresholds = None if thresholds is None else np.asarray(thresholds)
        # Checkpoints from before calibration have no temperature: the identity, not fitted.
        state = checkpoint.get("state_dict", {})
        state.setdefault("temperature", torch.ones(1))
        state.setdefault("temperature_fitted", torch.tensor(False))
        self.temperature = torch.empty_like(state["temperature"])

    def on_test_start(self) -> None:
        """Tune per-class thresholds on the validation split with the weights under test.

        Run here rather than kept from training: the tested checkpoint is the best one, not
        necessarily the last validated. Every rank predicts the whole (small) validation split
        itself, so no gathering is needed.
        """
        self.thresholds = None
        datamodule = getattr(self.trainer, "datamodule", None)
        if self.calibrate and not bool(self.temperature_fitted) and datamodule is not None:
            self._fit_temperature_on(datamodule.val_dataloader())
        if self.task != "multilabel" or not self.tune_thresholds or datamodule is None:
            return
        probs, targets = [], []
        with torch.no_grad():
            for batch in datamodule.val_dataloader():
                extras = {k: v.to(self.device) for k, v in self.extras(batch).items()}
                probs.append(self.outputs(self(batch["signal"].to(self.device), **extras)).cpu())
                targets.append(batch["target"])
        if probs:
            self.thresholds = tune_thresholds(torch.cat(targets).numpy(),
                                              torch.cat(probs).numpy())  # fmt: skip

    def _fit_temperature_on(self, loader: Any) -> None:
        """Fit the temperature on validation now: ``ecgx eval`` of a run trained without
        ``calibrate`` (its checkpoints hold no fitted temperature)."""
        logits, targets = [], []
        with torch.no_grad():
            for batch in loader:
                logits.append(self(batch["signal"].to(self.device)).float().cpu())
                targets.append(batch["target"])
        if logits:
            self.set_temperature(fit_temperature(torch.cat(logits), torch.cat(targets), self.task,
                                                 self.calibration))  # fmt: skip

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def train(self, mode: bool = True) -> ECGClassifier:
        super().train(mode)
        self._hold_encoder_frozen()
        return self

    def _hold_encoder_frozen(self) -> None:
        """Linear probe: the frozen encoder's BatchNorm statistics and dropout stay in eval
        mode. Called from training_step too: Lightning restores each submodule's own mode after
        a validation loop, which would put them back in training mode."""
        if self.protocol != "linear_probe" or not self.training:
            return
        net = getattr(self.net, "_orig_mod", self.net)
        net.eval()
        for name in net.head_modules:
            net.get_submodule(name).train()

    def _parameter_groups(self) -> list[Any]:
        # Frozen parameters stay out, so weight decay / momentum never touch them.
        trainable = [p for p in self.parameters() if p.requires_grad]
        if self.protocol != "fine_tune" or self.encoder_lr_factor == 1.0:
            return trainable
        lr = (getattr(self.optimizer_factory, "keywords", None) or {}).get("lr")
        if lr is None:
            raise ConfigValueError("module.encoder_lr_factor needs module.optimizer.lr set")
        net = getattr(self.net, "_orig_mod", self.net)
        head = {id(p) for n, p in net.named_parameters() if n in head_parameter_names(net)}
        return [
            {"params": [p for p in trainable if id(p) not in head],
             "lr": lr * self.encoder_lr_factor},
            {"params": [p for p in trainable if id(p) in head]},
        ]  # fmt: skip

    def configure_optimizers(self) -> Any:
        return optimizers(self.optimizer_factory, self.scheduler_factory,
                          self._parameter_groups(), self.monitor)  # fmt: skip


def optimizers(
    optimizer_factory: Callable[..., torch.optim.Optimizer],
    scheduler_factory: Callable[..., Any] | None,
    params: Any,
    monitor: str,
) -> Any:
    """Lightning's ``configure_optimizers`` answer: the configured optimiser over ``params`` and,
    if one is configured, its scheduler stepped per epoch on ``monitor``."""
    optimizer = optimizer_factory(params=params)
    if scheduler_factory is None:
        return optimizer
    scheduler = scheduler_factory(optimizer=optimizer)
    return {
        "optimizer": optimizer,
        "lr_scheduler": {"scheduler": scheduler, "monitor": monitor, "interval": "epoch"},
    }


PROTOCOLS = ("supervised", "linear_probe", "fine_tune")
HEADLINE = {"multilabel": "macro_auroc", "multiclass": "macro_auroc", "regression": "r2"}


def _freeze_all_but_head(net: nn.Module) -> None:
    head = head_parameter_names(net)
    if not head:
        raise ConfigValueError(
            f"module.train_head_only: {type(net).__name__} declares no head_modules"
        )
    for name, param in net.named_parameters():
        param.requires_grad_(name in head)


class _OneHotCrossEntropy(nn.Module):
    """Cross-entropy for one-hot targets (readers give every task as a multi-hot matrix)."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(logits, target.argmax(dim=1))


def load_pretrained(net: nn.Module, checkpoint: str | Path) -> list[str]:
    """Copy the weights of a trained ecgx checkpoint into ``net`` where names and shapes match.

    Returns the parameters left as initialised (e.g. the head when the new task has other
    classes): fine-tuning is a config (``init_from=...``), not a script. From a pretraining
    run (``pretrain=...``) the whole encoder must match and the head is always left fresh
    (the pretraining head was never trained): a ConfigValueError names what does not match.
    """
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    trained = {k.removeprefix("net.").removeprefix("_orig_mod."): v
               for k, v in state.get("state_dict", state).items()
               if k.startswith("net.") or "state_dict" not in state}  # fmt: skip
    own = net.state_dict()
    pretrained_by = (state.get("ecgx") or {}).get("pretrain") if "state_dict" in state else None
    if pretrained_by:
        head = {k for k in own if any(k.startswith(f"{h}.") for h in net.head_modules)}
        trained = {k: v for k, v in trained.items() if k not in head}
        unmatched = [k for k in own if k not in head and
                     (k not in trained or trained[k].shape != own[k].shape)]  # fmt: skip
        if unmatched:
            raise ConfigValueError(
                f"init_from={checkpoint}: {len(unmatched)} encoder weights of "
                f"{type(net).__name__} are not in this {pretrained_by} pretraining checkpoint "
                f"or differ in shape (e.g. {unmatched[:3]}): use the pretraining run's model= "
                f"and settings"
            )
    usable = {k: v for k, v in trained.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise ConfigValueError(f"init_from={checkpoint}: no weight matches this model")
    net.load_state_dict(usable, strict=False)
    return sorted(k for k in own if k not in usable)
