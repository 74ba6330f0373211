"""How records become train / val / test. A split is ``split(meta, y) -> {name: positions}``
over the rows of ``meta`` (records that have a label in the task).

Every split here is deterministic given its ``seed`` and the order of ``meta``'s rows, and
raises :class:`ConfigValueError` naming the ``split.<key>`` at fault. Where a split also takes a
``val_fraction``, it is a fraction of what remains once the test set is taken.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from iterstrat.ml_stratifiers import (
    MultilabelStratifiedKFold,
    MultilabelStratifiedShuffleSplit,
)
from sklearn.model_selection import train_test_split

from ecgx.errors import ConfigValueError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


class FoldSplit:
    """Assign records by a fold column, e.g. PTB-XL's ``strat_fold`` 1–8 / 9 / 10."""

    def __init__(
        self,
        train: Sequence[int] = (1, 2, 3, 4, 5, 6, 7, 8),
        val: Sequence[int] = (9,),
        test: Sequence[int] = (10,),
        column: str = "strat_fold",
    ) -> None:
        self.folds = {"train": list(train), "val": list(val), "test": list(test)}
        self.column = column
        seen: dict[int, str] = {}
        for name, folds in self.folds.items():
            for fold in folds:
                if fold in seen:
                    raise ConfigValueError(f"split: fold {fold} is in both {seen[fold]} and {name}")
                seen[fold] = name

    def __call__(self, meta: pd.DataFrame, y: np.ndarray) -> dict[str, np.ndarray]:
        if self.column not in meta.columns:
            raise ConfigValueError(
                f"split.column={self.column!r} is not a metadata column of this dataset "
                f"(has {[c for c in meta.columns if c != 'labels']})"
            )
        fold = meta[self.column].to_numpy()
        out = {name: np.flatnonzero(np.isin(fold, folds)) for name, folds in self.folds.items()}
        for name, idx in out.items():
            if len(idx) == 0:
                raise ConfigValueError(
                    f"split.{name}: no records in folds {self.folds[name]} "
                    f"(present: {sorted(set(fold.tolist()))})"
                )
        return out


# -- shared pieces -----------------------------------------------------------------------------
def _check_fraction(key: str, value: float) -> float:
    value = float(value)
    if not 0.0 < value < 1.0:
        raise ConfigValueError(f"split.{key}={value} must be strictly between 0 and 1")
    return value


def _check_column(meta: pd.DataFrame, key: str, column: str) -> None:
    if column not in meta.columns:
        raise ConfigValueError(
            f"split.{key}={column!r} is not a metadata column of this dataset "
            f"(has {[c for c in meta.columns if c != 'labels']})"
        )


def _checked(parts: dict[str, np.ndarray], why: str) -> dict[str, np.ndarray]:
    """Sorted positions per split; an empty split is a config error, not a silent 0-length set."""
    for name in SPLITS:
        if len(parts[name]) == 0:
            raise ConfigValueError(f"split.{name}: no records ({why})")
    return {name: np.sort(parts[name]).astype(np.int64) for name in SPLITS}


def _label_matrix(y: np.ndarray) -> np.ndarray:
    """Boolean multi-hot that iterstrat accepts: it rejects anything sklearn does not call
    ``multilabel-indicator``, which a single-column (binary) task is not, so that one gets its
    complement as a second column."""
    z = np.asarray(y) > 0
    if z.ndim == 1:
        z = z[:, None]
    if z.shape[1] == 0:
        # No classes (an unlabelled set for pretraining): one class every record has, so the
        # draws are plain random ones of the right sizes (patients still kept whole).
        z = np.ones((len(z), 1), dtype=bool)
    if z.shape[1] < 2:
        z = np.column_stack([z, ~z.any(axis=1)])
    return z


