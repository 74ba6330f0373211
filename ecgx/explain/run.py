"""Run an explainer over records of a trained model and log what it finds.

One pass gives, for the chosen records (a split's first ``records``, or ``record_ids``):
- the attributions (``attributions.npz``: record ids, target class, array like the inputs);
- paper-ECG plots of the first ``plots`` records with the attribution as overlay (and, for
  IMLE-Net's attention, its beat / rhythm / channel maps);
- population level (CPSC seed, spec B6): per target class the share of |attribution| on each
  lead, a class × lead heatmap with an average row;
- glocal (XAI4ECG, spec 3.4): mean |attribution| per lead and waveform segment from ecgx's own
  delineation, a lead × segment heatmap;
- faithfulness: deletion / insertion curves against a random ranking, their areas as metrics.

Everything is written under ``explain/<name>/`` of the run's artifacts, and the scalar results
as ``explain/<name>/<metric>`` metrics, so ``ecgx compare`` can rank explainers.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from ecgx.errors import ConfigValueError
from ecgx.explain.methods import Attention, Method
from ecgx.formats.record import LEADS

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


@dataclass
class Explanation:
    name: str
    record_ids: list[str]
    targets: np.ndarray  # (B,) class index explained per record
    attributions: np.ndarray  # like the model inputs
    metrics: dict[str, float] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)


def pick_targets(
    probs: torch.Tensor, truth: torch.Tensor, how: str, class_names: list[str]
) -> torch.Tensor:
    """The class explained per record: ``predicted`` (highest score, the CPSC seed's patient
    level), ``true`` (first true class; the predicted one where a record has none) or a class
    name."""
    if how == "predicted":
        return probs.argmax(1)
    if how == "true":
        has = truth.sum(1) > 0
        return torch.where(has, truth.float().argmax(1), probs.argmax(1))
    if how in class_names:
        return torch.full((len(probs),), class_names.index(how), dtype=torch.long)
    raise ConfigValueError(
        f"explainer.target must be predicted, true or one of {class_names}, got {how!r}"
    )


def _rows(datamodule: Any, node: DictConfig) -> np.ndarray:
    """Cache rows to explain: ``record_ids`` if given, else the first records of the split."""
    if node.get("record_ids"):
        meta_ids = datamodule.cache.meta["record_id"].astype(str).to_numpy()
        wanted = [str(r) for r in node.record_ids]
        missing = sorted(set(wanted) - set(meta_ids))
        if missing:
            raise ConfigValueError(f"explainer.record_ids not in the dataset: {missing[:5]}")
        position = {r: i for i, r in enumerate(meta_ids)}
        return np.array([position[r] for r in wanted])
    split = node.get("split", "test")
    if split not in datamodule.indices:
        raise ConfigValueError(f"explainer.split must be one of {list(datamodule.indices)}")
    return datamodule.indices[split][: int(node.get("records", 32))]


def _inputs(datamodule: Any, rows: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
    """Model inputs (normalised, evaluation view) and the same view in the cache's units (mV)."""
    transform, cache = datamodule.transform, datamodule.cache
    model_in, raw = [], []
    for j in rows:
        x = cache[int(j)]
        view = transform.apply_online(x, None)
        raw.append(np.asarray(view, dtype=np.float32))
        if transform.normalize is not None:
            x = transform.normalize(x)
        model_in.append(np.asarray(transform.apply_online(x, None), dtype=np.float32))
    return torch.from_numpy(np.stack(model_in)), np.stack(raw)


def _background(datamodule: Any, size: int, seed: int) -> torch.Tensor:
    """Baselines for SHAP-type methods: ``size`` training records drawn without replacement."""
    train = datamodule.indices["train"]
    rng = np.random.default_rng(seed)
    rows = rng.choice(train, size=min(size, len(train)), replace=False)
    return _inputs(datamodule, rows)[0]


