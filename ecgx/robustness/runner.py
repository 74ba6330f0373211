"""The robustness matrix: one split of a trained run scored clean and under each perturbation of
a ``conf/robustness`` preset, as a degradation table and a metric-against-SNR plot.

Where the perturbation applies: to the raw record as the dataset's reader returns it (mV, the
recorder's rate and leads), *before* the run's offline transforms, its fitted normalisation and
the evaluation view of its online transforms. A perturbation models the recording, so the run's
whole pipeline must meet it as it would meet a bad recording: a band-pass filter in the offline
transforms removes baseline wander here exactly as it would in use, and a lead subset picks
from the perturbed 12 leads. Scoring the cached (already filtered) signal instead would charge
the model for noise its own preprocessing removes. The clean row goes through the same path, so
it reproduces the run's test metric (the cache holds the same offline output).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ecgx.errors import ConfigValueError
from ecgx.evaluation.metrics import BootstrapCI, bootstrap_values, percentile_interval
from ecgx.evaluation.scoring import (
    Metric,
    check_metric,
    metric_function,
    quiet_metrics,
)
from ecgx.formats.record import Record
from ecgx.robustness.perturbations import Perturbation
from ecgx.tracking.compare import lower_is_better

log = logging.getLogger(__name__)

CLEAN = "clean"


@dataclass
class RobustnessResult:
    """The degradation table (one row per perturbation, ``clean`` first) and its files."""

    preset: str
    metric: str
    table: pd.DataFrame
    table_path: Path
    plot_path: Path | None
    child_run_ids: dict[str, str]
    predictions: pd.DataFrame  # the clean outputs, as ``ecgx eval`` writes them
    predictions_path: Path


def read_records(dataset: Any, meta: pd.DataFrame) -> list[Record]:
    """The raw records of ``meta``'s rows, through the dataset's reader."""
    return [dataset.read(row) for row in meta.to_dict("records")]


def _groups(keys: list[tuple]) -> dict[tuple, list[int]]:
    out: dict[tuple, list[int]] = {}
    for i, key in enumerate(keys):
        out.setdefault(key, []).append(i)
    return out


def stack_groups(records: list[Record]) -> dict[tuple, tuple[list[int], np.ndarray]]:
    """The records in batches of one rate, lead set and shape: key -> (members, stacked)."""
    keys = [(r.fs, tuple(r.leads), r.signal.shape) for r in records]
    out = {}
    for key, members in _groups(keys).items():
        x = np.stack([records[i].signal for i in members])
        x.flags.writeable = False  # shared by every perturbation, which must copy
        out[key] = (members, x)
    return out


def predict_perturbed(
    records: list[Record],
    perturbation: Perturbation | None,
    transform: Any,
    forward: Callable[[torch.Tensor], torch.Tensor],
    batch_size: int,
    rng: np.random.Generator,
    stacked: dict[tuple, tuple[list[int], np.ndarray]] | None = None,
) -> np.ndarray:
    """The model's outputs (records, classes) on ``records`` perturbed (None: clean), each
    through the run's offline transforms, normalisation and evaluation-time online view.

    Records sharing rate, leads and length are perturbed as one batch; the perturbation's
    random draws come from ``rng`` in record order, so a seed gives one result.
    """
    n = len(records)
    batches: list[tuple[list[int], np.ndarray]] = []  # (members, records of one shape)
    offline: list[np.ndarray | None] = [None] * n
    for (fs, leads, _), (members, x) in (stacked or stack_groups(records)).items():
        if perturbation is not None:
            x = perturbation(x, fs, leads, rng)
        if not getattr(transform, "offline", None):
            batches.append((members, x))  # nothing offline: the group is already a batch
            continue
        for pos, i in enumerate(members):
            offline[i] = transform.apply_offline(np.ascontiguousarray(x[pos]), fs)[0]
    done = [i for i, o in enumerate(offline) if o is not None]
    for _, members in _groups([offline[i].shape for i in done]).items():  # type: ignore[union-attr]
        rows = [done[k] for k in members]
        batches.append((rows, np.stack([offline[i] for i in rows])))
    outputs: np.ndarray | None = None
    for members, group in batches:
        for start in range(0, len(members), batch_size):
            part = members[start : start + batch_size]
            x = transform.apply_batch(group[start : start + batch_size].astype(np.float32,
                                                                                copy=False), None)  # fmt: skip
            with torch.inference_mode():
                out = forward(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
            out = out.float().cpu().numpy()
            if outputs is None:
                outputs = np.zeros((n, out.shape[1]), dtype=np.float64)
            outputs[part] = out
    assert outputs is not None
    return outputs


def degradation_row(
    name: str,
    perturbation: Perturbation | None,
    metric: str,
    fn: Metric,
    targets: np.ndarray,
    perturbed: np.ndarray,
    n_resamples: int,
    seed: int,
    clean: tuple[float, np.ndarray] | None = None,
) -> tuple[dict[str, Any], tuple[float, np.ndarray]]:
    """One row of the table, and the row's (score, resampled scores). ``clean``: the clean
    row's (score, resampled scores); None for the clean row itself. Drops are signed so that a
    positive drop is always worse (for a metric where lower is better, perturbed − clean). The
    drop's interval is a paired bootstrap: every row is resampled with the same draws (one seed,
    the same records), so clean and perturbed are scored on the same resample and their shared
    difficulty cancels; the clean row's resamples are scored once for the whole table."""
    sign = -1.0 if lower_is_better(metric) else 1.0
    with quiet_metrics():
        value = fn(targets, perturbed)
        values = bootstrap_values(fn, targets, perturbed, n_resamples, seed)
        score = percentile_interval(value, values)
        if clean is None:  # the clean row: no drop to resample
            clean_value = value
            drop = BootstrapCI(0.0, 0.0, 0.0, n_resamples, n_resamples)
        else:
            clean_value, clean_values = clean
            drop = percentile_interval(sign * (clean_value - value),
                                       sign * (clean_values - values))  # fmt: skip
    kind, snr = (
        (CLEAN, np.nan)
        if perturbation is None
        else (_kind(perturbation), np.nan if perturbation.snr_db is None else perturbation.snr_db)
    )
    return {
        "perturbation": name,
        "kind": kind,
        "settings": "" if perturbation is None else perturbation.describe(),
        "snr_db": snr,
        "metric": metric,
        "clean": clean_value,
        "perturbed": score.point,
        "perturbed_ci_low": score.low,
        "perturbed_ci_high": score.high,
        "drop_abs": drop.point,
        "drop_rel": drop.point / abs(clean_value) if clean_value else np.nan,
        "drop_ci_low": drop.low,
        "drop_ci_high": drop.high,
        "n_records": len(targets),
    }, (value, values)


