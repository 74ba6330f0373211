"""The LightningDataModule: reader -> offline transforms -> cache -> split -> online transforms."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from ecgx.data.cache import SignalCache, build_or_open, build_shard
from ecgx.data.pairs import PatientPartners
from ecgx.errors import ConfigValueError
from ecgx.splits.fraction import check_fraction, label_subset
from ecgx.splits.splitters import SPLITS
from ecgx.transforms.signal import Standardize, TransformPipeline

log = logging.getLogger(__name__)


#: data.pairs values; only ``patient`` fetches a second record (see ECGDataModule)
PAIRS = (None, "none", "segments", "patient")


class ECGDataset(Dataset):
    """Records of one split from an opened cache, normalised and (in training) augmented.

    A DataLoader with automatic batching asks for whole batches (:meth:`__getitems__`): the
    batch's records are read into one array and transformed together, the random numbers of
    the whole batch drawn from one generator; ``dataset[i]`` is one record on its own.
    """

    def __init__(
        self,
        cache: SignalCache,
        indices: np.ndarray,
        targets: np.ndarray,
        transform: TransformPipeline,
        train: bool,
        extras: dict[str, np.ndarray] | None = None,
        partners: PatientPartners | None = None,
    ) -> None:
        self.cache = cache
        self.indices = indices
        self.targets = targets
        self.transform = transform
        self.train = train
        #: the model's extra inputs per cache row (shared with the DataModule, which fills it
        #: once the model is known)
        self.extras = extras if extras is not None else {}
        #: data.pairs=patient: each batch also carries a partner record of the same patient
        self.partners = partners

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        j = int(self.indices[i])
        rng = self._rng()
        x = self._sample(self.cache[j], rng)
        item = {"signal": torch.from_numpy(x), "target": torch.from_numpy(self.targets[j]),
                "index": j, **{k: torch.from_numpy(v[j]) for k, v in self.extras.items()}}  # fmt: skip
        if self.partners is not None:
            partner = int(self.partners.draw(np.array([i]), rng)[0])
            item["partner"] = torch.from_numpy(self._sample(self.cache[partner], rng))
            item["partner_index"] = partner
        return item

    def __getitems__(self, positions: Sequence[int]) -> Batch | list[dict[str, Any]]:
        rows = self.indices[np.asarray(positions, dtype=np.int64)]
        rng = self._rng()  # one per batch: a generator costs more than a record's transforms
        extras = {k: torch.from_numpy(v[rows]) for k, v in self.extras.items()}
        targets = torch.from_numpy(self.targets[rows])
        index = torch.from_numpy(rows.astype(np.int64, copy=False))
        if len(rows) and self.cache.fixed_length() is not None:
            x = self.transform.apply_batch(self.cache.gather(rows), rng)
            if self.partners is not None:
                partner_rows = self.partners.draw(np.asarray(positions), rng)
                partner = self.transform.apply_batch(self.cache.gather(partner_rows), rng)
                extras["partner"] = torch.from_numpy(np.ascontiguousarray(partner, np.float32))
                extras["partner_index"] = torch.from_numpy(partner_rows)  # which record it is
            return Batch(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), targets,
                         index, extras)  # fmt: skip
        signals = [self._sample(self.cache[int(j)], rng) for j in rows]
        if self.pad_to_longest and signals:
            # Uncropped test records scored window by window: one batch, zeros after each
            # record's end, its length beside it (the windows never reach the zeros).
            lengths = np.array([s.shape[-1] for s in signals])
            x = np.zeros((len(signals), signals[0].shape[0], lengths.max()), dtype=np.float32)
            for b, signal in enumerate(signals):
                x[b, :, : signal.shape[-1]] = signal
            return Batch(torch.from_numpy(x), targets, index, extras, torch.from_numpy(lengths))
        # Records of varying length: one by one, as default_collate expects them.
        return [{"signal": torch.from_numpy(x), "target": targets[b], "index": int(index[b]),
                 **{k: v[b] for k, v in extras.items()}}
                for b, x in enumerate(signals)]  # fmt: skip

    @property
    def pad_to_longest(self) -> bool:
        return getattr(self.transform, "keeps_length", False)

    def _rng(self) -> np.random.Generator | None:
        # Seeded from torch's generator, which Lightning seeds per run (and restores on resume)
        # and DataLoader per worker: augmentation is reproducible and differs between epochs
        # and workers.
        return np.random.default_rng(int(torch.randint(2**62, ()).item())) if self.train else None

    def _sample(self, x: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
        if self.transform.normalize is not None:
            x = self.transform.normalize(x)
        return np.array(self.transform.apply_online(x, rng), dtype=np.float32)


class Batch(Sequence):
    """A batch already stacked by :meth:`ECGDataset.__getitems__`. :func:`collate` passes it
    through as the batch dict; to any other collate function (``default_collate`` of a plain
    DataLoader) it is the sequence of its samples, which that function stacks again."""

    def __init__(
        self,
        signal: torch.Tensor,
        target: torch.Tensor,
        index: torch.Tensor,
        extras: dict[str, torch.Tensor] | None = None,
        length: torch.Tensor | None = None,
    ) -> None:
        self.signal, self.target, self.index = signal, target, index
        self.extras = extras or {}
        self.length = length  # samples of each record before padding (uncropped test view)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, Any]:  # type: ignore[override]
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        signal = self.signal[i] if self.length is None else self.signal[i, :, : self.length[i]]
        return {"signal": signal, "target": self.target[i], "index": int(self.index[i]),
                **{k: v[i] for k, v in self.extras.items()}}  # fmt: skip

    def as_dict(self) -> dict[str, torch.Tensor]:
        out = {"signal": self.signal, "target": self.target, "index": self.index, **self.extras}
        if self.length is not None:
            out["length"] = self.length
        return out


def collate(batch: Any) -> Any:
    """The loaders' collate function: a :class:`Batch` as it is, anything else as
    ``default_collate`` makes it."""
    return batch.as_dict() if isinstance(batch, Batch) else default_collate(batch)


class ECGDataModule(L.LightningDataModule):
    """Builds batches for one experiment from the ``dataset``, ``split`` and ``transform`` groups.

    Args:
        dataset: a reader (e.g. :class:`ecgx.datasets.ptbxl.PTBXL`) with ``ensure``, ``signal_spec``,
            ``metadata``, ``read`` and ``labels``.
        split: ``split(meta, y) -> {"train"|"val"|"test": positions}``.
        transform: the offline / fitted / online transforms.
        on_error: ``raise`` stops at the first bad record naming its file; ``skip`` skips and
            counts it (the list is logged to the run).
        reject_flat_leads: a record with a constant lead counts as bad (see ``on_error``).
        labelled: False (pretraining): every record of each split, labelled in this task or
            not; its labels are not used.
        label_fraction: keep this fraction of the training records (label-efficiency
            experiments; :func:`ecgx.splits.fraction.label_subset`), seeded by
            ``label_fraction_seed``.
        pairs: ``patient``: every batch also holds ``partner``, another record of each record's
            patient in the same split (its cache row in ``partner_index``) (itself when there is none; :mod:`ecgx.data.pairs`), for
            contrastive pretraining across records. ``None``, ``segments`` or ``none`` (the
            values of ``pretrain.objective.views.pairs`` that need no second record): no partner.
    """

    def __init__(
        self,
        dataset: Any,
        split: Any,
        transform: TransformPipeline | None = None,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        cache_dir: str | Path = "data/cache",
        on_error: str = "raise",
        rebuild_cache: bool = False,
        reject_flat_leads: bool = False,
        test_windows: Any = None,
        labelled: bool = True,
        label_fraction: float = 1.0,
        label_fraction_seed: int = 0,
        pairs: str | None = None,
    ) -> None:
        super().__init__()
        self.dataset = dataset
        self.split = split
        self.transform = transform or TransformPipeline(normalize=Standardize())
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.cache_dir = Path(cache_dir)
        self.on_error = on_error
        self.rebuild_cache = rebuild_cache
        self.reject_flat_leads = reject_flat_leads
        self.cache: SignalCache | None = None
        self.class_names: list[str] = []
        self.indices: dict[str, np.ndarray] = {}
        self.targets: np.ndarray | None = None
        self.dropped_unlabelled = 0
        self._fitted_state: dict | None = None
        self._datasets: dict[str, ECGDataset] = {}
        #: the model's extra inputs per cache row (:meth:`add_extra_inputs`)
        self.extras: dict[str, np.ndarray] = {}
        self.extras_missing: dict[str, int] = {}
        # Set with the module's test_windows: test records are scored uncropped.
        self.test_uncropped = test_windows is not None
        self.labelled = bool(labelled)
        self.label_fraction = check_fraction(label_fraction)
        self.label_fraction_seed = int(label_fraction_seed)
        if pairs not in PAIRS:
            raise ConfigValueError(
                f"data.pairs={pairs!r} is not one of {', '.join(map(str, PAIRS))}"
            )
        self.patient_pairs = pairs == "patient"
        self.partners: dict[str, PatientPartners] = {}

    # -- building ------------------------------------------------------------------------------
    def cache_spec(self) -> dict:
        # Record-rejection rules decide which records the cache holds, so they key it too.
        return {
            "dataset": self.dataset.signal_spec(),
            "offline": self.transform.offline_spec(),
            "on_error": self.on_error,
            "reject_flat_leads": self.reject_flat_leads,
        }

    def prepare_data(self) -> None:
        self._open_cache()

    def _open_cache(self) -> SignalCache:
        if self.cache is None:
            self.dataset.ensure()
            self.cache = build_or_open(
                self.cache_dir,
                self.cache_spec(),
                self.dataset.metadata,
                self.dataset.read,
                self.transform.apply_offline,
                on_error=self.on_error,
                rebuild=self.rebuild_cache,
                output_leads=self.transform.output_leads,
                reject_flat_leads=self.reject_flat_leads,
            )
            self.rebuild_cache = False
        return self.cache

    def build_shard(self, shard: str, workers: int | None = None) -> Any:
        """Build shard ``"i/N"`` of this config's cache (``ecgx data cache --shard i/N``); once
        all N are built, opening the cache joins them. Returns an
        :class:`ecgx.data.shards.ShardReport`."""
        self.dataset.ensure()
        return build_shard(self.cache_dir, self.cache_spec(), self.dataset.metadata,
                           self.dataset.read, self.transform.apply_offline, shard,
                           on_error=self.on_error, output_leads=self.transform.output_leads,
                           reject_flat_leads=self.reject_flat_leads, workers=workers)  # fmt: skip

    def setup(self, stage: str | None = None) -> None:
        if self._datasets:
            return
        cache = self._open_cache()
        y, self.class_names, keep = self.dataset.labels(cache.meta)
        if not self.labelled:
            keep = np.ones(len(cache.meta), dtype=bool)
        self.targets = y
        kept = np.flatnonzero(keep)
        self.dropped_unlabelled = int((~keep).sum())
        if self.dropped_unlabelled:
            log.info(
                "%d records have no label in this task and are left out", self.dropped_unlabelled
            )
        parts = self.split(cache.meta.iloc[kept].reset_index(drop=True), y[kept])
        self.indices = {name: kept[parts[name]] for name in SPLITS}
        if self.label_fraction < 1.0:
            train = self.indices["train"]
            chosen = label_subset(y[train], self.label_fraction, self.label_fraction_seed)
            log.info("label_fraction=%g: %d of %d training records", self.label_fraction,
                     len(chosen), len(train))  # fmt: skip
            self.indices["train"] = train[chosen]
        normalize = self.transform.normalize
        if normalize is not None:
            if self._fitted_state is not None:
                normalize.load_state_dict(self._fitted_state)
            else:
                # Streamed in chunks read from the file: memory stays that of one chunk.
                normalize.fit(cache.stream(self.indices["train"]))
        if self.patient_pairs:
            self._pair_by_patient(cache)
        for name in SPLITS:
            self._datasets[name] = self.dataset_of(name)
        log.info(
            "data: %s, %d classes %s",
            {k: len(v) for k, v in self.indices.items()},
            len(self.class_names),
            self.class_names,
        )

    def dataset_of(self, name: str, train: bool | None = None) -> ECGDataset:
        """The records of split ``name`` as the model sees them (``train``: augmented; the
        test split uncropped when the module scores windows)."""
        train = name == "train" if train is None else train
        transform = self.transform
        if name == "test" and self.test_uncropped and not train:
            transform = transform.uncropped()
        return ECGDataset(self._open_cache(), self.indices[name], self.targets, transform,
                          train=train, extras=self.extras,
                          partners=self.partners.get(name))  # fmt: skip

    def _pair_by_patient(self, cache: SignalCache) -> None:
        if cache.fixed_length() is None:
            raise ConfigValueError(
                "data.pairs=patient needs records of one length (a record and its partner are "
                "batched together): add a fixed-length offline transform"
            )
        if "patient_id" not in cache.meta.columns:
            raise ConfigValueError(
                f"data.pairs=patient: dataset {type(self.dataset).__name__} gives no patient_id"
            )
        ids = cache.meta["patient_id"].to_numpy(dtype=object)
        for name, rows in self.indices.items():
            self.partners[name] = PatientPartners(rows, ids[rows])
        train = self.partners["train"]
        log.info("data.pairs=patient: %d of %d training records have another record of their "
                 "patient", train.n_with_partner, len(train.rows))  # fmt: skip

    def add_extra_inputs(self, net: Any) -> None:
        """Put the extra inputs ``net`` takes (e.g. SE-ResNet18's demographics) into every
        batch, built from the records' metadata."""
        from ecgx.data.extras import from_metadata

        values, self.extras_missing = from_metadata(net, self._open_cache().meta)
        self.extras.clear()
        self.extras.update(values)

    # -- what the model needs to know --------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_leads(self) -> int:
        return self._open_cache().num_leads

    @property
    def input_length(self) -> int | None:
        return self.transform.output_length(self._open_cache().fixed_length())

    def example_input(self) -> torch.Tensor:
        """One validation record as a batch of one, as the model sees it (after transforms)."""
        return self.val_dataloader().dataset[0]["signal"].unsqueeze(0)

    def split_table(self) -> pd.DataFrame:
        """Record ids per split (logged to the run so the split can be audited and reused)."""
        meta = self._open_cache().meta
        rows = [
            pd.DataFrame({"record_id": meta["record_id"].iloc[idx].to_numpy(), "split": name})
            for name, idx in self.indices.items()
        ]
        return pd.concat(rows, ignore_index=True)

    # -- loaders -----------------------------------------------------------------------------
    def _loader(self, name: str, shuffle: bool, batch_size: int) -> DataLoader:
        return DataLoader(
            self._datasets[name],
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            collate_fn=collate,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True, self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False, self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False, self.eval_batch_size)

    # -- checkpointed state: what predict/eval need to transform new records identically -----
    def state_dict(self) -> dict:
        state: dict[str, Any] = {"class_names": list(self.class_names)}
        if self.transform.normalize is not None and self._datasets:
            # Plain lists and scalars: checkpoints load with weights_only=True.
            state["normalize"] = {
                k: v.tolist() if isinstance(v, np.ndarray) else v
                for k, v in self.transform.normalize.state_dict().items()
            }
        return state

    def load_state_dict(self, state: dict) -> None:
        self._fitted_state = state.get("normalize")
        if self._fitted_state is not None and self.transform.normalize is not None:
            self.transform.normalize.load_state_dict(self._fitted_state)