def _chart_transform(datamodule: Any) -> Any:
    from ecgx.transforms.chart import ChartImage

    offline = getattr(datamodule.transform, "offline", None) or []
    return next((t for t in offline if isinstance(t, ChartImage)), None)


def lead_shares(attributions: np.ndarray) -> np.ndarray:
    """(B, leads, T) -> (B, leads): each lead's share of the record's total |attribution|."""
    per_lead = np.abs(attributions).sum(-1)
    total = per_lead.sum(1, keepdims=True)
    return np.divide(per_lead, total, out=np.zeros_like(per_lead), where=total > 0)


def population_matrix(
    shares: np.ndarray, targets: np.ndarray, num_classes: int
) -> tuple[np.ndarray, list[int]]:
    """Mean lead shares per explained class (rows: classes that occur)."""
    present = [c for c in range(num_classes) if (targets == c).any()]
    return np.stack([shares[targets == c].mean(0) for c in present]), present


@dataclass
class _Attributed:
    """The records as the model saw them, the class explained for each, and the attributions."""

    x: torch.Tensor
    targets: torch.Tensor
    attributions: torch.Tensor


def explain(
    node: DictConfig,
    net: nn.Module,
    datamodule: Any,
    task: str,
    out_dir: str | Path,
    seed: int = 0,
) -> Explanation:
    """Attribute, aggregate, score and plot; files go to ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    net = net.eval()
    method: Method = instantiate(node.method)(net)
    name = node.get("name") or type(method).__name__.lower()
    rows = _rows(datamodule, node)
    x, raw = _inputs(datamodule, rows)
    # The model's other inputs (e.g. demographics), held at each record's own values.
    extras = {k: torch.from_numpy(v[rows]) for k, v in getattr(datamodule, "extras", {}).items()}
    if method.needs_background:
        method.set_background(_background(datamodule, int(node.get("background", 32)), seed))
    probs = _probabilities(net, x, task, extras)
    truth = torch.from_numpy(datamodule.targets[rows])
    names = list(datamodule.class_names)
    targets = pick_targets(probs, truth, str(node.get("target", "predicted")), names)
    ids = datamodule.cache.meta["record_id"].iloc[rows].astype(str).tolist()
    result, batch = _attribute(method, name, ids, x, targets, out_dir, extras)
    held = f"; {', '.join(extras)} held fixed" if extras else ""

    a = result.attributions
    chart = _chart_transform(datamodule)
    is_signal = chart is None and x.ndim == 3 and x.shape[1] == len(datamodule.cache.leads)
    leads = list(datamodule.cache.leads)
    fs = datamodule.cache.fs
    n_plots = min(int(node.get("plots", 3)), len(rows))
    if is_signal:
        # The class explained in each title, with the model's confidence in it.
        titles = [f"{name}: record {ids[k]}, class {names[targets[k]]} "
                  f"(p={probs[k, targets[k]]:.2f}){held}" for k in range(n_plots)]  # fmt: skip
        layout = str(node.get("layout", "12x1"))
        _plot_records(result, raw, fs, leads, titles, method.signed, layout, out_dir)
    a_leads = a
    if chart is not None:
        titles = [f"{name}: record {ids[k]}, class {names[targets[k]]}" for k in range(n_plots)]
        a_leads = _chart_outputs(result, chart, raw, fs, titles, method.signed, out_dir)
        leads = list(LEADS)
    if isinstance(method, Attention) and is_signal:
        _plot_attention(result, method, x, raw[0], fs, leads, out_dir)

    if (is_signal or chart is not None) and node.get("population", True):
        _plot_population(result, a_leads, leads, names, out_dir)
    truth = _ground_truth(node, datamodule) if is_signal else None
    masks = None
    if is_signal and node.get("glocal", True):
        masks = _segment_masks(node, ids, raw, fs)
        result.metrics.update(_glocal(a, masks, leads, name, out_dir, result.files))
    if truth is not None:
        from ecgx.explain.ground_truth import graded_map, scores

        true_masks = truth_masks(truth, ids, datamodule, raw.shape[-1])
        if true_masks is None:
            true_masks = masks if masks is not None else _segment_masks(node, ids, raw, fs)
        strength = truth.lead_segment(ids, [names[t] for t in result.targets])
        graded = graded_map(strength, true_masks)
        result.metrics.update(scores(a, graded, float(node.get("ground_truth_threshold", 0.25))))
    if is_signal and int(node.get("randomisation_steps", 4)) > 0 and not extras:
        _randomisation(result, node, net, batch, datamodule, seed)
    if extras and node.get("faithfulness", True):
        # Their perturbed batches mix records, which the held extras cannot follow.
        log.warning("faithfulness scores skipped: the model also takes %s", ", ".join(extras))
    elif node.get("faithfulness", True):
        _deletion_insertion(result, node, net, batch, task, seed, out_dir)
    if (
        not extras
        and node.get("faithfulness", True)
        and int(node.get("sensitivity_records", 8)) > 0
    ):
        _robustness(result, node, net, method, batch, task, seed)
    return result


def _probabilities(
    net: nn.Module, x: torch.Tensor, task: str, extras: dict[str, torch.Tensor] | None = None
) -> torch.Tensor:
    extras = extras or {}
    with torch.no_grad():
        logits = torch.cat([net(x[i : i + 64], **{k: v[i : i + 64] for k, v in extras.items()})
                            for i in range(0, len(x), 64)])  # fmt: skip
    return torch.sigmoid(logits) if task == "multilabel" else torch.softmax(logits, 1)


def _attribute(
    method: Method,
    name: str,
    ids: list[str],
    x: torch.Tensor,
    targets: torch.Tensor,
    out_dir: Path,
    extras: dict[str, torch.Tensor] | None = None,
) -> tuple[Explanation, _Attributed]:
    """Run the explainer (timed) and keep its attributions in ``attributions.npz``."""
    start = time.perf_counter()
    attributions = method.attribute(x, targets, extras=extras)
    seconds = time.perf_counter() - start
    a = attributions.numpy()
    result = Explanation(name, ids, targets.numpy(), a)
    result.metrics["seconds_per_record"] = seconds / len(ids)
    np.savez_compressed(out_dir / "attributions.npz", record_id=np.array(ids),
                        target=targets.numpy(), attributions=a.astype(np.float32))  # fmt: skip
    result.files.append(out_dir / "attributions.npz")
    return result, _Attributed(x, targets, attributions)


def _plot_records(
    result: Explanation,
    raw: np.ndarray,
    fs: float,
    leads: list[str],
    titles: list[str],
    signed: bool,
    layout: str,
    out_dir: Path,
) -> None:
    """Paper-ECG plots of the first records (one per title), the attribution as overlay."""
    from ecgx.explain import plots

    a, ids = result.attributions, result.record_ids
    for k, title in enumerate(titles):
        # The colour scale saturates at the 99.5th percentile of |attribution|: gradient maps
        # have a few extreme samples that would otherwise leave the rest of the record white.
        vmax = float(np.percentile(np.abs(a[k]), 99.5)) or None
        fig = plots.ecg_paper(raw[k], fs, leads=leads, attribution=a[k], title=title,
                              signed=signed, vmax=vmax, layout=layout)  # fmt: skip
        result.files.append(plots.save(fig, out_dir / f"record_{ids[k]}.png"))


def _chart_outputs(
    result: Explanation,
    chart: Any,
    raw: np.ndarray,
    fs: float,
    titles: list[str],
    signed: bool,
    out_dir: Path,
) -> np.ndarray:
    """Chart models: the attribution summed back onto lead × time through the layout (what
    lead and moment each pixel draws), kept in ``projected_lead_time.npz`` and returned; the
    first records' pictures with their attribution on top (one per title)."""
    from ecgx.explain import plots

    a, ids = result.attributions, result.record_ids
    n_samples = int(round(chart.duration * fs))
    images = [a[k].reshape(chart.output_shape) for k in range(len(ids))]
    projected = np.stack([chart.project(img, fs, n_samples) for img in images])
    np.savez_compressed(out_dir / "projected_lead_time.npz", record_id=np.array(ids),
                        attributions=projected.astype(np.float32))  # fmt: skip
    result.files.append(out_dir / "projected_lead_time.npz")
    for k, title in enumerate(titles):
        fig = plots.image_overlay(raw[k].reshape(chart.output_shape), images[k].sum(0),
                                  title=title, signed=signed)  # fmt: skip
        result.files.append(plots.save(fig, out_dir / f"record_{ids[k]}.png"))
    return projected


