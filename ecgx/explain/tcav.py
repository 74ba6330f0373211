"""TCAV (Testing with Concept Activation Vectors, Kim et al., ICML 2018) for every 1D ecgx model.

XAI4ECG (spec 3.4) ran captum's TCAV with relative CAVs: an SGD linear classifier separates the
layer activations of concept-true ECGs from an equal number drawn with replacement from the
concept-false ones, and the score is the fraction of class examples whose gradient points along
the CAV (``sign_count``). Their code broke on the ResNets and ran a single fit, so no significance
could be stated. Here:

- concepts are selected from config rules (`concept_records`): a PTB-XL SCP statement, a metadata
  condition, or a property computed from the signal (QRS duration, heart rate);
- `run_tcav` tests each concept against ``n_random_sets`` random counterexample sets and builds
  the null distribution from random-vs-random CAVs, then reports mean/std of the scores and a
  two-sided t-test of concept vs random scores (the significance test of Kim et al. 2018);
- any dotted layer of ``model.named_modules()`` works, for plain CNNs and ResNets alike.

captum's CAV/activation cache lives on disk keyed by model id, concept id and layer only; every
run therefore gets its own directory and a fresh model id, so no stale CAV is ever reused.
"""

from __future__ import annotations

import ast
import math
import operator
import tempfile
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from captum._utils.av import AV
from captum.attr import LayerActivation
from captum.concept import TCAV, Concept
from captum.concept._utils.classifier import Classifier, DefaultClassifier
from scipy import stats
from sklearn.linear_model import SGDClassifier
from sklearn.model_selection import train_test_split
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ecgx.explain.delineation import delineate, detect_r_peaks, heart_rate_bpm, qrs_duration_ms

# --- concept selection ----------------------------------------------------------------------

OPS: dict[str, Callable[[Any, Any], Any]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
"""Comparison operators of column/property rules (plus ``in``, which takes a list)."""


def _qrs_duration(signal: np.ndarray, fs: float) -> float:
    return qrs_duration_ms(delineate(signal, fs))


def _heart_rate(signal: np.ndarray, fs: float) -> float:
    return heart_rate_bpm(detect_r_peaks(signal, fs), fs)


PROPERTIES: dict[str, Callable[[np.ndarray, float], float]] = {
    "qrs_duration_ms": _qrs_duration,
    "heart_rate_bpm": _heart_rate,
}
"""Signal properties usable in ``{"property": ...}`` rules: ``f(signal (leads, samples), fs)``.
A record whose property is NaN (no beats found) never satisfies a rule."""

_RULE_KEYS: dict[str, set[str]] = {
    "statement": {"statement", "min_likelihood"},
    "column": {"column", "op", "value"},
    "property": {"property", "op", "value"},
}


def _compare(values: pd.Series, op: str, value: Any) -> np.ndarray:
    if op == "in":
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise ValueError(f"op 'in' needs a list value, got {value!r}")
        return values.isin(list(value)).to_numpy()
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}; use one of {sorted([*OPS, 'in'])}")
    # NaN compares False with every op but !=; a missing value is never evidence of a concept.
    known = values.notna().to_numpy()
    return known & np.asarray(OPS[op](values, value), dtype=bool)


def _scp_codes(cell: Any) -> Mapping[str, float]:
    if isinstance(cell, Mapping):
        return cell
    if isinstance(cell, str):
        parsed = ast.literal_eval(cell)
        if isinstance(parsed, Mapping):
            return parsed
    if cell is None or (isinstance(cell, float) and math.isnan(cell)):
        return {}
    raise ValueError(f"scp_codes cell is not a dict: {cell!r}")