class _Groups:
    """Records folded into groups (patients) so that no split separates a group's records.

    ``counts[g, c]`` is the number of records of group g with label c and ``sizes[g]`` its
    number of records. Without grouping (or when every group is one record) ``singletons`` is
    true and the splits use iterstrat as the seed studies did.
    """

    def __init__(self, meta: pd.DataFrame, y: np.ndarray, group_by: str | None) -> None:
        if len(meta) == 0:
            raise ConfigValueError("split: there are no labelled records to split")
        if len(y) != len(meta):
            raise ValueError(f"split: {len(y)} targets for {len(meta)} metadata rows")
        if group_by is None:
            codes = np.arange(len(meta))
        else:
            _check_column(meta, "group_by", group_by)
            codes, _ = pd.factorize(meta[group_by], sort=False)
            # A record without an id (NaN) is a group of its own rather than one big group.
            missing = codes < 0
            codes[missing] = codes.max() + 1 + np.arange(int(missing.sum()))
        self.codes = codes
        z = _label_matrix(y)
        self.counts = np.zeros((int(codes.max()) + 1, z.shape[1]), dtype=np.int64)
        np.add.at(self.counts, codes, z)
        self.sizes = np.bincount(codes)
        self.singletons = bool(self.sizes.max() == 1)

    def __len__(self) -> int:
        return len(self.sizes)

    @property
    def labels(self) -> np.ndarray:
        return self.counts > 0

    def records(self, groups: np.ndarray) -> np.ndarray:
        return np.flatnonzero(np.isin(self.codes, groups))


def _stratify_groups(
    counts: np.ndarray,
    sizes: np.ndarray,
    ratios: Sequence[float],
    rng: np.random.RandomState,
    shuffle: bool = True,
) -> np.ndarray:
    """The part (0..len(ratios)-1) of each group: iterative stratification (Sechidis et al.
    2011, iterstrat's algorithm) with groups weighted by their records.

    iterstrat splits rows and has no notion of groups. Run on one row per group (its labels
    OR-ed), it balances patients, not records: multi-record patients carry more labels, are
    placed first and skew both the split sizes and the label shares (on a synthetic set with
    40% multi-record patients, worse than a random split). So here a group counts as its
    records: the rarest label (in records still unplaced) goes first, each of its groups to the
    part that still lacks most records of that label, ties to the part lacking most records,
    then at random. Larger groups go first so that small ones fill the remaining gaps.
    """
    ratios = np.asarray(ratios, dtype=float)
    want = np.outer(ratios, counts.sum(axis=0)).astype(float)
    room = ratios * sizes.sum()
    part = np.full(len(sizes), -1, dtype=np.int64)
    order = rng.permutation(len(sizes)) if shuffle else np.arange(len(sizes))
    order = order[np.argsort(-sizes[order], kind="stable")]

    def best(score: np.ndarray) -> int:
        top = np.flatnonzero(score == score.max())
        top = top[room[top] == room[top].max()]
        return int(top[rng.randint(len(top))])

    while (part < 0).any():
        left = counts[part < 0].sum(axis=0)
        if not left.any():  # only unlabelled groups remain: fill by size
            for g in order[part[order] < 0]:
                part[g] = best(room)
                room[part[g]] -= sizes[g]
            break
        rarest = np.flatnonzero(left == left[left > 0].min())
        label = rarest[rng.randint(len(rarest))]
        for g in order[(part[order] < 0) & (counts[order, label] > 0)]:
            part[g] = best(want[:, label])
            want[part[g]] -= counts[g]
            room[part[g]] -= sizes[g]
    return part


def _two_way(
    groups: _Groups, members: np.ndarray, fraction: float, rng: np.random.RandomState, key: str
) -> tuple[np.ndarray, np.ndarray]:
    """(rest, part) of the groups ``members``, part holding about ``fraction`` of the records."""
    if groups.singletons:
        splitter = MultilabelStratifiedShuffleSplit(
            n_splits=1, test_size=fraction, random_state=rng
        )
        labels = groups.labels[members]
        try:
            rest, part = next(splitter.split(np.zeros(len(labels)), labels))
        except ValueError as err:  # too few records for the fraction
            raise ConfigValueError(f"split.{key}={fraction}: {err}") from err
    else:
        side = _stratify_groups(
            groups.counts[members], groups.sizes[members], (1 - fraction, fraction), rng
        )
        rest, part = np.flatnonzero(side == 0), np.flatnonzero(side == 1)
    return members[rest], members[part]


