"""Splits: patients never straddle splits, label shares follow the whole, seeds decide, files
round-trip, and every split YAML composes to its class."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra.utils import instantiate
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold
from sklearn.model_selection import train_test_split

from ecgx.errors import ConfigValueError
from ecgx.splits.splitters import (
    SPLITS,
    CSVSplit,
    LeaveSourceOut,
    RandomStratifiedSplit,
    StratifiedKFold,
    StratifiedShuffleSplit,
    write_split_csv,
)

CLASSES = ["A", "B", "C", "D", "E"]
PREVALENCE = np.array([0.4, 0.25, 0.15, 0.08, 0.05])
# Largest |share of a label in a split - share in the whole| allowed. On this cohort a random
# (unstratified) 60/20/20 split deviates by about 0.06 (median), so 0.03 needs stratification.
TOLERANCE = 0.03


def cohort(seed: int = 0, n_patients: int = 300) -> tuple[pd.DataFrame, np.ndarray]:
    """Metadata with 1–5 records per patient (40% have several), each patient in one of three
    databases; a patient's records mostly share its labels, as in real follow-up ECGs."""
    rng = np.random.default_rng(seed)
    per_patient = np.minimum(rng.geometric(0.6, n_patients), 5)
    patient = np.repeat(np.arange(n_patients), per_patient)
    n = len(patient)
    source = np.array(["A", "B", "C"])[rng.integers(0, 3, n_patients)][patient]
    labels = rng.random((n_patients, len(CLASSES))) < PREVALENCE
    y = (labels[patient] ^ (rng.random((n, len(CLASSES))) < 0.03)).astype(np.float32)
    meta = pd.DataFrame(
        {
            "record_id": [f"{i:05d}" for i in range(n)],
            "patient_id": [f"p{p}" for p in patient],
            "age": np.where(rng.random(n) < 0.1, np.nan, rng.uniform(20, 90, n)),
            "sex": np.where(rng.random(n) < 0.1, np.nan, rng.integers(0, 2, n)),
            "path": [f"records500/{i // 100:02d}/{i:05d}_hr" for i in range(n)],
            "source": source,
        }
    )
    return meta, y


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, np.ndarray]:
    return cohort()


GROUPED: dict[str, Callable[[], object]] = {
    "shuffle": lambda: StratifiedShuffleSplit(val_fraction=0.25, test_fraction=0.2, seed=1),
    "kfold": lambda: StratifiedKFold(n_splits=5, fold=3, seed=1),
    "kfold_val_fraction": lambda: StratifiedKFold(n_splits=5, fold=1, val_fraction=0.2, seed=1),
    "kfold_within_source": lambda: StratifiedKFold(n_splits=5, fold=0, seed=1, within="source"),
    "leave_source_out": lambda: LeaveSourceOut(test_source="B", val_fraction=0.25, seed=1),
}


def patients(meta: pd.DataFrame, parts: dict[str, np.ndarray]) -> dict[str, set[str]]:
    return {name: set(meta["patient_id"].iloc[idx]) for name, idx in parts.items()}


def assert_disjoint_cover(parts: dict[str, np.ndarray], n: int, cover: bool = True) -> None:
    joined = np.concatenate([parts[name] for name in SPLITS])
    assert len(np.unique(joined)) == len(joined), "a record is in two splits"
    assert joined.min() >= 0 and joined.max() < n
    if cover:
        assert len(joined) == n


@pytest.mark.parametrize("name", sorted(GROUPED))
def test_no_patient_in_two_splits(data, name: str) -> None:
    meta, y = data
    parts = GROUPED[name]()(meta, y)
    assert_disjoint_cover(parts, len(meta))
    seen = patients(meta, parts)
    assert not seen["train"] & seen["val"]
    assert not seen["train"] & seen["test"]
    assert not seen["val"] & seen["test"]


def test_without_grouping_patients_do_straddle(data) -> None:
    # The cohort has multi-record patients, so the check above is not vacuous.
    meta, y = data
    seen = patients(meta, StratifiedShuffleSplit(0.25, 0.2, seed=1, group_by=None)(meta, y))
    assert seen["train"] & seen["test"]