def concept_records(
    meta: pd.DataFrame,
    rule: Mapping[str, Any],
    signals: Sequence[np.ndarray] | None = None,
    fs: float | None = None,
) -> np.ndarray:
    """Positional row indices (int64, ascending) of ``meta`` whose records satisfy ``rule``.

    Rules (one kind per rule):

    - ``{"statement": "LVH", "min_likelihood": 50}``: the PTB-XL SCP statement (or any of a list
      of statements) is in the ``scp_codes`` column (a dict or its ``repr`` as in
      ptbxl_database.csv) with likelihood >= ``min_likelihood`` (default 0: any mention; PTB-XL
      gives rhythm statements likelihood 0).
    - ``{"column": "age", "op": ">=", "value": 75}``: a metadata condition; ops ``== != < <= >
      >=`` and ``in`` (value a list). Missing values never match.
    - ``{"property": "qrs_duration_ms", "op": ">", "value": 120}``: a property of `PROPERTIES`
      computed from ``signals[i]`` (leads, samples) at ``fs`` Hz, one per row of ``meta``.

    Raises ValueError naming unknown rule kinds, keys, columns, statements' column, ops or
    properties.
    """
    kind = _rule_kind(rule)
    if kind == "statement":
        hit = _statement_hits(meta, rule)
    else:
        missing = {"op", "value"} - set(rule)
        if missing:
            raise ValueError(f"{kind} rule lacks {sorted(missing)}")
        if kind == "column":
            values = _column_values(meta, rule["column"])
        else:
            values = _property_values(meta, rule["property"], signals, fs)
        hit = _compare(values.reset_index(drop=True), rule["op"], rule["value"])
    return np.flatnonzero(hit).astype(np.int64)


def _rule_kind(rule: Mapping[str, Any]) -> str:
    """The rule's kind (a key of `_RULE_KEYS`), after checking it has no stray keys."""
    kinds = [k for k in _RULE_KEYS if k in rule]
    if len(kinds) != 1:
        raise ValueError(
            f"a concept rule needs exactly one of {sorted(_RULE_KEYS)}, got keys {sorted(rule)}"
        )
    kind = kinds[0]
    unknown = set(rule) - _RULE_KEYS[kind]
    if unknown:
        raise ValueError(
            f"unknown keys {sorted(unknown)} in {kind} rule; allowed: {sorted(_RULE_KEYS[kind])}"
        )
    return kind


def _statement_hits(meta: pd.DataFrame, rule: Mapping[str, Any]) -> np.ndarray:
    if "scp_codes" not in meta.columns:
        raise ValueError("statement rules need a 'scp_codes' column in the metadata")
    wanted = rule["statement"]
    wanted = [wanted] if isinstance(wanted, str) else list(wanted)
    min_lik = float(rule.get("min_likelihood", 0.0))
    codes = meta["scp_codes"].map(_scp_codes)
    return np.array(
        [any(s in c and float(c[s]) >= min_lik for s in wanted) for c in codes], dtype=bool
    )


def _column_values(meta: pd.DataFrame, column: Any) -> pd.Series:
    if column not in meta.columns:
        raise ValueError(
            f"unknown column {column!r}; the metadata has {sorted(map(str, meta.columns))}"
        )
    return meta[column]


def _property_values(
    meta: pd.DataFrame, name: str, signals: Sequence[np.ndarray] | None, fs: float | None
) -> pd.Series:
    """The property of every record, computed from its signal (one signal per row of meta)."""
    if name not in PROPERTIES:
        raise ValueError(f"unknown property {name!r}; known: {sorted(PROPERTIES)}")
    if signals is None or fs is None:
        raise ValueError(f"property rule {name!r} needs `signals` and `fs`")
    if len(signals) != len(meta):
        raise ValueError(f"{len(signals)} signals for {len(meta)} metadata rows")
    func = PROPERTIES[name]
    return pd.Series([func(np.asarray(signals[i], dtype=np.float64), fs) for i in range(len(meta))])


# --- CAV classifier -------------------------------------------------------------------------