def _kind(perturbation: Perturbation) -> str:
    """The perturbation without its SNR: one line of the SNR plot."""
    settings = {k: v for k, v in vars(perturbation).items() if k != "snr_db"}
    inner = ", ".join(f"{k}={v}" for k, v in settings.items())
    return f"{type(perturbation).__name__}({inner})" if inner else type(perturbation).__name__


def robustness_table(
    records: list[Record],
    targets: np.ndarray,
    perturbations: Mapping[str, Perturbation],
    transform: Any,
    forward: Callable[[torch.Tensor], torch.Tensor],
    task: str,
    names: list[str],
    metric: str,
    n_resamples: int = 200,
    seed: int = 0,
    batch_size: int = 64,
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """The degradation table and each row's outputs (``clean`` first)."""
    if CLEAN in perturbations:
        raise ConfigValueError(f"robustness.perturbations: {CLEAN!r} is the unperturbed row's "
                               "name; name the perturbation otherwise")  # fmt: skip
    fn = metric_function(task, metric, names)
    started = time.perf_counter()
    stacked = stack_groups(records)  # once for every row
    outputs = {CLEAN: predict_perturbed(records, None, transform, forward, batch_size,
                                        np.random.default_rng(seed), stacked)}  # fmt: skip
    check_metric(task, metric, names, targets, outputs[CLEAN], "robustness.metric")
    with quiet_metrics():
        row, clean = degradation_row(CLEAN, None, metric, fn, targets, outputs[CLEAN],
                                     n_resamples, seed)  # fmt: skip
        rows = [row]
        for k, (name, perturbation) in enumerate(perturbations.items(), start=1):
            rng = np.random.default_rng([seed, k])  # one stream per perturbation: order-free
            outputs[name] = predict_perturbed(records, perturbation, transform, forward,
                                              batch_size, rng, stacked)  # fmt: skip
            rows.append(degradation_row(name, perturbation, metric, fn, targets, outputs[name],
                                        n_resamples, seed, clean)[0])  # fmt: skip
            log.info("robustness: %s %s=%.4f (clean %.4f)", name, metric,
                     rows[-1]["perturbed"], rows[0]["perturbed"])  # fmt: skip
    log.info("robustness: %d perturbations of %d records in %.1fs", len(perturbations),
             len(records), time.perf_counter() - started)  # fmt: skip
    return pd.DataFrame(rows), outputs


def format_degradation(table: pd.DataFrame) -> str:
    """The table as a person reads it: one line per perturbation."""
    head = f"{'perturbation':<24} {'SNR dB':>6} {'score (95 % CI)':>26} {'drop':>8} {'rel':>7} " \
           f"{'drop 95 % CI':>20}"  # fmt: skip
    lines = [head, "-" * len(head)]
    for r in table.itertuples(index=False):
        snr = "" if np.isnan(r.snr_db) else f"{r.snr_db:g}"
        score = f"{r.perturbed:.4f} ({r.perturbed_ci_low:.4f}-{r.perturbed_ci_high:.4f})"
        drop = f"{r.drop_ci_low:+.4f} to {r.drop_ci_high:+.4f}"
        lines.append(f"{r.perturbation:<24} {snr:>6} {score:>26} {r.drop_abs:>+8.4f} "
                     f"{r.drop_rel:>+7.1%} {drop:>20}")  # fmt: skip
    return "\n".join(lines)