def _plot_attention(
    result: Explanation,
    method: Attention,
    x: torch.Tensor,
    raw: np.ndarray,
    fs: float,
    leads: list[str],
    out_dir: Path,
) -> None:
    """IMLE-Net's beat / rhythm / channel attention maps of the first record."""
    from ecgx.explain import plots

    rid = result.record_ids[0]
    maps = {k: v[0].numpy() for k, v in method.maps(x[:1]).items()}
    for level, fig in plots.attention_maps(maps["beat"], maps["rhythm"], maps["channel"],
                                           raw, fs, leads=leads).items():  # fmt: skip
        result.files.append(plots.save(fig, out_dir / f"attention_{level}_{rid}.png"))


def _plot_population(
    result: Explanation, a_leads: np.ndarray, leads: list[str], names: list[str], out_dir: Path
) -> None:
    """Class × lead heatmap of each lead's share of |attribution| (CPSC seed, spec B6)."""
    from ecgx.explain import plots

    shares = lead_shares(a_leads)
    matrix, present = population_matrix(shares, result.targets, len(names))
    fig = plots.heatmap(matrix, [names[c] for c in present], leads, average_row=True,
                        title=f"{result.name}: share of |attribution| per lead, by class",
                        cbar_label="share of |attribution|")  # fmt: skip
    result.files.append(plots.save(fig, out_dir / "population_class_x_lead.png"))


