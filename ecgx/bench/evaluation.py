"""``ecgx bench suite=evaluation``: what the trust evaluations cost beyond their model evaluations.

- **robustness**: ``ecgx eval robustness=<preset>`` scores the test split clean and under each
  perturbation. It cannot cost less than (1 + perturbations) forward passes over those records;
  the floor is that count × one forward of the prepared records (same batches, same model),
  measured in this run. The figure's ratio to it is what perturbing, re-running the offline
  transforms and the paired bootstraps add.
- **ground truth**: an explainer's ground-truth scores (pointing game, relevance mass, rank
  correlation) need the segment masks (the generator's beat bounds on the view) and the
  graded maps; their floor is the
  attribution the explainer computes anyway (its model evaluations). The model-randomisation
  check re-attributes after each of ``randomisation_steps`` stops: its floor is that many
  attributions plus the reference one.

Costs do not depend on the weights, so a freshly initialised model of the default experiment's
kind is timed on ecgx's synthetic set (which carries the ground truth).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, open_dict

from ecgx.bench.core import Context, Figure, compose_train, repeat

SUITE = "evaluation"


def _setup(cfg: DictConfig, ctx: Context) -> tuple[DictConfig, Any, Any]:
    from hydra.utils import instantiate

    from ecgx.datasets.synthetic import generate_ptbxl_like

    work = ctx.workdir / SUITE
    n = int(cfg.quick_records if ctx.quick else cfg.records)
    root = (Path(str(cfg.dataset_root)) if cfg.get("dataset_root") else
            generate_ptbxl_like(work / "synthetic", n_records=n, seed=0, sampling_rates=[100]))  # fmt: skip
    overrides = [f"dataset.root={root}", f"model={cfg.model}", f"paths.cache_dir={work / 'cache'}",
                 f"+robustness={cfg.robustness}"]  # fmt: skip
    train_cfg = compose_train(overrides)
    datamodule = instantiate(train_cfg.data)
    datamodule.prepare_data()
    datamodule.setup("test")
    torch.manual_seed(0)
    net = instantiate(train_cfg.model, in_channels=datamodule.num_leads,
                      num_classes=len(datamodule.class_names)).eval()  # fmt: skip
    return train_cfg, datamodule, net


def run(cfg: DictConfig, ctx: Context) -> list[Figure]:
    torch.set_grad_enabled(True)
    train_cfg, datamodule, net = _setup(cfg, ctx)
    figures = _robustness(cfg, ctx, train_cfg, datamodule, net)
    for method in cfg.quick_methods if ctx.quick else cfg.methods:
        figures += _ground_truth(cfg, ctx, str(method), datamodule, net)
    return figures


def _robustness(
    cfg: DictConfig, ctx: Context, train_cfg: DictConfig, datamodule: Any, net: torch.nn.Module
) -> list[Figure]:
    from ecgx.robustness.run import build_perturbations
    from ecgx.robustness.runner import read_records, robustness_table

    node = train_cfg.robustness
    perturbations = build_perturbations(node)
    if ctx.quick:
        perturbations = dict(list(perturbations.items())[: int(cfg.quick_perturbations)])
    rows = datamodule.indices["test"]
    meta = datamodule.cache.meta.iloc[rows].reset_index(drop=True)
    records = read_records(datamodule.dataset, meta)
    targets = datamodule.targets[rows]
    transform = datamodule.transform
    batch = int(datamodule.eval_batch_size)
    resamples = int(node.get("bootstrap_resamples", 200))

    def forward(x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(net(x))

    def table() -> None:
        robustness_table(records, targets, perturbations, transform, forward, "multilabel",
                         list(datamodule.class_names), "macro_auroc", n_resamples=resamples,
                         batch_size=batch)  # fmt: skip

    # The floor's input: the clean records exactly as the table's clean pass prepares them.
    prepared = [transform.apply_offline(np.ascontiguousarray(r.signal), r.fs)[0] for r in records]
    x = transform.apply_batch(np.stack(prepared).astype(np.float32), None)
    x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))

    def forwards() -> None:
        with torch.inference_mode():
            for start in range(0, len(x), batch):
                forward(x[start : start + batch])

    evaluations = 1 + len(perturbations)
    one = repeat(forwards, ctx.repeats)
    whole = repeat(table, max(1, ctx.repeats // 2), warmup=0)
    what = (f"{cfg.robustness}: {len(perturbations)} perturbations + clean of {len(records)} test "
            f"records, {cfg.model}, {resamples} paired bootstrap resamples a row")  # fmt: skip
    params = {"model": str(cfg.model), "records": len(records), "evaluations": evaluations,
              "bootstrap_resamples": resamples}  # fmt: skip
    return [
        Figure(SUITE, "robustness floor", "s", [s * evaluations for s in one], params=params,
               note=f"{evaluations} × one forward of the prepared test records (batch {batch})"),
        Figure(SUITE, f"robustness {cfg.robustness}", "s", whole, ratio_to="robustness floor",
               target=str(cfg.target), note=what, params=params),
    ]  # fmt: skip


def _ground_truth(
    cfg: DictConfig, ctx: Context, method_name: str, datamodule: Any, net: torch.nn.Module
) -> list[Figure]:
    from hydra.utils import instantiate

    from ecgx.explain import ground_truth as gt
    from ecgx.explain.run import _background, _inputs, truth_masks
    from ecgx.paths import config_dir

    node = compose_explainer(method_name, config_dir())
    n = int(cfg.quick_gt_records if ctx.quick else cfg.gt_records)
    rows = datamodule.indices["test"][:n]
    x, raw = _inputs(datamodule, rows)
    ids = datamodule.cache.meta["record_id"].iloc[rows].astype(str).tolist()
    names = list(datamodule.class_names)
    with torch.no_grad():
        targets = torch.sigmoid(net(x)).argmax(1)
    truth = gt.load(datamodule.dataset.root)
    background = _background(datamodule, int(node.get("background", 32)), 0)
    threshold = float(node.get("ground_truth_threshold", 0.25))

    def attribute(model: torch.nn.Module, inputs: torch.Tensor = x,
                  target: torch.Tensor = targets) -> torch.Tensor:  # fmt: skip
        method = instantiate(node.method)(model.eval())
        if method.needs_background:
            method.set_background(background)
        return method.attribute(inputs, target)

    kept: list[np.ndarray] = []

    def attribution() -> None:
        kept[:] = [attribute(net).numpy()]

    def scoring() -> None:
        masks = truth_masks(truth, ids, datamodule, raw.shape[-1])
        strength = truth.lead_segment(ids, [names[t] for t in targets.tolist()])
        gt.scores(kept[0], gt.graded_map(strength, masks), threshold)

    t_attr = repeat(attribution, ctx.repeats)
    t_score = repeat(scoring, ctx.repeats)
    # The randomisation check on its own records, as ``ecgx explain`` runs it.
    k = min(n, int(node.get("randomisation_records", 8)))
    steps = int(node.get("randomisation_steps", 4))
    t_ref = repeat(lambda: attribute(net, x[:k], targets[:k]), ctx.repeats)

    def randomisation() -> None:
        gt.cascading_randomisation(net, lambda m: attribute(m, x[:k], targets[:k]), steps, 0)

    t_rand = repeat(randomisation, max(1, ctx.repeats // 2), warmup=0)
    params = {"method": method_name, "records": n, "model": str(cfg.model)}
    whole = _whole_explain(node, net, datamodule, n, ctx)
    return whole + [
        Figure(SUITE, f"{method_name}: attribution", "s", t_attr, params=params,
               note=f"{n} test records (the ground-truth floor: the explainer's own model "
               "evaluations)"),
        Figure(SUITE, f"{method_name}: attribution + ground-truth scores", "s",
               [a + s for a, s in zip(t_attr, t_score, strict=False)],
               ratio_to=f"{method_name}: attribution", target=str(cfg.target), params=params,
               note="segment masks from the generator's beat bounds, graded maps, pointing "
               "game, relevance mass, rank correlation"),
        Figure(SUITE, f"{method_name}: randomisation floor", "s",
               [t * (1 + _stops(net, steps)) for t in t_ref], params={**params, "records": k},
               note=f"(1 + stops) attributions of {k} records"),
        Figure(SUITE, f"{method_name}: randomisation check", "s", t_rand,
               ratio_to=f"{method_name}: randomisation floor", target=str(cfg.target),
               params={**params, "records": k},
               note=f"cascading model randomisation, {steps} stops"),
    ]  # fmt: skip


def _whole_explain(
    node: DictConfig, net: torch.nn.Module, datamodule: Any, records: int, ctx: Context
) -> list[Figure]:
    """``ecgx explain`` as a user runs it (plots off: their drawing time varies most), with
    and without the ground-truth scores and the randomisation check."""
    from ecgx.explain.run import explain

    name = str(node.name)

    def run(scored: bool) -> Callable[[], None]:
        settings = node.copy()
        with open_dict(settings):
            settings.update(records=records, plots=0, ground_truth=scored,
                            randomisation_steps=int(node.randomisation_steps) if scored else 0)  # fmt: skip
            if ctx.quick:  # a check that both runs go through, not a figure
                settings.update(faithfulness=False, sensitivity_records=0, population=False)

        def call() -> None:
            with tempfile.TemporaryDirectory() as out:
                explain(settings, net, datamodule, "multilabel", out)

        return call

    repeats = max(1, ctx.repeats // 2)
    without = repeat(run(False), repeats)
    scored = repeat(run(True), repeats)
    params = {"method": name, "records": records}
    return [
        Figure(SUITE, f"{name}: ecgx explain without ground truth", "s", without, params=params,
               note="attribution, glocal and population tables, deletion/insertion, infidelity "
               "and max-sensitivity; ground_truth=false, randomisation_steps=0"),
        Figure(SUITE, f"{name}: ecgx explain with ground truth", "s", scored, params=params,
               ratio_to=f"{name}: ecgx explain without ground truth",
               note="the same run with the ground-truth scores and the cascading "
               f"randomisation check ({int(node.randomisation_steps)} stops)"),
    ]  # fmt: skip


def _stops(net: torch.nn.Module, steps: int) -> int:
    """How many re-attributions :func:`cascading_randomisation` makes for ``steps``."""
    layers = [m for m in net.modules()
              if hasattr(m, "reset_parameters") and any(True for _ in m.parameters(False))]  # fmt: skip
    return len({int(round(k)) for k in np.linspace(1, len(layers), min(steps, len(layers)))})


def compose_explainer(name: str, conf: Path) -> DictConfig:
    """``conf/explainer/<name>.yaml`` as ``ecgx explain explainer=<name>`` composes it."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    with initialize_config_dir(str(conf), version_base="1.3"):
        composed = compose("explain", overrides=[f"explainer={name}"])
    node = composed.explainer
    with open_dict(node):
        node.glocal = True
    return node