@pytest.mark.parametrize("name", ["shuffle", "kfold", "kfold_val_fraction", "kfold_within_source"])
def test_label_shares_follow_the_whole(data, name: str) -> None:
    meta, y = data
    parts = GROUPED[name]()(meta, y)
    for split, idx in parts.items():
        gap = np.abs(y[idx].mean(axis=0) - y.mean(axis=0)).max()
        assert gap <= TOLERANCE, f"{split}: label share off by {gap:.3f}"


def test_leave_source_out_pool_is_stratified(data) -> None:
    meta, y = data
    parts = GROUPED["leave_source_out"]()(meta, y)
    pool = np.concatenate([parts["train"], parts["val"]])
    for split in ("train", "val"):
        gap = np.abs(y[parts[split]].mean(axis=0) - y[pool].mean(axis=0)).max()
        assert gap <= TOLERANCE, f"{split}: label share off by {gap:.3f}"


def test_split_sizes_follow_the_fractions(data) -> None:
    meta, y = data
    parts = StratifiedShuffleSplit(val_fraction=0.25, test_fraction=0.2, seed=1)(meta, y)
    n = len(meta)
    assert abs(len(parts["test"]) - 0.2 * n) <= 0.02 * n
    assert abs(len(parts["val"]) - 0.25 * 0.8 * n) <= 0.02 * n


@pytest.mark.parametrize("name", sorted(GROUPED))
def test_same_seed_same_split_other_seed_other_split(data, name: str) -> None:
    meta, y = data
    first, again = GROUPED[name]()(meta, y), GROUPED[name]()(meta, y)
    for split in SPLITS:
        np.testing.assert_array_equal(first[split], again[split])
    other = GROUPED[name]()
    other.seed = 2
    moved = other(meta, y)
    assert any(not np.array_equal(first[s], moved[s]) for s in SPLITS)


@pytest.mark.parametrize("group_by", ["patient_id", None])
@pytest.mark.parametrize("shuffle", [True, False])
def test_kfold_test_folds_partition_the_data(data, group_by, shuffle: bool) -> None:
    meta, y = data
    folds = [
        StratifiedKFold(n_splits=5, fold=k, seed=3, shuffle=shuffle, group_by=group_by)(meta, y)
        for k in range(5)
    ]
    tests = np.concatenate([f["test"] for f in folds])
    np.testing.assert_array_equal(np.sort(tests), np.arange(len(meta)))
    for k, parts in enumerate(folds):
        # Validation is the next fold's test set; train the other three.
        np.testing.assert_array_equal(parts["val"], folds[(k + 1) % 5]["test"])
        assert_disjoint_cover(parts, len(meta))
        assert abs(len(parts["test"]) - len(meta) / 5) <= 0.02 * len(meta)


def test_ungrouped_kfold_is_iterstrat(data) -> None:
    # Without groups the folds are iterstrat's, so the SE-ResNet original's folds reproduce.
    meta, y = data
    reference = MultilabelStratifiedKFold(n_splits=5, shuffle=True, random_state=2020)
    for k, (_, test) in enumerate(reference.split(np.zeros(len(y)), y)):
        parts = StratifiedKFold(n_splits=5, fold=k, seed=2020, group_by=None)(meta, y)
        np.testing.assert_array_equal(parts["test"], np.sort(test))


def test_kfold_within_source_spreads_each_source(data) -> None:
    meta, y = data
    parts = StratifiedKFold(n_splits=5, fold=0, seed=1, within="source")(meta, y)
    for source, rows in meta.groupby("source").indices.items():
        share = np.isin(rows, parts["test"]).mean()
        assert abs(share - 0.2) <= 0.03, source


def test_leave_source_out_tests_exactly_that_source(data) -> None:
    meta, y = data
    parts = LeaveSourceOut(test_source="B")(meta, y)
    source = meta["source"].to_numpy()
    np.testing.assert_array_equal(parts["test"], np.flatnonzero(source == "B"))
    assert set(source[np.concatenate([parts["train"], parts["val"]])]) == {"A", "C"}
    assert_disjoint_cover(parts, len(meta))


