"""Whether probabilities mean what they say: calibration errors, Brier score, reliability
diagrams, and temperature scaling (Guo et al. 2017) fitted on validation logits.

* Per class: the binary reliability of ``p[:, k]`` against ``y[:, k]`` (both tasks).
* Overall: multi-label pools every (record, class) pair as one binary problem; single-label
  (multiclass) uses the top-label confidence (max p against whether the argmax is right), as
  Guo et al.
* ECE = Σ_b (n_b / N) |accuracy_b − confidence_b| over ``n_bins`` equal-width bins of [0, 1]
  (a bin is [e_b, e_{b+1}), the last one closed); MCE = the largest of those gaps over non-empty
  bins. Both from torchmetrics (``norm="l1"`` and ``"max"``). The Brier score, which
  torchmetrics lacks, is written here: the mean of (p − y)² per class; overall, the mean over
  classes (multi-label) or the multi-class Brier, Σ_k (p_k − y_k)² averaged over records.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torchmetrics.functional.classification import (
    binary_calibration_error,
    multiclass_calibration_error,
)

from ecgx.errors import ConfigValueError

N_BINS = 15  # Guo et al.'s choice, and torchmetrics' default
#: Outside this range a fitted temperature only says the model is near chance (T → ∞ flattens
#: every output to the base rate) or its validation outputs separate perfectly (T → 0); float32
#: probabilities would then tie (all ≈ the base rate, or saturated at 0 and 1) and change the
#: ranking that AUROC scores. Guo et al.'s fitted temperatures lie within 1-4.
TEMPERATURE_RANGE = (0.05, 20.0)
log = logging.getLogger(__name__)
MODES = ("shared", "per_class")


def _binary(p: np.ndarray, y: np.ndarray, norm: str, n_bins: int) -> float:
    p, y = np.ascontiguousarray(p), np.ascontiguousarray(y)  # a column slice is strided
    return float(binary_calibration_error(torch.as_tensor(p, dtype=torch.float64),
                                          torch.as_tensor(y, dtype=torch.long), n_bins=n_bins,
                                          norm=norm))  # fmt: skip


def calibration_metrics(
    task: str, probs: np.ndarray, targets: np.ndarray, names: list[str], n_bins: int = N_BINS
) -> dict[str, float]:
    """``ece``, ``mce``, ``brier`` overall and ``ece_<class>``, ``mce_<class>``,
    ``brier_<class>`` per class, unprefixed (logged as ``test/…``)."""
    probs = np.asarray(probs, dtype=float)
    targets = np.asarray(targets).astype(int)
    if task == "multiclass":
        p, y = torch.as_tensor(probs), torch.as_tensor(targets.argmax(1))
        k = probs.shape[1]
        out = {norm_name: float(multiclass_calibration_error(p, y, k, n_bins=n_bins, norm=norm))
               for norm_name, norm in (("ece", "l1"), ("mce", "max"))}  # fmt: skip
        out["brier"] = float(np.mean(np.sum((probs - targets) ** 2, axis=1)))
    else:
        out = {"ece": _binary(probs.ravel(), targets.ravel(), "l1", n_bins),
               "mce": _binary(probs.ravel(), targets.ravel(), "max", n_bins),
               "brier": float(np.mean((probs - targets) ** 2))}  # fmt: skip
    for i, name in enumerate(names):
        out[f"ece_{name}"] = _binary(probs[:, i], targets[:, i], "l1", n_bins)
        out[f"mce_{name}"] = _binary(probs[:, i], targets[:, i], "max", n_bins)
        out[f"brier_{name}"] = float(np.mean((probs[:, i] - targets[:, i]) ** 2))
    return out


def reliability_bins(
    probs: np.ndarray, targets: np.ndarray, n_bins: int = N_BINS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean confidence, observed frequency, count) per bin, the bins of :func:`calibration_metrics`;
    NaN where a bin is empty."""
    p, y = np.asarray(probs, dtype=float).ravel(), np.asarray(targets, dtype=float).ravel()
    index = np.clip(np.searchsorted(np.linspace(0, 1, n_bins + 1), p, side="right") - 1, 0,
                    n_bins - 1)  # fmt: skip
    count = np.bincount(index, minlength=n_bins).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.bincount(index, p, minlength=n_bins) / count
        freq = np.bincount(index, y, minlength=n_bins) / count
    return conf, freq, count