# -- stratified random splits -------------------------------------------------------------------
class StratifiedShuffleSplit:
    """Multi-label stratified random train / val / test.

    The test set is ``test_fraction`` of all records, then ``val_fraction`` of the rest is the
    validation set, both drawn from one seeded generator. Ungrouped, each draw is iterstrat's
    MultilabelStratifiedShuffleSplit; with ``group_by`` (patients), all records of one group
    land in the same split (see :func:`_stratify_groups`).
    """

    def __init__(
        self,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        seed: int = 0,
        group_by: str | None = "patient_id",
    ) -> None:
        self.val_fraction = _check_fraction("val_fraction", val_fraction)
        self.test_fraction = _check_fraction("test_fraction", test_fraction)
        self.seed = int(seed)
        self.group_by = group_by

    def __call__(self, meta: pd.DataFrame, y: np.ndarray) -> dict[str, np.ndarray]:
        groups = _Groups(meta, y, self.group_by)
        rng = np.random.RandomState(self.seed)
        everyone = np.arange(len(groups))
        rest, test = _two_way(groups, everyone, self.test_fraction, rng, "test_fraction")
        train, val = _two_way(groups, rest, self.val_fraction, rng, "val_fraction")
        parts = {"train": train, "val": val, "test": test}
        return _checked(
            {name: groups.records(g) for name, g in parts.items()},
            f"{len(groups)} groups, val_fraction={self.val_fraction}, "
            f"test_fraction={self.test_fraction}",
        )


class StratifiedKFold:
    """Multi-label stratified k folds; fold ``fold`` (0-based) is the test set.

    Validation is, by default, the next fold (``(fold + 1) % n_splits``), so a sweep over
    ``fold=0..k-1`` tests and validates on every record exactly once and the rest is train.
    With ``val_fraction`` set, validation is instead that fraction of the other k-1 folds,
    drawn stratified. ``within`` (e.g. ``source``) folds each value of that column on its own
    and joins fold i of each, as the SE-ResNet original did per database. Ungrouped, the folds
    are iterstrat's MultilabelStratifiedKFold; with ``group_by``, see :func:`_stratify_groups`.
    """

    def __init__(
        self,
        n_splits: int = 5,
        fold: int = 0,
        val_fraction: float | None = None,
        seed: int = 0,
        shuffle: bool = True,
        group_by: str | None = "patient_id",
        within: str | None = None,
    ) -> None:
        self.n_splits = int(n_splits)
        minimum = 2 if val_fraction is not None else 3
        if self.n_splits < minimum:
            raise ConfigValueError(
                f"split.n_splits={n_splits} must be at least {minimum} "
                f"({'test, val and train folds' if minimum == 3 else 'test and train folds'})"
            )
        if not 0 <= int(fold) < self.n_splits:
            raise ConfigValueError(f"split.fold={fold} is out of range 0..{self.n_splits - 1}")
        self.fold = int(fold)
        self.val_fraction = (
            None if val_fraction is None else _check_fraction("val_fraction", val_fraction)
        )
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.group_by = group_by
        self.within = within

    def _folds(
        self, groups: _Groups, members: np.ndarray, rng: np.random.RandomState
    ) -> np.ndarray:
        if not groups.singletons:
            ratios = [1 / self.n_splits] * self.n_splits
            return _stratify_groups(
                groups.counts[members], groups.sizes[members], ratios, rng, self.shuffle
            )
        # Unshuffled, iterstrat still breaks ties at random, but sklearn refuses a random_state
        # without shuffle and the ties would come from numpy's global generator: set it after.
        kfold = MultilabelStratifiedKFold(self.n_splits, shuffle=self.shuffle)
        kfold.random_state = rng
        labels = groups.labels[members]
        folds = np.empty(len(members), dtype=np.int64)
        try:
            for i, (_, test) in enumerate(kfold.split(np.zeros(len(labels)), labels)):
                folds[test] = i
        except ValueError as err:  # fewer records than folds
            raise ConfigValueError(f"split.n_splits={self.n_splits}: {err}") from err
        return folds

    def group_folds(self, meta: pd.DataFrame, y: np.ndarray) -> tuple[_Groups, np.ndarray]:
        """The groups and the fold (0..n_splits-1) of each group."""
        groups = _Groups(meta, y, self.group_by)
        if self.within is None:
            strata = np.zeros(len(groups), dtype=np.int64)
        else:
            _check_column(meta, "within", self.within)
            # A group's stratum is that of its first record (a patient has one database).
            first = pd.Series(np.arange(len(meta))).groupby(groups.codes).first().to_numpy()
            strata, _ = pd.factorize(meta[self.within].to_numpy()[first], sort=False)
        folds = np.full(len(groups), -1, dtype=np.int64)
        for stratum in np.unique(strata):
            members = np.flatnonzero(strata == stratum)
            # A fresh generator per stratum, as the original's one splitter per database: one
            # database's folds do not change when another is added.
            folds[members] = self._folds(groups, members, np.random.RandomState(self.seed))
        return groups, folds

    def __call__(self, meta: pd.DataFrame, y: np.ndarray) -> dict[str, np.ndarray]:
        groups, folds = self.group_folds(meta, y)
        test = np.flatnonzero(folds == self.fold)
        if self.val_fraction is None:
            next_fold = (self.fold + 1) % self.n_splits
            val = np.flatnonzero(folds == next_fold)
            train = np.flatnonzero((folds != self.fold) & (folds != next_fold))
        else:
            rest = np.flatnonzero(folds != self.fold)
            rng = np.random.RandomState(self.seed)
            train, val = _two_way(groups, rest, self.val_fraction, rng, "val_fraction")
        parts = {"train": train, "val": val, "test": test}
        return _checked(
            {name: groups.records(g) for name, g in parts.items()},
            f"{len(groups)} groups in {self.n_splits} folds",
        )