def test_leave_source_out_with_a_validation_source(data) -> None:
    meta, y = data
    parts = LeaveSourceOut(test_source="A", val_source="C")(meta, y)
    source = meta["source"].to_numpy()
    assert set(source[parts["test"]]) == {"A"}
    assert set(source[parts["val"]]) == {"C"}
    assert set(source[parts["train"]]) == {"B"}
    assert_disjoint_cover(parts, len(meta))


def test_random_stratified_split_is_sklearns(data) -> None:
    meta, _ = data
    rng = np.random.default_rng(5)
    label = rng.choice(4, size=len(meta), p=[0.2, 0.2, 0.35, 0.25])
    y = np.eye(4, dtype=np.float32)[label]
    parts = RandomStratifiedSplit()(meta, y)  # test 0.2, seed 42: the vision seed's split
    _, test = train_test_split(np.arange(len(meta)), test_size=0.2, stratify=label, random_state=42)
    np.testing.assert_array_equal(parts["test"], np.sort(test))
    assert_disjoint_cover(parts, len(meta))
    for split, idx in parts.items():
        shares = np.bincount(label[idx], minlength=4) / len(idx)
        assert np.abs(shares - np.bincount(label) / len(label)).max() <= 0.02, split
    other = RandomStratifiedSplit(seed=7)(meta, y)
    assert not np.array_equal(other["test"], parts["test"])


@pytest.mark.parametrize(
    ("make", "key"),
    [
        (lambda: StratifiedKFold(n_splits=5, fold=5), "split.fold"),
        (lambda: StratifiedKFold(n_splits=5, fold=-1), "split.fold"),
        (lambda: StratifiedKFold(n_splits=2), "split.n_splits"),
        (lambda: StratifiedShuffleSplit(val_fraction=0.0), "split.val_fraction"),
        (lambda: StratifiedShuffleSplit(test_fraction=1.5), "split.test_fraction"),
        (lambda: RandomStratifiedSplit(test_fraction=0), "split.test_fraction"),
        (lambda: LeaveSourceOut(test_source="A", val_source="A"), "split.val_source"),
        (lambda: CSVSplit("a", "b", "c", key="name"), "split.key"),
    ],
)
def test_bad_settings_name_the_key(make, key: str) -> None:
    with pytest.raises(ConfigValueError, match=key.replace(".", r"\.")):
        make()


def test_bad_data_names_the_key(data) -> None:
    meta, y = data
    with pytest.raises(ConfigValueError, match=r"split\.test_source='Z'.*\['A', 'B', 'C'\]"):
        LeaveSourceOut(test_source="Z")(meta, y)
    with pytest.raises(ConfigValueError, match=r"split\.group_by='subject'"):
        StratifiedShuffleSplit(group_by="subject")(meta, y)
    two = meta.iloc[:2].reset_index(drop=True)
    with pytest.raises(ConfigValueError, match=r"split\.(val|test)_fraction"):
        StratifiedShuffleSplit(group_by=None)(two, y[:2])
    one_patient = meta.iloc[:4].assign(patient_id="p0")
    with pytest.raises(ConfigValueError, match=r"split\.(train|val|test): no records"):
        StratifiedShuffleSplit()(one_patient, y[:4])
    only_b = meta[meta["source"] == "B"].reset_index(drop=True)
    with pytest.raises(ConfigValueError, match=r"split\.train"):
        LeaveSourceOut(test_source="B")(only_b, y[: len(only_b)])


# -- split files ------------------------------------------------------------------------------
def test_csv_round_trip(data, tmp_path: Path) -> None:
    meta, y = data
    parts = StratifiedShuffleSplit(0.25, 0.2, seed=1)(meta, y)
    files = write_split_csv(meta, y, CLASSES, parts, tmp_path, fs=500)
    table = pd.read_csv(files["train"])
    # The SE-ResNet refactor reads labels from the fifth column on.
    assert list(table.columns) == ["path", "age", "gender", "fs", *CLASSES]
    first = parts["train"][0]
    assert table["path"].iloc[0] == meta["path"].iloc[first]
    assert set(table["gender"]) <= {"Male", "Female", "Unknown"}
    assert (table["age"] == -1).any() and not table["age"].isna().any()
    np.testing.assert_array_equal(table[CLASSES].to_numpy(), y[parts["train"]].astype(int))
    read = CSVSplit(**{s: str(f) for s, f in files.items()})(meta, y)
    for split in SPLITS:
        np.testing.assert_array_equal(read[split], parts[split])