def reliability_diagram(
    probs: np.ndarray,
    targets: np.ndarray,
    names: list[str],
    path: str | Path,
    title: str = "Reliability",
    n_bins: int = N_BINS,
) -> Path:
    """Observed frequency against mean predicted probability per bin, one line per class and
    the pooled one, beside the diagonal of perfect calibration; below, how many predictions
    fall in each bin (a gap in an almost empty bin means little)."""
    import matplotlib

    matplotlib.use("Agg")  # headless: runs on clusters and in CI without a display
    import matplotlib.pyplot as plt

    fig, (ax, hist) = plt.subplots(2, 1, figsize=(6, 7), dpi=120, sharex=True,
                                   gridspec_kw={"height_ratios": [3, 1]})  # fmt: skip
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--", label="perfectly calibrated")
    metrics = calibration_metrics("multilabel", probs, targets, names, n_bins)
    for i, name in enumerate(names):
        conf, freq, _ = reliability_bins(probs[:, i], targets[:, i], n_bins)
        ax.plot(
            conf, freq, marker="o", ms=3, lw=1, label=f"{name} (ECE {metrics[f'ece_{name}']:.3f})"
        )
    conf, freq, count = reliability_bins(probs, targets, n_bins)
    ax.plot(conf, freq, color="black", lw=2, marker="s", ms=4,
            label=f"all classes (ECE {metrics['ece']:.3f})")  # fmt: skip
    ax.set(ylabel="observed frequency", title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    edges = np.linspace(0, 1, n_bins + 1)
    hist.bar(edges[:-1], count, width=1 / n_bins, align="edge", color="#4c78a8")
    hist.set(xlabel="predicted probability", ylabel="predictions")
    hist.set_yscale("log")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def check_calibration(task: str, mode: str) -> None:
    """ConfigValueError naming ``module.calibrate`` / ``module.calibration`` when they cannot
    apply (checked when the module is built, not after training)."""
    if mode not in MODES:
        raise ConfigValueError(f"module.calibration must be one of {MODES}, got {mode!r}")
    if task not in ("multilabel", "multiclass"):
        raise ConfigValueError(f"module.calibrate: temperature scaling needs a classification "
                               f"task, not {task!r}")  # fmt: skip


def fit_temperature(
    logits: torch.Tensor, targets: torch.Tensor, task: str, mode: str = "shared"
) -> torch.Tensor:
    """The temperature T minimising the negative log-likelihood of ``logits / T`` on
    ``targets`` (validation): sigmoid/BCE for multi-label, softmax/cross-entropy for
    multiclass. ``mode="shared"`` fits one T (shape (1,)); ``"per_class"`` one per class
    (shape (C,)). Optimised in log T with L-BFGS, so T stays positive; T > 1 softens
    over-confident outputs. Dividing by a positive T keeps each class's ranking of the records,
    so per-class AUROC of a multi-label model is unchanged."""
    check_calibration(task, mode)
    logits = logits.detach().double().cpu()
    targets = targets.detach().double().cpu()
    log_t = torch.zeros(logits.shape[1] if mode == "per_class" else 1, dtype=torch.float64,
                        requires_grad=True)  # fmt: skip
    optimiser = torch.optim.LBFGS([log_t], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        optimiser.zero_grad()
        scaled = logits / log_t.exp()
        if task == "multilabel":
            value = torch.nn.functional.binary_cross_entropy_with_logits(scaled, targets)
        else:
            value = torch.nn.functional.cross_entropy(scaled, targets.argmax(1))
        value.backward()
        return value

    optimiser.step(loss)
    fitted = log_t.detach().exp()
    # The NLL is convex in 1/T (a one-parameter logistic model per temperature), so clamping
    # the free optimum gives the best temperature inside the range.
    low, high = TEMPERATURE_RANGE
    clamped = fitted.clamp(low, high)
    if not torch.equal(clamped, fitted):
        log.warning("temperature scaling: fitted %s clamped to [%g, %g] (a model near chance, "
                    "or validation outputs that separate perfectly)",
                    [round(float(t), 4) for t in fitted], low, high)  # fmt: skip
    return clamped.float()


def stored_temperature(checkpoint: dict) -> torch.Tensor | None:
    """The temperature a checkpoint's module fitted (``module.calibrate=true`` in training), or
    None when it holds none."""
    state = checkpoint.get("state_dict", {})
    fitted = state.get("temperature_fitted")
    if fitted is None or not bool(fitted):
        return None
    return state["temperature"].float().reshape(-1)