class LeaveSourceOut:
    """Database-wise: every record of ``test_source`` is the test set (the SE-ResNet refactor).

    Validation is the records of ``val_source`` when given (the refactor's database-wise
    scheme), else a stratified ``val_fraction`` of the other databases pooled (its hold-out
    scheme); train is everything else.
    """

    def __init__(
        self,
        test_source: str,
        val_source: str | None = None,
        val_fraction: float = 0.25,
        seed: int = 2022,
        group_by: str | None = "patient_id",
        column: str = "source",
    ) -> None:
        if val_source is not None and str(val_source) == str(test_source):
            raise ConfigValueError(
                f"split.val_source={val_source!r} is also split.test_source; choose another"
            )
        self.test_source = str(test_source)
        self.val_source = None if val_source is None else str(val_source)
        self.val_fraction = _check_fraction("val_fraction", val_fraction)
        self.seed = int(seed)
        self.group_by = group_by
        self.column = column

    def __call__(self, meta: pd.DataFrame, y: np.ndarray) -> dict[str, np.ndarray]:
        _check_column(meta, "column", self.column)
        source = meta[self.column].astype(str).to_numpy()
        present = sorted(set(source.tolist()))
        for key, name in (("test_source", self.test_source), ("val_source", self.val_source)):
            if name is not None and name not in present:
                raise ConfigValueError(
                    f"split.{key}={name!r} is not a value of {self.column!r} (present: {present})"
                )
        test = np.flatnonzero(source == self.test_source)
        if self.val_source is not None:
            val = np.flatnonzero(source == self.val_source)
            train = np.flatnonzero((source != self.test_source) & (source != self.val_source))
        else:
            pool = np.flatnonzero(source != self.test_source)
            if len(pool) == 0:
                raise ConfigValueError(
                    f"split.train: no records outside split.test_source={self.test_source!r}"
                )
            groups = _Groups(meta.iloc[pool], y[pool], self.group_by)
            rng = np.random.RandomState(self.seed)
            keep, held = _two_way(
                groups, np.arange(len(groups)), self.val_fraction, rng, "val_fraction"
            )
            train, val = pool[groups.records(keep)], pool[groups.records(held)]
        return _checked(
            {"train": train, "val": val, "test": test}, f"{self.column} values {present}"
        )