class SGDCAVClassifier(Classifier):
    """Linear SGD classifier for CAVs (alpha 0.01, 33 % held out, as XAI4ECG), reproducibly.

    captum's `DefaultClassifier` shuffles the train/test split with the global ``random`` module
    and fits an SGD model without a seed, so two runs with the same data give different CAVs.
    This one splits with a stratified, seeded sklearn split (so both concepts are in the test
    set even for small sets) and seeds the SGD.
    """

    def __init__(self, seed: int = 0, alpha: float = 0.01, test_split: float = 0.33) -> None:
        self.seed = seed
        self.alpha = alpha
        self.test_split = test_split
        self.lm: SGDClassifier | None = None

    def train_and_eval(self, dataloader: DataLoader, **kwargs: Any) -> dict[str, torch.Tensor]:
        xs, ys = zip(*dataloader)
        x = torch.cat(xs).detach().cpu().double().numpy()
        y = torch.cat(ys).detach().cpu().numpy()
        split = kwargs.get("test_split_ratio", self.test_split)
        counts = np.unique(y, return_counts=True)[1]
        # Stratify whenever each concept can appear in both parts.
        strat = y if counts.min() >= 2 and split * len(y) >= len(counts) else None
        x_tr, x_te, y_tr, y_te = train_test_split(
            x, y, test_size=split, random_state=self.seed, stratify=strat
        )
        self.lm = SGDClassifier(alpha=self.alpha, max_iter=1000, tol=1e-3, random_state=self.seed)
        self.lm.fit(x_tr, y_tr)
        acc = float((self.lm.predict(x_te) == y_te).mean()) if len(y_te) else float("nan")
        return {"accs": torch.tensor(acc)}

    def weights(self) -> torch.Tensor:
        assert self.lm is not None, "call train_and_eval first"
        coef = torch.as_tensor(self.lm.coef_, dtype=torch.float32)
        # Binary sklearn models keep one row, the direction of classes_[1]; captum wants one
        # row per class in classes() order.
        return torch.stack([-coef[0], coef[0]]) if coef.shape[0] == 1 else coef

    def classes(self) -> list[int]:
        assert self.lm is not None, "call train_and_eval first"
        return [int(c) for c in self.lm.classes_]


# --- TCAV -----------------------------------------------------------------------------------


@dataclass
class TCAVRow:
    """Scores of one concept at one layer for one target class."""

    concept: str
    layer: str
    target: int
    scores: list[float]  # sign_count per random counterexample set
    magnitudes: list[float]  # paper's magnitude score per set
    random_scores: list[float]  # sign_count of random-vs-random CAVs (the null)
    cav_accuracies: list[float]
    p_value: float


