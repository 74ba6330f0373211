"""The PhysioNet/CinC challenge metrics against an independent transcription of the official scorer.

The reference below reads the shipped ``weights.csv`` with the csv module, splits the pipe-joined
equivalent-code headers into sets (2021) or replaces the hard-coded equivalent pairs (2020, as
the 2020 ``evaluate_12ECG_score.py`` does), builds labels from raw ``#Dx`` code lists by set
membership and scores with the official double loops. ecgx goes through its own path
(``class_map`` + ``multi_hot`` + ``ecgx.evaluation.challenge``), so the two share no code.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from ecgx.datasets.cinc_labels import class_map, multi_hot
from ecgx.evaluation.challenge import (
    beta_measures,
    challenge_decisions,
    challenge_parts,
    challenge_score,
    modified_confusion_matrix,
    official_f_measure_and_accuracy,
)
from tests.conftest import ROOT, SAMPLES, needs_samples

CINC2021 = SAMPLES / "cinc2021"
TABLES = ROOT / "ecgx" / "datasets" / "tables"
SINUS = "426783006"
# The 2020 scorer's hard-coded pairs (2021 writes them into the weights.csv headers instead).
EQUIVALENT_2020 = [["713427006", "59118001"], ["284470004", "63593006"], ["427172004", "17338001"]]


# ----- independent transcription of the official evaluate_model ------------------------------


def ref_weights(edition: int) -> tuple[list[frozenset[str]], np.ndarray]:
    with open(TABLES / f"cinc{edition}" / "weights.csv", newline="") as f:
        rows = [r for r in csv.reader(f) if r]
    cols = [frozenset(c.strip().split("|")) for c in rows[0][1:]]
    values = np.array([[float(v) for v in r[1:]] for r in rows[1:]])
    if edition == 2020:
        # Replace each code by its pair's representative, keep the first of each, as the 2020
        # load_weights does.
        rep = {code: pair[0] for pair in EQUIVALENT_2020 for code in pair}
        names = [rep.get(next(iter(c)), next(iter(c))) for c in cols]
        keep = [i for i, n in enumerate(names) if n not in names[:i]]
        # Each kept class answers to every code that was replaced by its representative.
        classes = [frozenset(c for j, c in enumerate(rows[0][1:]) if names[j] == names[i])
                   for i in keep]  # fmt: skip
        return classes, values[np.ix_(keep, keep)]
    return cols, values


def ref_binary(code_lists: list[set[str]], classes: list[frozenset[str]]) -> np.ndarray:
    return np.array([[bool(codes & c) for c in classes] for codes in code_lists], dtype=bool)


def ref_modified_confusion(labels: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    n_rec, n_cls = labels.shape
    a = np.zeros((n_cls, n_cls))
    for i in range(n_rec):
        normalization = float(max(np.sum(np.any((labels[i, :], outputs[i, :]), axis=0)), 1))
        for j in range(n_cls):
            if labels[i, j]:
                for k in range(n_cls):
                    if outputs[i, k]:
                        a[j, k] += 1.0 / normalization
    return a


def ref_challenge(
    weights: np.ndarray, labels: np.ndarray, outputs: np.ndarray, classes: list[frozenset[str]]
) -> tuple[float, float, float, float]:
    sinus = next(i for i, c in enumerate(classes) if SINUS in c)
    observed = np.nansum(weights * ref_modified_confusion(labels, outputs))
    correct = np.nansum(weights * ref_modified_confusion(labels, labels))
    inactive_outputs = np.zeros_like(labels)
    inactive_outputs[:, sinus] = True
    inactive = np.nansum(weights * ref_modified_confusion(labels, inactive_outputs))
    score = (observed - inactive) / (correct - inactive) if correct != inactive else 0.0
    return float(observed), float(correct), float(inactive), float(score)


def ref_beta(labels: np.ndarray, outputs: np.ndarray, beta: float) -> tuple[float, float]:
    n_rec, n_cls = labels.shape
    a = np.zeros((n_cls, 2, 2))
    for i in range(n_rec):
        normalization = float(max(np.sum(labels[i, :]), 1))
        for j in range(n_cls):
            a[j, int(outputs[i, j]), int(labels[i, j])] += 1.0 / normalization
    f = np.zeros(n_cls)
    g = np.zeros(n_cls)
    for k in range(n_cls):
        tp, fp, fn = a[k, 1, 1], a[k, 1, 0], a[k, 0, 1]
        den = (1 + beta**2) * tp + fp + beta**2 * fn
        f[k] = (1 + beta**2) * tp / den if den else float("nan")
        den = tp + fp + beta * fn
        g[k] = tp / den if den else float("nan")
    return float(np.nanmean(f)), float(np.nanmean(g))


def ref_f_measure_and_accuracy(labels: np.ndarray, outputs: np.ndarray) -> tuple[float, float]:
    # compute_confusion_matrices (normalize=False) + compute_f_measure + compute_accuracy
    n_rec, n_cls = labels.shape
    a = np.zeros((n_cls, 2, 2))
    for i in range(n_rec):
        for j in range(n_cls):
            a[j, int(outputs[i, j]), int(labels[i, j])] += 1.0
    f = np.zeros(n_cls)
    for k in range(n_cls):
        tp, fp, fn = a[k, 1, 1], a[k, 1, 0], a[k, 0, 1]
        f[k] = float(2 * tp) / float(2 * tp + fp + fn) if 2 * tp + fp + fn else float("nan")
    correct = sum(1 for i in range(n_rec) if np.all(labels[i, :] == outputs[i, :]))
    return float(np.nanmean(f)), float(correct) / float(n_rec)


# ----- helpers -------------------------------------------------------------------------------


def read_dx(folder: Path) -> list[set[str]]:
    out = []
    for hea in sorted(folder.rglob("*.hea")):
        for line in hea.read_text().splitlines():
            if line.replace(" ", "").lower().startswith("#dx:"):
                out.append({c.strip() for c in line.split(":", 1)[1].split(",") if c.strip()})
    return out


def both(
    true_codes: list[set[str]], pred_codes: list[set[str]], edition: int, task: str = "scored"
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(ecgx's ChallengeParts, the reference's) for the same code-level labels and predictions."""
    names, mapping = class_map(edition, task)
    y, _ = multi_hot(true_codes, names, mapping)
    p, _ = multi_hot(pred_codes, names, mapping)
    classes, weights = ref_weights(edition)
    # A task with fewer classes is scored on those only: keep the table's rows/columns for them.
    keep = [i for i, c in enumerate(classes) if c & set(names)]
    classes, weights = [classes[i] for i in keep], weights[np.ix_(keep, keep)]
    ref = ref_challenge(
        weights, ref_binary(true_codes, classes), ref_binary(pred_codes, classes), classes
    )
    return tuple(challenge_parts(y, p, names, edition)), ref


