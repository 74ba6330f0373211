"""Faithfulness of attributions: do the inputs an explainer ranks highest drive the model?

An *explainer* is any object with ``attribute(inputs, target) -> Tensor shaped like inputs``
(captum's attribution classes, e.g. ``captum.attr.Saliency(model)``). Models map
(batch, leads, samples) -> logits (batch, classes), see `ecgx.models.base`.

Two families of checks:

* `deletion_insertion` (MoRF deletion, Samek et al. 2017; deletion / insertion, Petsiuk et al.
  2018): rank input elements by attribution and replace the top-k fraction with a baseline
  (deletion) or reveal only the top-k fraction on top of the baseline (insertion), recording the
  target class score. A faithful ranking makes the deletion curve fall fast (low AUC) and the
  insertion curve rise fast (high AUC). `random_baseline_curves` gives the chance level to
  compare against.
* `infidelity` (Yeh et al. 2019) and `sensitivity` (max-sensitivity, same paper), thin wrappers
  over ``captum.metrics.infidelity`` / ``captum.metrics.sensitivity_max`` with an ECG-scaled
  perturbation.

Perturbation scale. ecgx models see standardised signals (mV divided by a per-lead std, see
``ecgx.transforms.signal.Standardize``), so a fixed absolute noise level (captum's image examples
use 0.003 for pixels in [0, 1]) means nothing across datasets or normalisations. Every noise
level here is therefore *relative to each record's per-lead standard deviation*: 0.05 is about
10-25 uV on a raw lead of 0.2-0.5 mV std, the order of amplifier / EMG noise, so perturbed
records stay plausible ECGs. A flat lead (std 0, e.g. a missing lead filled with zeros) is left
flat rather than filled with noise the model never saw in training.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from captum.metrics import infidelity as captum_infidelity
from captum.metrics import sensitivity_max as captum_sensitivity_max
from torch import Tensor, nn

Model = Callable[[Tensor], Tensor]
Baseline = Literal["zero", "mean"] | Tensor | float
Unit = Literal["sample", "segment"]
Output = Literal["probability", "logit"]
Task = Literal["multilabel", "multiclass"]

__all__ = [
    "FaithfulnessCurves",
    "deletion_insertion",
    "infidelity",
    "random_baseline_curves",
    "sensitivity",
]


@dataclass(frozen=True)
class FaithfulnessCurves:
    """Deletion and insertion curves of a batch of records.

    ``fractions`` (steps + 1,) is the fraction of ranked units (samples or windows) replaced at
    each step: ``k / steps`` rounded to whole units, so it runs exactly from 0 to 1.
    ``deletion`` / ``insertion`` (records, steps + 1) hold the target class score at each step.
    """

    fractions: np.ndarray
    deletion: np.ndarray
    insertion: np.ndarray

    @property
    def deletion_aucs(self) -> np.ndarray:
        """Per-record area under the deletion curve (lower is better)."""
        return _trapezoid(self.deletion, self.fractions)

    @property
    def insertion_aucs(self) -> np.ndarray:
        """Per-record area under the insertion curve (higher is better)."""
        return _trapezoid(self.insertion, self.fractions)

    @property
    def deletion_auc(self) -> float:
        """Mean deletion AUC over records (lower is better)."""
        return float(self.deletion_aucs.mean())

    @property
    def insertion_auc(self) -> float:
        """Mean insertion AUC over records (higher is better)."""
        return float(self.insertion_aucs.mean())

    def metrics(self, prefix: str = "") -> dict[str, float]:
        """Scalars for MLflow: ``{prefix}deletion_auc``, ``{prefix}insertion_auc`` and their
        difference ``{prefix}insertion_minus_deletion_auc`` (higher is better)."""
        return {
            f"{prefix}deletion_auc": self.deletion_auc,
            f"{prefix}insertion_auc": self.insertion_auc,
            f"{prefix}insertion_minus_deletion_auc": self.insertion_auc - self.deletion_auc,
        }


def _trapezoid(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    # by hand: np.trapz is deprecated in numpy 2 and np.trapezoid absent before it
    return ((y[..., 1:] + y[..., :-1]) * 0.5 * np.diff(x)).sum(axis=-1)


def deletion_insertion(
    model: Model,
    inputs: Tensor,
    target: int | Tensor,
    attributions: Tensor,
    *,
    steps: int = 20,
    unit: Unit = "sample",
    segment: int = 10,
    baseline: Baseline = "zero",
    output: Output = "probability",
    task: Task = "multilabel",
    batch_size: int = 128,
) -> FaithfulnessCurves:
    """Deletion and insertion curves of ``attributions`` for ``model`` on ``inputs``.

    Args:
        model: (B, leads, samples) -> logits (B, classes); put it in eval mode first (BatchNorm
            in train mode would mix the perturbed copies that share a forward batch).
        inputs: (B, leads, samples) records, as the model sees them (normalised).
        target: the class scored, one for all records or one per record (B,).
        attributions: shaped like ``inputs``. Ranked by *signed value*, descending: the most
            positive evidence for ``target`` goes first and negative evidence last. Pass
            ``attributions.abs()`` to rank by magnitude instead.
        steps: the curves have ``steps + 1`` points, top-k fractions 0, 1/steps, ..., 1.
        unit: ``"sample"`` ranks each (lead, sample); ``"segment"`` ranks each (lead, window of
            ``segment`` samples) by the attribution summed over the window, which removes
            whole waveform pieces instead of isolated samples the model can interpolate
            across. A last, shorter window takes the remainder of the record.
        segment: window length in samples when ``unit="segment"``.
        baseline: what removed elements become: ``"zero"`` (the standardised signal's mean,
            i.e. roughly the isoelectric line), ``"mean"`` (each record's per-lead mean over
            time, a flat line) or a tensor broadcastable to ``inputs`` (or a scalar).
        output: ``"probability"`` (sigmoid for ``task="multilabel"``, softmax over classes
            for ``"multiclass"``) or the raw ``"logit"``.
        task: how logits become probabilities.
        batch_size: perturbed records per forward call. All ``2 * (steps + 1)`` versions of
            every record are built as one stream and sent in chunks, so the model runs
            ``ceil(2 * B * (steps + 1) / batch_size)`` times whatever the record length.

    Returns:
        `FaithfulnessCurves` with per-record curves and AUCs (trapezoid rule over fraction).
    """
    _check_shapes(inputs, attributions)
    unit_scores = _unit_scores(attributions.detach(), unit, segment)
    return _curves(
        model,
        inputs,
        target,
        unit_scores,
        steps=steps,
        unit=unit,
        segment=segment,
        baseline=baseline,
        output=output,
        task=task,
        batch_size=batch_size,
    )


def random_baseline_curves(
    model: Model,
    inputs: Tensor,
    target: int | Tensor,
    *,
    seed: int = 0,
    repeats: int = 1,
    steps: int = 20,
    unit: Unit = "sample",
    segment: int = 10,
    baseline: Baseline = "zero",
    output: Output = "probability",
    task: Task = "multilabel",
    batch_size: int = 128,
) -> FaithfulnessCurves:
    """Chance level: `deletion_insertion` with a random ranking (seeded, reproducible).

    Units (samples or windows) are ranked by i.i.d. uniform scores drawn per unit, not per
    sample summed over windows, so a shorter last window is not biased towards the end.
    ``repeats`` > 1 averages the curves of that many rankings per record, for a smoother
    reference. Other arguments as in `deletion_insertion`.
    """
    _check_inputs(inputs)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    n_units = _unit_scores(inputs[:1], unit, segment).shape[1]
    runs = []
    for _ in range(repeats):
        scores = torch.rand((inputs.shape[0], n_units), generator=generator)
        runs.append(
            _curves(
                model,
                inputs,
                target,
                scores.to(inputs.device),
                steps=steps,
                unit=unit,
                segment=segment,
                baseline=baseline,
                output=output,
                task=task,
                batch_size=batch_size,
            )
        )
    return FaithfulnessCurves(
        fractions=runs[0].fractions,
        deletion=np.mean([r.deletion for r in runs], axis=0),
        insertion=np.mean([r.insertion for r in runs], axis=0),
    )


def _curves(
    model: Model,
    inputs: Tensor,
    target: int | Tensor,
    unit_scores: Tensor,
    *,
    steps: int,
    unit: Unit,
    segment: int,
    baseline: Baseline,
    output: Output,
    task: Task,
    batch_size: int,
) -> FaithfulnessCurves:
    _check_inputs(inputs)
    _check_output(output, task)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    _warn_if_training(model)
    device = inputs.device
    n_records, n_leads, n_samples = inputs.shape
    n_units = unit_scores.shape[1]
    targets = _targets(target, n_records, device)
    base = _baseline(baseline, inputs)

    # rank[b, u] = position of unit u in record b's descending order; a stable sort so that
    # ties (e.g. all-zero attributions) keep a reproducible, index order
    order = torch.argsort(unit_scores, dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(n_units, device=device).expand(n_records, n_units))
    k = torch.arange(steps + 1, device=device)
    counts = torch.div(2 * k * n_units + steps, 2 * steps, rounding_mode="floor")  # round(k/s*N)

    # One stream of (curve, record, step) rows; curve 0 is deletion, 1 insertion.
    per_curve = n_records * (steps + 1)
    rows = torch.arange(2 * per_curve, device=device)
    curve, rest = rows // per_curve, rows % per_curve
    record, step = rest // (steps + 1), rest % (steps + 1)
    scores = torch.empty(2 * per_curve, dtype=torch.float64)
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            chunk = slice(start, start + batch_size)
            r, c = record[chunk], curve[chunk]
            top = rank[r] < counts[step[chunk]][:, None]  # (n, units): among the top-k
            top = _units_to_elements(top, n_leads, n_samples, unit, segment)
            # deletion keeps the input outside the top-k, insertion keeps it inside
            from_input = top != (c == 0)[:, None, None]
            x = torch.where(from_input, inputs[r], base[r])
            logits = model(x)
            scores[chunk] = _select(logits, targets[r], output, task).double().cpu()
    scores = scores.view(2, n_records, steps + 1).numpy()
    return FaithfulnessCurves(
        fractions=(counts.double() / n_units).cpu().numpy(),
        deletion=scores[0],
        insertion=scores[1],
    )


def infidelity(
    model: Model,
    explainer_or_attributions: Any,
    inputs: Tensor,
    target: int | Tensor,
    *,
    multiply_by_inputs: bool | None = None,
    noise_std: float = 0.05,
    baseline: Baseline = "zero",
    n_perturb_samples: int = 10,
    normalize: bool = False,
    output: Output = "logit",
    task: Task = "multilabel",
    max_examples_per_batch: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Per-record explanation infidelity (``captum.metrics.infidelity``; lower is better).

    captum's definition: ``E_I[(sum(a * I) - (f(x) - f(x - I)))^2]`` over perturbations I, with
    f the target score. Which I makes exact attributions score 0 depends on the attribution's
    kind, hence ``multiply_by_inputs``:

    * ``False``, *local* attributions (Saliency, Guided Backprop, IG with
      ``multiply_by_inputs=False``): I is Gaussian noise of std ``noise_std`` times the
      record's per-lead std, and x - I the perturbed record. The gradient is exact for a
      linear model.
    * ``True``, *global* attributions that factor in ``x - baseline`` (IG, DeepLift,
      Input x Gradient, SHAP): the perturbed record is ``x - eta * (x - baseline)`` with eta
      Gaussian of std ``noise_std``, i.e. a relative amplitude jitter of each sample's
      deviation from the baseline, and I = eta. That is (x - perturbed) / (x - baseline),
      captum's ``infidelity_perturb_func_decorator(True)`` convention, drawn directly so as
      not to divide by x - baseline ~ 0 on the isoelectric line. ``w * (x - baseline)`` is
      exact for a linear model.
    * ``None``: taken from the explainer's ``multiplies_by_inputs`` (captum attribution
      classes have it); required when passing attribution tensors.

    Args:
        model: (B, leads, samples) -> logits, in eval mode.
        explainer_or_attributions: an explainer (its ``attribute(inputs, target=target)`` is
            called) or an attribution tensor shaped like ``inputs``.
        inputs: (B, leads, samples), as the model sees them.
        target: class index, one for all or one per record.
        noise_std: perturbation scale, relative (see above).
        baseline: the reference of global attributions (``"zero"``, ``"mean"``, a tensor).
        normalize: captum's option: rescale the attributions by the least-squares factor
            first, so that methods with arbitrary scales (e.g. Grad-CAM) can be compared.
        output, task: the score f, as in `deletion_insertion`; logits by default because
            attributions are usually computed on them.
        seed: seeds the perturbations (reproducible given the same inputs and device).

    Returns:
        (B,) infidelity per record.
    """
    _check_inputs(inputs)
    _check_output(output, task)
    _warn_if_training(model)
    if isinstance(explainer_or_attributions, Tensor):
        attributions = explainer_or_attributions
        if multiply_by_inputs is None:
            raise ValueError(
                "infidelity of attribution tensors needs multiply_by_inputs: True for "
                "attributions that factor in inputs - baseline (IG, DeepLift, Input x "
                "Gradient), False for local ones (Saliency)"
            )
    else:
        attributions = explainer_or_attributions.attribute(inputs, target=target)
        if multiply_by_inputs is None:
            multiply_by_inputs = getattr(explainer_or_attributions, "multiplies_by_inputs", None)
            if multiply_by_inputs is None:
                raise ValueError(
                    f"{type(explainer_or_attributions).__name__} has no multiplies_by_inputs; "
                    "pass multiply_by_inputs explicitly"
                )
    _check_shapes(inputs, attributions)
    generator = torch.Generator(device=inputs.device).manual_seed(seed)

    def local_perturb(x: Tensor) -> tuple[Tensor, Tensor]:
        noise = _randn_like(x, generator) * (noise_std * _lead_scale(x))
        return noise, x - noise

    def global_perturb(x: Tensor, base: Tensor) -> tuple[Tensor, Tensor]:
        eta = _randn_like(x, generator) * noise_std
        # a flat lead stays flat: no jitter where the lead has no deviation at all
        eta = eta * (_lead_scale(x) > 0)
        return eta, x - eta * (x - base)

    values = captum_infidelity(
        lambda x: _outputs(model, x, output, task),
        global_perturb if multiply_by_inputs else local_perturb,
        inputs.detach(),
        attributions.detach(),
        baselines=_baseline(baseline, inputs).contiguous() if multiply_by_inputs else None,
        target=_captum_target(target),
        n_perturb_samples=n_perturb_samples,
        max_examples_per_batch=max_examples_per_batch,
        normalize=normalize,
    )
    return values.detach().double().cpu().numpy()