@dataclass
class TCAVResult:
    """TCAV scores per (concept, layer); `table` gives one tidy row each."""

    rows: list[TCAVRow] = field(default_factory=list)
    n_random_sets: int = 0
    set_size: int = 0
    seed: int = 0

    def table(self) -> pd.DataFrame:
        """Columns: concept, layer, target, score_mean, score_std, magnitude_mean, random_mean,
        p_value, n_sets, cav_accuracy_mean."""
        records = [
            {
                "concept": r.concept,
                "layer": r.layer,
                "target": r.target,
                "score_mean": float(np.mean(r.scores)),
                "score_std": float(np.std(r.scores)),
                "magnitude_mean": float(np.mean(r.magnitudes)),
                "random_mean": float(np.mean(r.random_scores)),
                "p_value": r.p_value,
                "n_sets": len(r.scores),
                "cav_accuracy_mean": float(np.nanmean(r.cav_accuracies)),
            }
            for r in self.rows
        ]
        columns = ["concept", "layer", "target", "score_mean", "score_std", "magnitude_mean",
                   "random_mean", "p_value", "n_sets", "cav_accuracy_mean"]  # fmt: skip
        return pd.DataFrame.from_records(records, columns=columns)

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form (JSON-serialisable)."""
        return asdict(self)


def _p_value(concept: np.ndarray, null: np.ndarray) -> float:
    """Two-sided Student t-test p-value (Kim et al. 2018); defined also for constant scores."""
    if len(concept) < 2 or len(null) < 2:
        return float("nan")
    if np.ptp(concept) == 0 and np.ptp(null) == 0:
        # The t statistic is 0/0 or x/0 here: identical constants are no evidence, different
        # constants are as strong as it gets.
        return 1.0 if concept[0] == null[0] else 0.0
    with warnings.catch_warnings():
        # Nearly constant scores trigger scipy's precision-loss warning; the p-value stands.
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(stats.ttest_ind(concept, null).pvalue)
    return min(max(p, 0.0), 1.0)


def _loader(x: torch.Tensor, batch_size: int) -> DataLoader:
    # captum iterates a concept's data_iter and feeds each item to the model as-is, so the
    # loader must yield bare tensors, not the 1-tuples TensorDataset gives.
    return DataLoader(
        TensorDataset(x), batch_size=batch_size, collate_fn=lambda b: torch.stack([i[0] for i in b])
    )


class _PooledTCAV(TCAV):
    """captum's TCAV with two changes to how concept activations are made.

    - Activations are flattened per *record* (``reshape(len(batch), -1)``), not per leading
      dimension of the layer output: beat-wise encoders (IMLE-Net, Mousavi) fold beats into the
      batch axis, and captum's per-row flattening would train the CAV on beats while the
      gradients are per record.
    - Each source tensor (a concept's examples, the random pool) goes through the model once per
      layer; random sets, drawn with replacement from the pool, index those activations instead
      of rerunning the model on every set.
    """

    def __init__(
        self, *args: Any, sources: dict[int, tuple[str, torch.Tensor]],
        pools: dict[str, torch.Tensor], batch_size: int, **kwargs: Any,
    ) -> None:  # fmt: skip
        super().__init__(*args, **kwargs)
        self._sources = sources  # concept id -> (pool name, row indices into the pool)
        self._pools = pools
        self._batch_size = batch_size
        self._acts: dict[tuple[str, str], torch.Tensor] = {}

    def _pool_activations(self, pool: str, layer: str) -> torch.Tensor:
        if (pool, layer) not in self._acts:
            act = LayerActivation(self.model, self.model.get_submodule(layer))
            parts = []
            for batch in self._pools[pool].split(self._batch_size):
                with torch.no_grad():
                    out = act.attribute.__wrapped__(
                        act, batch, attribute_to_layer_input=self.attribute_to_layer_input
                    )
                parts.append(out.detach().reshape(len(batch), -1))
            self._acts[pool, layer] = torch.cat(parts)
        return self._acts[pool, layer]

    def generate_activation(self, layers: str | list[str], concept: Concept) -> None:
        pool, rows = self._sources[concept.id]
        for layer in [layers] if isinstance(layers, str) else layers:
            acts = self._pool_activations(pool, layer)[rows]
            AV.save(self.save_path, self.model_id, concept.identifier, layer, acts, "0")


def _default_layers(model: nn.Module) -> list[str]:
    layer = getattr(model, "target_layer", "")
    if not layer:
        raise ValueError(f"{type(model).__name__} has no target_layer; pass `layers`")
    return [layer]


def _score(
    cavs: Mapping[str, Mapping[str, Any]],
    layer: str,
    grads: torch.Tensor,
    positive: Concept,
    negative: Concept,
) -> tuple[float, float, float]:
    """(sign_count, magnitude, CAV accuracy) of ``positive`` against ``negative``.

    captum's own ``magnitude`` is the mean directional derivative, unbounded and scale
    dependent; Kim et al.'s magnitude (sum of positive over sum of absolute derivatives) is in
    [0, 1] and comparable across layers, so it is computed here from the same CAV.
    """
    cav = cavs[f"{positive.id}-{negative.id}"][layer]
    weights = cav.stats["weights"].double()
    row = [int(c) for c in cav.stats["classes"]].index(positive.id)
    dd = grads @ weights[row]  # directional derivatives along the concept's CAV
    total = float(dd.abs().sum())
    magnitude = float(dd.clamp(min=0).sum()) / total if total > 0 else 0.5
    acc = float(cav.stats.get("accs", float("nan")))
    return float((dd > 0).double().mean()), magnitude, acc


def run_tcav(
    model: nn.Module,
    layers: str | Sequence[str] | None,
    target: int,
    concept_inputs: Mapping[str, torch.Tensor],
    random_inputs: torch.Tensor,
    inputs: torch.Tensor,
    *,
    n_random_sets: int = 10,
    set_size: int | None = None,
    seed: int = 0,
    classifier: str | Classifier = "sgd",
    test_split: float = 0.33,
    save_path: str | None = None,
    batch_size: int = 64,
) -> TCAVResult:
    """TCAV scores of ``concept_inputs`` for class ``target`` on ``inputs`` at ``layers``.

    Args:
        model: a torch model taking (batch, leads, samples); put in eval mode for the run.
        layers: dotted module names (``model.named_modules()``); None: ``model.target_layer``.
        target: class index whose logit's gradient is tested.
        concept_inputs: concept name -> examples (n, leads, samples) that show the concept.
        random_inputs: pool for counterexample sets (e.g. concept-false records); each of the
            ``n_random_sets`` sets is drawn from it with replacement, ``set_size`` examples;
            as many more sets, paired with those, give the random-vs-random null scores.
        inputs: the examples scored (typically records of class ``target``).
        n_random_sets: random counterexample sets per concept (and null pairs). At least 2,
            so that a t-test is defined.
        set_size: examples per random set (default: the largest concept set, capped by the
            pool size) -- balanced sets keep the CAV classifier unbiased.
        seed: seeds the random sets and the classifier.
        classifier: "sgd" (`SGDCAVClassifier`), "captum" (captum's DefaultClassifier, not
            reproducible) or a captum `Classifier`.
        test_split: held-out share for the CAV accuracy.
        save_path: directory for captum's activation/CAV cache (default: a fresh temp dir).
        batch_size: batch size for computing concept activations.

    Returns:
        `TCAVResult`: per concept and layer the sign_count scores against every random set,
        the paper's magnitude score (sum of positive / sum of absolute directional
        derivatives, in [0, 1]), the random-vs-random scores and the t-test p-value.
    """
    layer_list = _layer_names(model, layers)
    set_size = _check_sets(concept_inputs, random_inputs, inputs, n_random_sets, set_size)
    clf = _classifier(classifier, seed, test_split)
    sets = _concept_sets(concept_inputs, random_inputs, n_random_sets, set_size, seed, batch_size)

    was_training = model.training
    model.eval()  # BatchNorm/dropout in inference mode: batch size 1 is fine, scores stable
    # captum writes every CAV and activation to disk: without a save_path, into a folder that
    # is removed afterwards (a call left ~2 MB behind before).
    scratch = None if save_path else tempfile.TemporaryDirectory(prefix="ecgx-tcav-")
    try:
        tcav = _PooledTCAV(
            model,
            layer_list,
            model_id=f"ecgx-{uuid.uuid4().hex}",
            classifier=clf,
            save_path=save_path or scratch.name,  # type: ignore[union-attr]
            test_split_ratio=test_split,
            sources=sets.sources,
            pools=sets.pools,
            batch_size=batch_size,
        )
        cavs = tcav.compute_cavs(sets.experiments(), force_train=True)
        rows = []
        for layer in layer_list:
            grads = _target_gradients(tcav, model.get_submodule(layer), inputs, target, batch_size)
            rows += _layer_rows(cavs, layer, grads, sets, int(target))
    finally:
        model.train(was_training)
        if scratch is not None:
            scratch.cleanup()
    return TCAVResult(rows=rows, n_random_sets=n_random_sets, set_size=set_size, seed=seed)


def _layer_names(model: nn.Module, layers: str | Sequence[str] | None) -> list[str]:
    layer_list = (
        _default_layers(model) if layers is None else [layers] if isinstance(layers, str)
        else list(layers)
    )  # fmt: skip
    names = dict(model.named_modules())
    missing = [name for name in layer_list if name not in names]
    if missing:
        raise ValueError(f"unknown layers {missing} of {type(model).__name__}")
    return layer_list


def _check_sets(
    concept_inputs: Mapping[str, torch.Tensor],
    random_inputs: torch.Tensor,
    inputs: torch.Tensor,
    n_random_sets: int,
    set_size: int | None,
) -> int:
    """The random sets' size, after checking that every set can train a CAV."""
    if not concept_inputs:
        raise ValueError("no concepts given")
    if n_random_sets < 2:
        raise ValueError(f"n_random_sets must be >= 2 for a t-test, got {n_random_sets}")
    if len(random_inputs) == 0 or len(inputs) == 0:
        raise ValueError("random_inputs and inputs must not be empty")
    for name, x in concept_inputs.items():
        if len(x) < 2:
            raise ValueError(f"concept {name!r} has {len(x)} examples; a CAV needs >= 2")
    if set_size is None:
        set_size = min(max(len(x) for x in concept_inputs.values()), len(random_inputs))
    if set_size < 2:
        raise ValueError(f"set_size must be >= 2, got {set_size}")
    return set_size