@pytest.fixture(scope="module")
def dx2021() -> list[set[str]]:
    if not CINC2021.is_dir():
        pytest.skip(f"{CINC2021} absent")
    codes = read_dx(CINC2021)
    assert len(codes) == 62
    return codes


# ----- on the real CinC 2021 sample labels ---------------------------------------------------


@needs_samples(CINC2021)
def test_perfect_and_inactive_predictions(dx2021: list[set[str]]) -> None:
    ours, ref = both(dx2021, dx2021, 2021)
    assert ours == pytest.approx(ref) and ours[3] == pytest.approx(1.0)
    inactive = [{SINUS} for _ in dx2021]
    ours, ref = both(dx2021, inactive, 2021)
    assert ours == pytest.approx(ref) and ours[3] == pytest.approx(0.0)


@needs_samples(CINC2021)
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("edition", [2020, 2021])
def test_random_predictions_match_the_reference(
    dx2021: list[set[str]], seed: int, edition: int
) -> None:
    # Random code sets drawn from every scored code, second codes of pairs included.
    classes, _ = ref_weights(edition)
    pool = sorted(set().union(*classes))
    rng = np.random.default_rng(seed)
    preds = [set(rng.choice(pool, size=rng.integers(0, 4), replace=False)) for _ in dx2021]
    ours, ref = both(dx2021, preds, edition)
    assert ours == pytest.approx(ref, abs=1e-12)
    assert ours[3] != 0.0