def _faithfulness_task(task: str) -> str:
    # The faithfulness scores know only these two tasks; regression falls back to multilabel.
    return "multiclass" if task == "multiclass" else "multilabel"


def _deletion_insertion(
    result: Explanation,
    node: DictConfig,
    net: nn.Module,
    batch: _Attributed,
    task: str,
    seed: int,
    out_dir: Path,
) -> None:
    """Deletion / insertion curves against a random ranking: their areas as metrics, and a
    plot of the mean curves."""
    from ecgx.explain import plots
    from ecgx.explain.faithfulness import deletion_insertion, random_baseline_curves

    x, name = batch.x, result.name
    steps = int(node.get("faithfulness_steps", 20))
    options = {"steps": steps, "unit": "segment", "segment": max(1, x.shape[-1] // 50),
               "task": _faithfulness_task(task)}  # fmt: skip
    if x.ndim != 3:
        options = {"steps": steps, "task": options["task"]}
    curves = deletion_insertion(net, x, batch.targets, batch.attributions, **options)
    chance = random_baseline_curves(net, x, batch.targets, seed=seed, **options)
    result.metrics.update(curves.metrics(""))
    result.metrics.update(chance.metrics("random_"))
    fig = plots.curves(curves.fractions, {f"{name} deletion": curves.deletion.mean(0),
                                          f"{name} insertion": curves.insertion.mean(0),
                                          "random deletion": chance.deletion.mean(0),
                                          "random insertion": chance.insertion.mean(0)},
                       xlabel="fraction of input removed / inserted",
                       ylabel="class score", title=f"{name}: deletion and insertion")  # fmt: skip
    result.files.append(plots.save(fig, out_dir / "deletion_insertion.png"))


def _robustness(
    result: Explanation,
    node: DictConfig,
    net: nn.Module,
    method: Method,
    batch: _Attributed,
    task: str,
    seed: int,
) -> None:
    """captum's infidelity and max-sensitivity on the first records: sensitivity explains
    every perturbed copy again, so it costs n_perturb_samples attributions per record."""
    from ecgx.explain.faithfulness import infidelity, sensitivity

    x, targets = batch.x, batch.targets
    k = min(len(x), int(node.get("sensitivity_records", 8)))
    infid = infidelity(net, batch.attributions[:k], x[:k], targets[:k],
                       task=_faithfulness_task(task),
                       multiply_by_inputs=method.multiplies_by_inputs, seed=seed)  # fmt: skip
    # One record at a time: captum's sensitivity_max re-batches the inputs without
    # splitting a per-record target along with them.
    sens = [sensitivity(net, method, x[i : i + 1], int(targets[i]), seed=seed,
                        n_perturb_samples=int(node.get("sensitivity_samples", 5)))
            for i in range(k)]  # fmt: skip
    result.metrics["infidelity"] = float(np.mean(infid))
    result.metrics["sensitivity_max"] = float(np.mean(sens))


def _ground_truth(node: DictConfig, datamodule: Any) -> Any:
    """The dataset's ground truth when ``ground_truth`` is ``auto`` and its root has one, or is
    ``true``; None otherwise."""
    from ecgx.explain import ground_truth

    want = node.get("ground_truth", "auto")
    if want not in ("auto", True, False):
        raise ConfigValueError(f"explainer.ground_truth must be auto, true or false, got {want!r}")
    root = getattr(getattr(datamodule, "dataset", None), "root", None)
    if want is False or (
        want == "auto" and (root is None or not (Path(root) / ground_truth.FILE).is_file())
    ):
        return None
    if root is None:
        raise ConfigValueError("explainer.ground_truth=true but the dataset has no root folder")
    return ground_truth.load(root)


def truth_masks(truth: Any, ids: list[str], datamodule: Any, n: int) -> np.ndarray | None:
    """(B, 6, n) segment masks from the generator's beat bounds, carried onto the explained
    view through the run's transforms; None (with the reason logged) where the set predates
    the bounds or the view's time axis is not known, and ecgx's delineation stands in."""
    from ecgx.explain.ground_truth import FILE
    from ecgx.transforms.signal import TimeAxis

    fs = getattr(getattr(datamodule, "dataset", None), "sampling_rate", None)
    if truth.beat_bounds is None:
        log.warning("ground truth: segments from ecgx's delineation: this set's %s was written "
                    "before the generator recorded its beat bounds (delete the set's folder to "
                    "regenerate it: the records come out the same)", FILE)  # fmt: skip
        return None
    if fs is None:
        log.info("ground truth: segments from ecgx's delineation (the dataset has no "
                 "sampling_rate to place the beat bounds)")  # fmt: skip
        return None
    read = TimeAxis(0.0, float(fs), int(round(truth.duration_s * float(fs))))
    axis = datamodule.transform.eval_time_axis(read)
    if axis is None or axis.n != n or abs(axis.fs - float(datamodule.cache.fs)) > 1e-6:
        log.info("ground truth: segments from ecgx's delineation (the transforms' time axis "
                 "%s does not match the view of %d samples at %s Hz)", axis, n,
                 datamodule.cache.fs)  # fmt: skip
        return None
    return truth.segment_masks(ids, axis)


def _randomisation(
    result: Explanation, node: DictConfig, net: nn.Module, batch: _Attributed, datamodule: Any,
    seed: int,
) -> None:  # fmt: skip
    """Cascading model randomisation on the first ``randomisation_records``: ρ after the output
    layer alone and after every layer is randomised (both should be far below 1)."""
    from ecgx.explain.ground_truth import cascading_randomisation

    k = min(len(batch.x), int(node.get("randomisation_records", 8)))
    x, targets = batch.x[:k], batch.targets[:k]
    background = _background(datamodule, int(node.get("background", 32)), seed)

    def attribute(model: nn.Module) -> torch.Tensor:
        method: Method = instantiate(node.method)(model.eval())
        if method.needs_background:
            method.set_background(background)
        return method.attribute(x, targets)

    # The run's own attributions of these records are the trained model's reference.
    steps = cascading_randomisation(net, attribute, int(node.get("randomisation_steps", 4)), seed,
                                    reference=batch.attributions[:k])  # fmt: skip
    result.metrics["randomisation_top_layer"] = steps[0][1]
    result.metrics["randomisation_all_layers"] = steps[-1][1]


def _segment_masks(node: DictConfig, ids: list[str], raw: np.ndarray, fs: float) -> np.ndarray:
    """(B, 6, T) masks from ecgx's delineation, or the user's soft segmentations: files
    ``<segmentation_dir>/<record id>.npy|.npz`` ((samples, leads, classes) as XAI4ECG's, or
    (classes, samples)), fine classes mapped onto the 6 segments by ``segmentation_mapping``."""
    from ecgx.explain.delineation import SEGMENTS, delineate
    from ecgx.explain.segments import load_soft_segmentation

    folder = node.get("segmentation_dir")
    if not folder:
        return np.stack([delineate(r, fs).mask(r.shape[-1]) for r in raw])
    mapping = node.get("segmentation_mapping")
    mapping = {int(k): str(v) for k, v in mapping.items()} if mapping else None
    masks = []
    for rid in ids:
        found = [Path(folder) / f"{rid}{ext}" for ext in (".npy", ".npz")]
        path = next((p for p in found if p.is_file()), None)
        if path is None:
            raise ConfigValueError(f"explainer.segmentation_dir: no {rid}.npy or .npz in {folder}")
        masks.append(load_soft_segmentation(path, raw.shape[-1], SEGMENTS, mapping))
    return np.stack(masks)


def _glocal(
    a: np.ndarray, masks: np.ndarray, leads: list[str], name: str, out_dir: Path,
    files: list[Path],
) -> dict[str, float]:  # fmt: skip
    from ecgx.explain import plots
    from ecgx.explain.delineation import SEGMENTS
    from ecgx.explain.segments import mean_segment_attribution, segment_attribution

    per_record = segment_attribution(np.abs(a), masks)
    matrix = mean_segment_attribution(per_record)
    fig = plots.heatmap(matrix, leads, list(SEGMENTS), title=f"{name}: mean |attribution| per "
                        "lead and waveform segment", cbar_label="mean |attribution|")  # fmt: skip
    files.append(plots.save(fig, out_dir / "glocal_lead_x_segment.png"))
    # Share of the attribution mass on each segment (all leads), for comparing explainers.
    per_lead = masks if masks.ndim == 4 else masks[:, None, :, :]  # (B, leads or 1, K, T)
    mass = np.nansum(np.abs(a)[:, :, None, :] * per_lead, axis=(0, 1, 3))
    total = mass.sum()
    return {f"segment_share_{s}": float(m / total) if total else float("nan")
            for s, m in zip(SEGMENTS, mass, strict=True)}  # fmt: skip


def log_explanation(client: Any, run_id: str, result: Explanation) -> None:
    """Files under ``explain/<name>/``, scalars as ``explain/<name>/<metric>``."""
    from ecgx.tracking.mlflow_run import log_file

    for path in result.files:
        log_file(client, run_id, path, f"explain/{result.name}")
    for key, value in result.metrics.items():
        if np.isfinite(value):
            client.log_metric(run_id, f"explain/{result.name}/{key}", float(value))
    _log_leaderboard(client, run_id)


#: the leaderboard's columns: ground truth, sanity, faithfulness, robustness, cost
LEADERBOARD = ("pointing_game", "relevance_mass", "chance_mass", "rank_correlation",
               "randomisation_top_layer", "randomisation_all_layers", "deletion_auc",
               "insertion_auc", "infidelity", "sensitivity_max", "seconds_per_record")  # fmt: skip


def leaderboard(metrics: dict[str, float]) -> pd.DataFrame:
    """Explainers of one run (rows) by their ``explain/<name>/<metric>`` scores, best relevance
    mass first."""
    import pandas as pd

    rows: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        parts = key.split("/")
        if len(parts) == 3 and parts[0] == "explain" and parts[2] in LEADERBOARD:
            rows.setdefault(parts[1], {})[parts[2]] = value
    table = pd.DataFrame.from_dict(rows, orient="index", columns=list(LEADERBOARD))
    table.index.name = "explainer"
    return table.sort_values("relevance_mass", ascending=False, na_position="last")


def _log_leaderboard(client: Any, run_id: str) -> None:
    """``explain/leaderboard.csv`` and ``.txt`` of every explainer logged to the run so far."""
    from ecgx.tracking.mlflow_run import log_file

    table = leaderboard(client.get_run(run_id).data.metrics)
    with tempfile.TemporaryDirectory() as tmp:
        csv, txt = Path(tmp) / "leaderboard.csv", Path(tmp) / "leaderboard.txt"
        table.to_csv(csv)
        txt.write_text(table.round(4).to_string() + "\n")
        log_file(client, run_id, csv, "explain")
        log_file(client, run_id, txt, "explain")


def explain_and_log(
    node: DictConfig,
    net: nn.Module,
    datamodule: Any,
    task: str,
    client: Any = None,
    run_id: str | None = None,
    seed: int = 0,
    out_dir: str | Path | None = None,
) -> Explanation:
    """:func:`explain`, then log to the MLflow run (if given) and/or keep files in ``out_dir``."""
    with tempfile.TemporaryDirectory() as tmp:
        if node.get("concepts") is not None:
            result = explain_tcav(node, net, datamodule, out_dir or tmp, seed)
        else:
            result = explain(node, net, datamodule, task, out_dir or tmp, seed)
        if client is not None and run_id is not None:
            log_explanation(client, run_id, result)
    log.info("explainer %s: %s", result.name, {k: round(v, 4) for k, v in result.metrics.items()})
    return result


def explain_after_training(
    cfg: DictConfig, module: Any, datamodule: Any, run: Any
) -> dict[str, float]:
    """``explainer=`` of a training config, run on the module's (best) weights after testing and
    logged into the training run; its metrics as ``explain/<method>/<name>``. Nothing when the
    config has no explainer."""
    node = cfg.get("explainer") or {}
    if not (node.get("method") or node.get("concepts")):
        return {}
    datamodule.setup("test")
    net = getattr(module.net, "_orig_mod", module.net)  # the eager model under torch.compile
    explanation = explain_and_log(node, net, datamodule, module.task, run.client, run.run_id,
                                  seed=cfg.get("seed") or 0)  # fmt: skip
    return {f"explain/{explanation.name}/{k}": v for k, v in explanation.metrics.items()}


def explain_tcav(
    node: DictConfig, net: nn.Module, datamodule: Any, out_dir: str | Path, seed: int = 0
) -> Explanation:
    """TCAV (XAI4ECG, spec 3.4): concepts of config against random counterexamples.

    Concept examples and the random pool come from the training split (a concept's records vs
    records in no concept), the scored inputs from ``node.split``: records whose truth has the
    target class (the seed scored every ECG with the pathology), at most ``node.records``.
    """
    from ecgx.explain.tcav import run_tcav

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = list(datamodule.class_names)
    if node.target not in names:
        raise ConfigValueError(f"explainer.target must be one of {names} for TCAV, got "
                               f"{node.target!r}")  # fmt: skip
    target = names.index(node.target)
    if not node.get("concepts"):
        raise ConfigValueError("explainer.concepts is empty: name at least one concept rule")
    concept_inputs, random_inputs = _concept_examples(node, datamodule, seed)
    split = datamodule.indices[node.get("split", "test")]
    scored = split[datamodule.targets[split, target] > 0][: int(node.get("records", 100))]
    if len(scored) == 0:
        raise ConfigValueError(f"no {node.get('split', 'test')} record has class {node.target}")
    result = run_tcav(net.eval(), node.get("layers"), target, concept_inputs, random_inputs,
                      _inputs(datamodule, scored)[0],
                      n_random_sets=int(node.get("n_random_sets", 10)),
                      set_size=node.get("set_size"), seed=seed)  # fmt: skip
    ids = [str(i) for i in datamodule.cache.meta["record_id"].iloc[scored]]
    explanation = Explanation(node.get("name", "tcav"), ids, np.full(len(scored), target),
                              np.zeros(0))  # fmt: skip
    _tcav_outputs(explanation, result.table(), str(node.target), out_dir)
    return explanation


def _concept_examples(
    node: DictConfig, datamodule: Any, seed: int
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Model inputs of each concept's training records (at most ``concept_size``, drawn
    without replacement), and of the random pool drawn from the records in no concept."""
    from ecgx.explain.tcav import concept_records

    cache = datamodule.cache
    train = datamodule.indices["train"]
    meta = cache.meta.iloc[train].reset_index(drop=True)
    if "scp_codes" not in meta and "labels" in meta:
        meta["scp_codes"] = meta["labels"]  # the cache keeps each reader's statements as labels
    signals = _LazyRows(cache, train)
    rng = np.random.default_rng(seed)
    cap = int(node.get("concept_size", 50))
    concept_inputs, members = {}, np.zeros(len(train), dtype=bool)
    for concept, rule in node.concepts.items():
        rows = concept_records(meta, dict(rule), signals=signals, fs=cache.fs)
        if len(rows) < 2:
            raise ConfigValueError(f"explainer.concepts.{concept}: {len(rows)} training records "
                                   f"match {dict(rule)} (need at least 2)")  # fmt: skip
        members[rows] = True
        rows = rng.choice(rows, size=min(cap, len(rows)), replace=False)
        concept_inputs[concept] = _inputs(datamodule, train[rows])[0]
    pool = np.flatnonzero(~members)
    pool = rng.choice(pool, size=min(int(node.get("random_pool", 200)), len(pool)), replace=False)
    return concept_inputs, _inputs(datamodule, train[pool])[0]


def _tcav_outputs(
    explanation: Explanation, table: pd.DataFrame, target: str, out_dir: Path
) -> None:
    """``tcav.csv``, each concept's score and p-value per layer as metrics, and a concept ×
    layer heatmap of the scores."""
    from ecgx.explain import plots

    table.to_csv(out_dir / "tcav.csv", index=False)
    explanation.files.append(out_dir / "tcav.csv")
    for row in table.itertuples():
        key = f"{row.concept}/{row.layer}"
        explanation.metrics[f"{key}/score"] = float(row.score_mean)
        explanation.metrics[f"{key}/p_value"] = float(row.p_value)
    concepts, layers = list(dict.fromkeys(table.concept)), list(dict.fromkeys(table.layer))
    grid = table.pivot(index="concept", columns="layer", values="score_mean")
    fig = plots.heatmap(grid.loc[concepts, layers].to_numpy(), concepts, layers,
                        title=f"TCAV sign-count score for {target} (random ≈ "
                              f"{table.random_mean.mean():.2f}; p-values in tcav.csv)",
                        cbar_label="TCAV score", signed=False)  # fmt: skip
    explanation.files.append(plots.save(fig, out_dir / "tcav_scores.png"))


class _LazyRows:
    """Cache rows by position within a split, read on access (for signal-property concepts)."""

    def __init__(self, cache: Any, rows: np.ndarray) -> None:
        self.cache, self.rows = cache, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.cache[int(self.rows[i])]