def _classifier(classifier: str | Classifier, seed: int, test_split: float) -> Classifier:
    if classifier == "sgd":
        return SGDCAVClassifier(seed=seed, test_split=test_split)
    if classifier == "captum":
        return DefaultClassifier()
    if isinstance(classifier, Classifier):
        return classifier
    raise ValueError(f"unknown classifier {classifier!r}; use 'sgd', 'captum' or a Classifier")


@dataclass
class _ConceptSets:
    """The concepts and random sets of one run: captum concepts, and the rows of the tensors
    they are drawn from, from which `_PooledTCAV` computes their activations."""

    concepts: dict[str, Concept]  # concept name -> Concept
    counter: list[Concept]  # random counterexample sets
    null_pos: list[Concept]  # random sets that play the concept in the null pairs
    pools: dict[str, torch.Tensor]
    sources: dict[int, tuple[str, torch.Tensor]]  # concept id -> (pool name, rows)

    def experiments(self) -> list[list[Concept]]:
        """Every concept against every counterexample set, then the random-vs-random pairs."""
        exp_sets = [[c, r] for c in self.concepts.values() for r in self.counter]
        return exp_sets + [[q, r] for q, r in zip(self.null_pos, self.counter)]


def _concept_sets(
    concept_inputs: Mapping[str, torch.Tensor],
    random_inputs: torch.Tensor,
    n_random_sets: int,
    set_size: int,
    seed: int,
    batch_size: int,
) -> _ConceptSets:
    gen = torch.Generator().manual_seed(seed)
    random_rows = [
        torch.randint(len(random_inputs), (set_size,), generator=gen)
        for _ in range(2 * n_random_sets)
    ]
    pools = {"random": random_inputs.detach()}
    sources: dict[int, tuple[str, torch.Tensor]] = {}
    # Integer ids are captum's cache keys (file names); concept names only label them.
    concepts: dict[str, Concept] = {}
    for i, (name, x) in enumerate(concept_inputs.items()):
        pools[f"concept{i}"] = x.detach()
        sources[i] = (f"concept{i}", torch.arange(len(x)))
        concepts[name] = Concept(i, f"concept{i}", _loader(x, batch_size))
    randoms = []
    for j, rows in enumerate(random_rows):
        cid = len(concept_inputs) + j
        sources[cid] = ("random", rows)
        randoms.append(Concept(cid, f"random{j}", _loader(random_inputs[rows], batch_size)))
    # The first n sets are the counterexamples; the last n play the concept in the null pairs.
    # A fresh positive set per null pair (rather than one fixed set, as in captum's tutorial)
    # keeps the null scores independent: with one fixed set they are nearly all equal.
    return _ConceptSets(concepts, randoms[:n_random_sets], randoms[n_random_sets:], pools, sources)