def test_csv_matches_record_ids_by_file_name(data, tmp_path: Path) -> None:
    # CinC-style files: the file name is the record id (A0001.mat is record A0001).
    meta, y = data
    meta = meta.assign(path=[f"g1/{r}" for r in meta["record_id"]])
    parts = StratifiedShuffleSplit(0.25, 0.2, seed=1)(meta, y)
    files = write_split_csv(meta, y, CLASSES, parts, tmp_path)
    moved = meta.assign(path=[f"elsewhere/{r}.mat" for r in meta["record_id"]])
    read = CSVSplit(**{s: str(f) for s, f in files.items()}, key="record_id")(moved, y)
    for split in SPLITS:
        np.testing.assert_array_equal(read[split], parts[split])
    with pytest.raises(ConfigValueError, match="match no record by path"):
        CSVSplit(**{s: str(f) for s, f in files.items()}, key="path")(moved, y)


def test_csv_matches_absolute_paths_with_extensions(data, tmp_path: Path) -> None:
    meta, y = data
    rows = {"train": [0, 1, 2], "val": [3], "test": [4, 5]}
    for name, idx in rows.items():
        paths = [f"/data/ptbxl/{p}.mat" for p in meta["path"].iloc[idx]]
        pd.DataFrame({"path": paths, "age": 50, "gender": "Male", "fs": 500}).to_csv(
            tmp_path / f"{name}.csv", index=False
        )
    read = CSVSplit(*(str(tmp_path / f"{s}.csv") for s in SPLITS))(meta, y)
    assert {s: read[s].tolist() for s in SPLITS} == rows


def test_csv_unmatched_rows_name_the_file_and_rows(data, tmp_path: Path) -> None:
    meta, y = data
    files = write_split_csv(meta, y, CLASSES, {"train": [0, 1], "val": [2], "test": [3]}, tmp_path)
    table = pd.read_csv(files["val"])
    table.loc[len(table)] = ["records500/99/missing_hr", 40, "Male", None, 0, 0, 0, 0, 0]
    table.to_csv(files["val"], index=False)
    with pytest.raises(ConfigValueError, match=r"split\.val=.*val\.csv.*line 3.*missing_hr"):
        CSVSplit(**{s: str(f) for s, f in files.items()})(meta, y)


def test_csv_record_in_two_files_is_an_error(data, tmp_path: Path) -> None:
    meta, y = data
    files = write_split_csv(meta, y, CLASSES, {"train": [0, 1], "val": [1], "test": [3]}, tmp_path)
    with pytest.raises(ConfigValueError, match=r"split\.val.*also in split\.train"):
        CSVSplit(**{s: str(f) for s, f in files.items()})(meta, y)


# -- the config group ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("option", "overrides", "cls"),
    [
        ("stratified_shuffle", [], StratifiedShuffleSplit),
        ("stratified_kfold", ["split.fold=4"], StratifiedKFold),
        ("leave_source_out", ["split.test_source=ptbxl"], LeaveSourceOut),
        ("random_stratified", [], RandomStratifiedSplit),
        ("csv", ["split.train=a.csv", "split.val=b.csv", "split.test=c.csv"], CSVSplit),
    ],
)
def test_split_yamls_compose_and_instantiate(compose_train, option, overrides, cls) -> None:
    split = instantiate(compose_train(f"split={option}", *overrides).split)
    assert type(split) is cls


def test_stratified_kfold_yaml_through_the_datamodule(compose_train) -> None:
    dm = instantiate(compose_train("split=stratified_kfold", "split.fold=2").data)
    dm.setup("fit")
    sizes = {name: len(idx) for name, idx in dm.indices.items()}
    assert sum(sizes.values()) == len(dm.cache) - dm.dropped_unlabelled
    seen = {name: set(dm.cache.meta["patient_id"].iloc[idx]) for name, idx in dm.indices.items()}
    assert not seen["train"] & seen["val"] and not seen["train"] & seen["test"]