class RandomStratifiedSplit:
    """Single-label stratified random split (the vision seed: 80/20, stratified, seed 42).

    The class of a record is the argmax of its targets (the first positive class where a record
    has several). The test set is sklearn's ``train_test_split(test_size=test_fraction,
    stratify=class, random_state=seed)``, so with the seed's record order it is the seed's test
    set; the seed had no validation set, so ``val_fraction`` of the remaining records is drawn
    the same way from them.
    """

    def __init__(
        self, val_fraction: float = 0.1, test_fraction: float = 0.2, seed: int = 42
    ) -> None:
        self.val_fraction = _check_fraction("val_fraction", val_fraction)
        self.test_fraction = _check_fraction("test_fraction", test_fraction)
        self.seed = int(seed)

    def __call__(self, meta: pd.DataFrame, y: np.ndarray) -> dict[str, np.ndarray]:
        y = np.asarray(y).reshape(len(meta), -1)
        classes = y.argmax(axis=1)
        several = int(((y > 0).sum(axis=1) > 1).sum())
        if several:
            log.warning("split: %d records have several labels; using the first", several)
        positions = np.arange(len(meta))
        rest, test = self._draw(positions, classes, self.test_fraction, "test_fraction")
        train, val = self._draw(rest, classes[rest], self.val_fraction, "val_fraction")
        return _checked({"train": train, "val": val, "test": test}, f"{len(meta)} records")

    def _draw(
        self, positions: np.ndarray, classes: np.ndarray, fraction: float, key: str
    ) -> tuple[np.ndarray, np.ndarray]:
        try:
            kept, drawn = train_test_split(
                positions, test_size=fraction, stratify=classes, random_state=self.seed
            )
        except ValueError as err:  # a class with a single record, or too few records
            raise ConfigValueError(f"split.{key}={fraction}: {err}") from err
        return kept, drawn


# -- split files in the SE-ResNet seed's CSV format ---------------------------------------------
_CSV_FIXED = ("path", "age", "gender", "fs")


def write_split_csv(
    meta: pd.DataFrame,
    y: np.ndarray,
    class_names: Sequence[str],
    indices: dict[str, np.ndarray],
    folder: str | Path,
    fs: float | None = None,
) -> dict[str, Path]:
    """Write ``<folder>/<split>.csv`` per split in the SE-ResNet refactor's format.

    Columns ``path, age, gender, fs, <one 0/1 column per class>``: the refactor reads the labels
    from the fifth column on, so ``fs`` is always written (from ``meta['fs']``, else ``fs``,
    else empty). Age is -1 where unknown and gender ``Male``/``Female``/``Unknown``, as there.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    y = np.asarray(y).reshape(len(meta), -1)
    if y.shape[1] != len(class_names):
        raise ValueError(f"write_split_csv: {y.shape[1]} target columns, {len(class_names)} names")
    sex = meta["sex"].to_numpy(dtype=float)
    table = pd.DataFrame(
        {
            "path": meta["path"].astype(str).to_numpy(),
            "age": meta["age"].astype(float).fillna(-1).to_numpy(),
            "gender": np.where(sex == 0, "Male", np.where(sex == 1, "Female", "Unknown")),
            "fs": meta["fs"].to_numpy() if "fs" in meta.columns else fs,
        }
    )
    for j, name in enumerate(class_names):
        table[str(name)] = (y[:, j] > 0).astype(int)
    written = {}
    for name, idx in indices.items():
        written[name] = folder / f"{name}.csv"
        table.iloc[np.asarray(idx)].to_csv(written[name], index=False)
    return written


def _strip(path: str) -> tuple[str, ...]:
    """A path's components without the file extension, ``/`` or ``\\`` separated."""
    parts = [p for p in str(path).replace("\\", "/").split("/") if p not in ("", ".")]
    if parts:
        parts[-1] = parts[-1].rsplit(".", 1)[0] if "." in parts[-1] else parts[-1]
    return tuple(parts)