def _target_gradients(
    tcav: TCAV, layer: nn.Module, inputs: torch.Tensor, target: int, batch_size: int
) -> torch.Tensor:
    """Gradient of the target logit w.r.t. the layer output (captum's TCAV sensitivity:
    LayerGradientXActivation without the activation), flattened per record as the CAVs are."""
    attr = tcav.layer_attr_method
    attr.layer = layer
    return torch.cat(
        [
            attr.attribute.__wrapped__(attr, batch, target=target).detach().reshape(len(batch), -1)
            for batch in inputs.split(batch_size)
        ]
    ).double()


def _layer_rows(
    cavs: Mapping[str, Mapping[str, Any]],
    layer: str,
    grads: torch.Tensor,
    sets: _ConceptSets,
    target: int,
) -> list[TCAVRow]:
    """Each concept's scores at ``layer``, tested against the random-vs-random null."""
    null = np.array(
        [_score(cavs, layer, grads, q, r)[0] for q, r in zip(sets.null_pos, sets.counter)]
    )
    rows = []
    for name, concept in sets.concepts.items():
        results = [_score(cavs, layer, grads, concept, r) for r in sets.counter]
        sign = np.array([s for s, _, _ in results])
        rows.append(
            TCAVRow(
                concept=name,
                layer=layer,
                target=target,
                scores=sign.tolist(),
                magnitudes=[m for _, m, _ in results],
                random_scores=null.tolist(),
                cav_accuracies=[a for _, _, a in results],
                p_value=_p_value(sign, null),
            )
        )
    return rows