def sensitivity(
    model: Model,
    explainer: Any,
    inputs: Tensor,
    target: int | Tensor,
    *,
    radius: float = 0.02,
    n_perturb_samples: int = 10,
    norm_ord: str = "fro",
    max_examples_per_batch: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Per-record max-sensitivity of an explainer (``captum.metrics.sensitivity_max``; lower
    is better): the largest relative change ``||a(x') - a(x)|| / ||a(x)||`` over perturbed
    records x'.

    x' is drawn uniformly from an L-infinity ball whose half-width is ``radius`` times the
    record's per-lead std (captum's default ball scaled per lead, because leads differ in
    amplitude; bounded rather than Gaussian since max-sensitivity is a supremum over a
    neighbourhood). 0.02 is a few uV on a raw lead, well under the noise floor: a robust
    explanation should not change there.

    Args:
        model: the explained model; only checked to be in eval mode (in train mode BatchNorm
            makes attributions depend on the batch, which would count as instability).
        explainer: has ``attribute(inputs, target=target)``.
        inputs: (B, leads, samples), as the model sees them.
        target: class index, one for all or one per record.
        seed: seeds the perturbations.

    Returns:
        (B,) max-sensitivity per record.
    """
    _check_inputs(inputs)
    _warn_if_training(model)
    generator = torch.Generator(device=inputs.device).manual_seed(seed)

    def perturb(x: Tensor, perturb_radius: float) -> Tensor:
        uniform = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return x + (2 * uniform - 1) * (perturb_radius * _lead_scale(x))

    def explain(x: Tensor | tuple[Tensor, ...], target: Any) -> Tensor:
        # captum hands the inputs over as a 1-tuple; ecgx explainers take the tensor.
        if isinstance(x, tuple):
            return (explainer.attribute(x[0], target=target),)
        return explainer.attribute(x, target=target)

    values = captum_sensitivity_max(
        explain,
        inputs.detach(),
        perturb_func=perturb,
        perturb_radius=radius,
        n_perturb_samples=n_perturb_samples,
        norm_ord=norm_ord,
        max_examples_per_batch=max_examples_per_batch,
        target=_captum_target(target),
    )
    return values.detach().double().cpu().numpy()


# -- helpers -------------------------------------------------------------------------------------


def _check_inputs(inputs: Tensor) -> None:
    if not isinstance(inputs, Tensor) or inputs.ndim != 3:
        shape = tuple(inputs.shape) if isinstance(inputs, Tensor) else type(inputs).__name__
        raise ValueError(f"inputs must be a (batch, leads, samples) tensor, got {shape}")


def _check_shapes(inputs: Tensor, attributions: Tensor) -> None:
    _check_inputs(inputs)
    if tuple(attributions.shape) != tuple(inputs.shape):
        raise ValueError(
            f"attributions of shape {tuple(attributions.shape)} do not match inputs of shape "
            f"{tuple(inputs.shape)}"
        )


def _check_output(output: str, task: str) -> None:
    if output not in ("probability", "logit"):
        raise ValueError(f"output must be 'probability' or 'logit', got {output!r}")
    if task not in ("multilabel", "multiclass"):
        raise ValueError(f"task must be 'multilabel' or 'multiclass', got {task!r}")


def _warn_if_training(model: Model) -> None:
    if isinstance(model, nn.Module) and model.training:
        warnings.warn(
            f"{type(model).__name__} is in train mode: dropout and batch statistics make the "
            "scores depend on the batch; call model.eval() first",
            stacklevel=3,
        )


def _targets(target: int | Tensor, n_records: int, device: torch.device) -> Tensor:
    t = torch.as_tensor(target, dtype=torch.long, device=device)
    if t.ndim == 0:
        return t.expand(n_records)
    if tuple(t.shape) != (n_records,):
        raise ValueError(f"target must be an int or shaped ({n_records},), got {tuple(t.shape)}")
    return t


def _captum_target(target: int | Tensor) -> int | Tensor:
    return int(target) if not isinstance(target, Tensor) or target.ndim == 0 else target.long()


def _baseline(baseline: Baseline, inputs: Tensor) -> Tensor:
    if isinstance(baseline, str):
        if baseline == "zero":
            return torch.zeros_like(inputs)
        if baseline == "mean":
            return inputs.mean(dim=-1, keepdim=True).expand_as(inputs)
        raise ValueError(f"baseline must be 'zero', 'mean' or a tensor, got {baseline!r}")
    b = torch.as_tensor(baseline, dtype=inputs.dtype, device=inputs.device)
    try:
        return b.expand_as(inputs)
    except RuntimeError as err:
        raise ValueError(
            f"baseline of shape {tuple(b.shape)} does not broadcast to inputs of shape "
            f"{tuple(inputs.shape)}"
        ) from err


def _outputs(model: Model, x: Tensor, output: Output, task: Task) -> Tensor:
    logits = model(x)
    if output == "logit":
        return logits
    return logits.sigmoid() if task == "multilabel" else logits.softmax(dim=-1)


def _select(logits: Tensor, target: Tensor, output: Output, task: Task) -> Tensor:
    if output == "probability":
        logits = logits.sigmoid() if task == "multilabel" else logits.softmax(dim=-1)
    return logits.gather(1, target[:, None]).squeeze(1)


def _unit_scores(attributions: Tensor, unit: Unit, segment: int) -> Tensor:
    """(B, units): one score per ranked unit, lead-major."""
    if unit == "sample":
        return attributions.flatten(1)
    if unit != "segment":
        raise ValueError(f"unit must be 'sample' or 'segment', got {unit!r}")
    if segment < 1:
        raise ValueError(f"segment must be >= 1 sample, got {segment}")
    n_records, n_leads, n_samples = attributions.shape
    n_windows = math.ceil(n_samples / segment)
    # zero padding leaves the last, shorter window's sum unchanged
    padded = F.pad(attributions, (0, n_windows * segment - n_samples))
    return padded.reshape(n_records, n_leads, n_windows, segment).sum(-1).flatten(1)


def _units_to_elements(
    mask: Tensor, n_leads: int, n_samples: int, unit: Unit, segment: int
) -> Tensor:
    """(n, units) -> (n, leads, samples)."""
    if unit == "sample":
        return mask.view(-1, n_leads, n_samples)
    windows = mask.view(mask.shape[0], n_leads, -1)
    return windows.repeat_interleave(segment, dim=-1)[..., :n_samples]


def _lead_scale(x: Tensor) -> Tensor:
    """(n, leads, 1) per-record, per-lead std: the unit of every perturbation here."""
    return x.std(dim=-1, keepdim=True, unbiased=False)


def _randn_like(x: Tensor, generator: torch.Generator) -> Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