class CSVSplit:
    """Splits read from CSV files (the SE-ResNet seed's ``path, age, gender, fs, <labels>``).

    ``key="path"`` matches a CSV ``path`` to a record whose metadata ``path`` ends it, ignoring
    extensions, so the seed's absolute ``.../A0001.mat`` finds ``A0001``. ``key="record_id"``
    uses a ``record_id`` column when the file has one, else the file name of ``path``. Records
    listed in no file are left out; a row that matches no record is an error.
    """

    def __init__(self, train: str, val: str, test: str, key: str = "path") -> None:
        if key not in ("path", "record_id"):
            raise ConfigValueError(f"split.key must be 'path' or 'record_id', got {key!r}")
        self.files = {"train": str(train), "val": str(val), "test": str(test)}
        self.key = key

    def __call__(self, meta: pd.DataFrame, y: np.ndarray) -> dict[str, np.ndarray]:
        lookup = self._lookup(meta)
        out: dict[str, np.ndarray] = {}
        owner: dict[int, str] = {}
        for name, file in self.files.items():
            positions = self._read(name, file, lookup)
            clash = [int(p) for p in positions if int(p) in owner]
            if clash:
                first = meta["record_id"].iloc[clash[0]]
                raise ConfigValueError(
                    f"split.{name}: {file} lists {len(clash)} records also in "
                    f"split.{owner[clash[0]]} (e.g. record {first})"
                )
            owner.update(dict.fromkeys(positions.tolist(), name))
            out[name] = positions
        return _checked(out, "an empty split file")

    def _lookup(self, meta: pd.DataFrame) -> dict[tuple[str, ...], int]:
        column = "path" if self.key == "path" else "record_id"
        values = meta[column].astype(str)
        keys = [_strip(v) if column == "path" else (v,) for v in values]
        return {k: i for i, k in enumerate(keys)}

    def _read(self, name: str, file: str, lookup: dict[tuple[str, ...], int]) -> np.ndarray:
        path = Path(file)
        if not path.is_file():
            raise ConfigValueError(f"split.{name}={file!r}: no such file")
        table = pd.read_csv(path, dtype={"path": str, "record_id": str})
        if self.key == "record_id" and "record_id" in table.columns:
            wanted = [(str(v),) for v in table["record_id"]]
        elif "path" in table.columns:
            stripped = [_strip(v) for v in table["path"]]
            wanted = stripped if self.key == "path" else [s[-1:] for s in stripped]
        else:
            raise ConfigValueError(f"split.{name}={file!r} has no 'path' column")
        positions, unmatched = [], []
        for row, parts in enumerate(wanted):
            # The longest tail of the CSV path that is a record's path wins: meta paths are
            # relative to the dataset root, the seed's CSV paths are usually absolute.
            hit = next((lookup[parts[k:]] for k in range(len(parts)) if parts[k:] in lookup), None)
            if hit is None:
                unmatched.append(row)
            else:
                positions.append(hit)
        if unmatched:
            shown = ", ".join(f"line {r + 2}: {'/'.join(wanted[r])}" for r in unmatched[:5])
            raise ConfigValueError(
                f"split.{name}={file!r}: {len(unmatched)} of {len(wanted)} rows match no record "
                f"by {self.key} ({shown}{', ...' if len(unmatched) > 5 else ''})"
            )
        return np.unique(np.asarray(positions, dtype=np.int64))


class MISubdiseaseSplit:
    """IMLE-Net's MI sub-disease split (spec A3): train = MI records of folds 1–8 plus the first
    ``norm_train`` NORM records of folds 1–2; test = MI records of folds 9–10 plus the first
    ``norm_test`` NORM records of fold 3. The seed has no validation set and lets the test set
    drive checkpointing; ``val`` is therefore the test set, as in the seed.
    """

    def __init__(self, norm_train: int = 900, norm_test: int = 200, norm_class: int = 2,
                 column: str = "strat_fold") -> None:  # fmt: skip
        self.norm_train, self.norm_test = int(norm_train), int(norm_test)
        self.norm_class, self.column = int(norm_class), column

    def __call__(self, meta: pd.DataFrame, y: np.ndarray) -> dict[str, np.ndarray]:
        fold = meta[self.column].to_numpy()
        norm = y[:, self.norm_class] > 0
        order = np.argsort(meta["record_id"].astype(int).to_numpy(), kind="stable")
        norm_rows = order[norm[order]]  # NORM records in ecg_id order ("the first N")
        train = np.concatenate([
            np.flatnonzero(~norm & (fold <= 8)),
            norm_rows[np.isin(fold[norm_rows], (1, 2))][: self.norm_train],
        ])  # fmt: skip
        test = np.concatenate([
            np.flatnonzero(~norm & np.isin(fold, (9, 10))),
            norm_rows[fold[norm_rows] == 3][: self.norm_test],
        ])  # fmt: skip
        if not len(train) or not len(test):
            raise ConfigValueError(
                "split (mi_subdisease): no records; is dataset.task mi_subdisease?"
            )
        return {"train": np.sort(train), "val": np.sort(test), "test": np.sort(test)}