@needs_samples(CINC2021)
def test_rbbb_and_pvc_predicted_right_score_above_zero(dx2021: list[set[str]]) -> None:
    # The samples label RBBB as 59118001 (A0001, A0006, A0010, JS00001, E00005) and PVC as
    # 427172004 (Q0010) or 17338001 (E00008). Predict the *other* code of each pair and nothing
    # else: the challenge must still count them as hits (the SE-ResNet refactor scored 0 here).
    swap = {"59118001": "713427006", "427172004": "17338001", "17338001": "427172004"}
    preds = [{swap[c] for c in codes if c in swap} for codes in dx2021]
    assert sum(bool(p) for p in preds) == 7
    for task in ("scored", "seresnet17"):
        ours, ref = both(dx2021, preds, 2021, task)
        assert ours == pytest.approx(ref, abs=1e-12)
    ours, _ = both(dx2021, preds, 2021)
    assert ours[0] > 0  # observed: the only credit comes from the RBBB/PVC hits
    # Per class: the diagonal of A holds the hits, 1/|true ∪ pred| per record.
    names, mapping = class_map(2021, "scored")
    y, _ = multi_hot(dx2021, names, mapping)
    p, _ = multi_hot(preds, names, mapping)
    a = modified_confusion_matrix(y, p)
    rbbb, pvc = names.index("713427006"), names.index("427172004")
    assert a[rbbb, rbbb] == pytest.approx(1 + 1 + 1 + 1 / 3 + 1 / 2)  # JS00001 has 3, E00005 2
    # Q0010: 427172004 + the unscored 164865005 -> n 1; E00008: four scored labels -> n 4.
    assert a[pvc, pvc] == pytest.approx(1 + 1 / 4)


@needs_samples(CINC2021)
def test_beta_measures_match_the_reference(dx2021: list[set[str]]) -> None:
    classes, _ = ref_weights(2020)
    pool = sorted(set().union(*classes))
    rng = np.random.default_rng(5)
    preds = [set(rng.choice(pool, size=rng.integers(1, 3), replace=False)) | c for c in dx2021]
    names, mapping = class_map(2020, "scored")
    y, _ = multi_hot(dx2021, names, mapping)
    p, _ = multi_hot(preds, names, mapping)
    m = beta_measures(y, p, names, 2020, beta=2)
    ref = ref_beta(ref_binary(dx2021, classes), ref_binary(preds, classes), 2)
    assert (m["f_beta"], m["g_beta"]) == pytest.approx(ref, abs=1e-12)


@needs_samples(CINC2021)
@pytest.mark.parametrize("seed", [0, 1])
def test_official_f_measure_and_accuracy_match_the_reference(dx2021, seed: int) -> None:
    from ecgx.evaluation.metrics import f1_at_thresholds

    classes, _ = ref_weights(2021)
    pool = sorted(set().union(*classes))
    rng = np.random.default_rng(seed)
    # Half the records predicted exactly (so accuracy is not 0), the rest at random.
    preds = [c if i % 2 else set(rng.choice(pool, size=rng.integers(0, 3), replace=False))
             for i, c in enumerate(dx2021)]  # fmt: skip
    names, mapping = class_map(2021, "scored")
    y, _ = multi_hot(dx2021, names, mapping)
    p, _ = multi_hot(preds, names, mapping)
    m = official_f_measure_and_accuracy(y, p, names, 2021)
    ref = ref_f_measure_and_accuracy(ref_binary(dx2021, classes), ref_binary(preds, classes))
    assert (m["f_measure"], m["accuracy"]) == pytest.approx(ref, abs=1e-12)
    # Classes nobody has or predicts are left out by the official rule, counted 0 by ecgx's F1.
    empty = ~y.any(axis=0) & ~p.any(axis=0)
    assert empty.sum() > 0 and np.isnan(m["f_measure_per_class"]).sum() == empty.sum()
    ecgx_f1 = f1_at_thresholds(y, p.astype(float), 0.5)["macro_f1"]
    assert ecgx_f1 == pytest.approx(np.nansum(m["f_measure_per_class"]) / len(names))
    assert ecgx_f1 < m["f_measure"]


def test_official_f_measure_and_accuracy_by_hand() -> None:
    # SR, AF, IAVB, RBBB (as 59118001); nobody has or is predicted IAVB.
    classes = [SINUS, "164889003", "270492004", "59118001"]
    y = np.array([[1, 0, 0, 0], [0, 1, 0, 1], [0, 1, 0, 0], [1, 0, 0, 0]])
    p = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [1, 1, 0, 0], [1, 0, 0, 0]])
    m = official_f_measure_and_accuracy(y, p, classes, 2021)
    # SR: tp 2, fp 1, fn 0 -> 4/5; AF: tp 2 -> 1; IAVB: 0/0 left out; RBBB: tp 0, fn 1 -> 0.
    np.testing.assert_allclose(m["f_measure_per_class"], [0.8, 1.0, np.nan, 0.0])
    assert m["f_measure"] == pytest.approx((0.8 + 1.0 + 0.0) / 3)
    assert m["accuracy"] == pytest.approx(2 / 4)  # records 1 and 4 exactly right


# ----- small synthetic cases (no samples needed) ---------------------------------------------


def test_pac_under_either_code_and_duplicate_columns() -> None:
    # PAC labelled 63593006 (SVPB), predicted as 284470004, and a column per code of the pair:
    # the two columns are one diagnosis and are merged by OR, so the prediction is perfect.
    classes = [SINUS, "284470004", "63593006", "59118001"]
    y = np.array([[0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 1, 1]])
    p = np.array([[0, 1, 0, 0], [1, 0, 0, 0], [0, 1, 0, 1]])
    assert challenge_score(y, p, classes, 2021) == pytest.approx(1.0)
    assert challenge_score(y, p, classes, 2020) == pytest.approx(1.0)
    parts = challenge_parts(y, p, classes, 2021)
    # Observed = ideal: records 0 and 1 add W = 1 each; record 2 (PAC + RBBB, n = 2) adds 1/2 to
    # each of the four (true, predicted) pairs: 1/2 + 1/2 + 2 * 1/2 * W[PAC, RBBB], where
    # weights.csv (row 713427006|59118001, column 284470004|63593006) gives W = 0.4375.
    assert parts.observed == pytest.approx(3.4375) and parts.observed > parts.inactive
    classes_ref, weights = ref_weights(2021)
    codes = [{classes[j] for j in np.flatnonzero(r)} for r in (y, p) for r in r]
    ref = ref_challenge(
        weights, ref_binary(codes[:3], classes_ref), ref_binary(codes[3:], classes_ref),
        classes_ref,
    )  # fmt: skip
    assert tuple(parts) == pytest.approx(ref)


def test_unscored_columns_are_left_out() -> None:
    # 164884008 (PVC in CPSC's sense) is not scored: its column changes nothing, not even n.
    y = np.array([[1, 0, 1], [0, 1, 0]])
    p = np.array([[1, 1, 1], [1, 1, 0]])
    with_unscored = challenge_parts(y, p, [SINUS, "164889003", "164884008"], 2021)
    without = challenge_parts(y[:, :2], p[:, :2], [SINUS, "164889003"], 2021)
    assert tuple(with_unscored) == pytest.approx(tuple(without))


def test_sinus_rhythm_required() -> None:
    with pytest.raises(ValueError, match="sinus"):
        challenge_score(np.ones((2, 1)), np.ones((2, 1)), ["164889003"], 2021)


def test_challenge_decisions_argmax_and_threshold() -> None:
    prob = np.array([[0.1, 0.3, 0.2], [0.5, 0.9, 0.49], [0.2, 0.2, 0.7]])
    expected = np.array(
        [[False, True, False], [True, True, False], [False, False, True]]
    )  # row 0: nothing >= 0.5, argmax forced; row 1: 0.5 counts (>=), 0.49 does not
    np.testing.assert_array_equal(challenge_decisions(prob), expected)
    np.testing.assert_array_equal(
        challenge_decisions(prob, threshold=0.15),
        [[False, True, True], [True, True, True], [True, True, True]],
    )
