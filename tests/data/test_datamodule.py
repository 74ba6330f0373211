"""The DataModule composed from config: folds, train-only normalisation, batches, state."""

from __future__ import annotations

import numpy as np
from hydra.utils import instantiate


def test_folds_and_batches(compose_train) -> None:
    dm = instantiate(compose_train().data)
    dm.prepare_data()
    dm.setup("fit")
    meta = dm.cache.meta
    folds = {name: set(meta["strat_fold"].iloc[idx]) for name, idx in dm.indices.items()}
    assert folds == {"train": set(range(1, 9)), "val": {9}, "test": {10}}
    patients = {name: set(meta["patient_id"].iloc[idx]) for name, idx in dm.indices.items()}
    assert not patients["train"] & patients["test"] and not patients["train"] & patients["val"]
    batch = next(iter(dm.train_dataloader()))
    assert batch["signal"].shape == (64, 12, 1000)
    assert batch["target"].shape == (64, 5)
    assert dm.class_names == ["CD", "HYP", "MI", "NORM", "STTC"]
    assert (dm.num_leads, dm.num_classes, dm.input_length) == (12, 5, 1000)


def test_normalisation_is_fitted_on_train_only(compose_train) -> None:
    dm = instantiate(compose_train().data)
    dm.setup("fit")
    train = np.stack([dm.cache[int(j)] for j in dm.indices["train"]]).astype(np.float64)
    norm = dm.transform.normalize
    assert np.isclose(norm.mean.item(), train.mean(), atol=1e-6)
    assert np.isclose(norm.std.item(), train.std(), rtol=1e-5)
    everything = np.stack([dm.cache[j] for j in range(len(dm.cache))]).astype(np.float64)
    assert not np.isclose(norm.mean.item(), everything.mean(), atol=1e-9)
    # The fitted statistics travel with the checkpoint and are restored from it.
    state = dm.state_dict()
    fresh = instantiate(compose_train().data)
    fresh.load_state_dict(state)
    fresh.setup("fit")
    np.testing.assert_array_equal(fresh.transform.normalize.mean, norm.mean)


def test_per_lead_and_online_crop(compose_train) -> None:
    dm = instantiate(compose_train("transform=random_crop").data)
    dm.setup("fit")
    assert dm.input_length == 250
    train = next(iter(dm.train_dataloader()))["signal"]
    test = next(iter(dm.test_dataloader()))["signal"]
    assert train.shape[-1] == test.shape[-1] == 250
    again = next(iter(dm.test_dataloader()))["signal"]
    assert (test == again).all()  # evaluation crops are deterministic (centre)


def _damaged_copy(synthetic_root, tmp_path):
    import shutil

    root = tmp_path / "damaged"
    shutil.copytree(synthetic_root, root)
    dat = root / "records100" / "00000" / "00005_lr.dat"
    dat.write_bytes(dat.read_bytes()[:999])
    return root


def test_bad_record_stops_the_build_naming_the_file(compose_train, synthetic_root, tmp_path):
    import pytest

    from ecgx.formats.record import RecordError

    root = _damaged_copy(synthetic_root, tmp_path)
    dm = instantiate(compose_train(f"dataset.root={root}").data)
    with pytest.raises(RecordError, match="00005_lr"):
        dm.prepare_data()


def test_on_error_skip_counts_and_names_the_record(compose_train, synthetic_root, tmp_path):
    root = _damaged_copy(synthetic_root, tmp_path)
    dm = instantiate(compose_train(f"dataset.root={root}", "data.on_error=skip").data)
    dm.setup("fit")
    assert [s["record_id"] for s in dm.cache.skipped] == ["5"]
    assert "00005_lr" in dm.cache.skipped[0]["error"]
    assert len(dm.cache) == 299 and "5" not in set(dm.cache.meta["record_id"])


# -- batches: read and transformed together ----------------------------------------------------
def _first_batches(dm, n: int = 2, seed: int = 0) -> list[dict]:
    import torch

    torch.manual_seed(seed)
    loader = dm.train_dataloader()
    return [batch for _, batch in zip(range(n), loader)]


def test_same_seed_same_batches_across_two_loaders(compose_train) -> None:
    import torch

    cfg = compose_train("transform=random_crop", "data.batch_size=32")
    dm, twin = instantiate(cfg.data), instantiate(cfg.data)
    dm.setup("fit")
    twin.setup("fit")
    first, again, other = _first_batches(dm), _first_batches(twin), _first_batches(dm, seed=1)
    for a, b in zip(first, again, strict=True):
        for key in ("signal", "target", "index"):
            assert torch.equal(a[key], b[key]), key
    assert not torch.equal(first[0]["signal"], other[0]["signal"])
    # The next epoch draws other crops for the same records.
    torch.manual_seed(0)
    loader = dm.train_dataloader()
    epochs = [next(iter(loader)) for _ in range(2)]
    assert not torch.equal(epochs[0]["signal"], epochs[1]["signal"])


def test_training_batches_are_crops_of_the_normalised_records(compose_train) -> None:
    import torch

    cfg = compose_train("transform=random_crop", "transform.online.1.p=0", "data.batch_size=16")
    dm = instantiate(cfg.data)
    dm.setup("fit")
    (batch,) = _first_batches(dm, n=1)
    assert batch["signal"].dtype == torch.float32 and batch["index"].dtype == torch.int64
    starts = set()
    for signal, target, j in zip(batch["signal"].numpy(), batch["target"], batch["index"],
                                 strict=True):  # fmt: skip
        record = dm.transform.normalize(dm.cache[int(j)])
        starts.add(next(s for s in range(751) if np.array_equal(signal, record[:, s : s + 250])))
        assert torch.equal(target, torch.from_numpy(dm.targets[int(j)]))
    assert len(starts) > 8  # a window of its own for each record


def test_evaluation_batches_equal_the_records_one_by_one(compose_train) -> None:
    import torch
    from torch.utils.data import DataLoader

    dm = instantiate(compose_train("transform=random_crop", "data.eval_batch_size=24").data)
    dm.setup("fit")
    batch = next(iter(dm.test_dataloader()))
    data = dm._datasets["test"]
    for key in ("signal", "target", "index"):
        one_by_one = torch.stack([torch.as_tensor(data[i][key]) for i in range(24)])
        assert torch.equal(batch[key], one_by_one), key
    # A plain DataLoader (default_collate, as `ecgx eval` builds one) gets the same batch.
    plain = next(iter(DataLoader(data, batch_size=24)))
    for key in ("signal", "target", "index"):
        assert torch.equal(batch[key], plain[key]), key


def test_records_of_varying_length_are_batched_one_by_one(tmp_path) -> None:
    import pandas as pd
    import torch

    from ecgx.data.cache import build_or_open
    from ecgx.data.datamodule import ECGDataset, collate
    from ecgx.formats.record import LEADS, Record
    from ecgx.transforms.signal import RandomClip, Standardize, TransformPipeline

    meta = pd.DataFrame({"record_id": [str(i) for i in range(6)], "labels": [{}] * 6})

    def read(row) -> Record:
        i = int(row["record_id"])
        signal = np.random.default_rng(i).uniform(1, 2, (12, 300 + 50 * i)).astype(np.float32)
        return Record(row["record_id"], signal, 100.0, LEADS)

    cache = build_or_open(tmp_path, {"x": 1}, meta, read, lambda x, fs: (x, fs))
    pipeline = TransformPipeline(normalize=Standardize(), online=[RandomClip(400)])
    pipeline.normalize.fit(cache.stream(range(6)))
    data = ECGDataset(cache, np.arange(6), np.eye(6, dtype=np.float32), pipeline, train=True)
    torch.manual_seed(0)
    batch = collate(data.__getitems__([5, 0, 3]))
    assert batch["signal"].shape == (3, 12, 400) and batch["index"].tolist() == [5, 0, 3]
    assert (batch["signal"] != 0).sum(dim=(1, 2)).tolist() == [12 * 400, 12 * 300, 12 * 400]

    # The uncropped test view (module.test_windows): each record whole, zeros after its end in
    # one batch, its length beside it; the extras of the model ride along.
    whole = ECGDataset(cache, np.arange(6), np.eye(6, dtype=np.float32), pipeline.uncropped(),
                       train=False, extras={"demographics": np.arange(12.0).reshape(6, 2)})  # fmt: skip
    batch = collate(whole.__getitems__([5, 0, 3]))
    assert batch["length"].tolist() == [550, 300, 450] and batch["signal"].shape == (3, 12, 550)
    for b, j in enumerate([5, 0, 3]):
        n = 300 + 50 * j
        own = pipeline.normalize(cache[j])
        np.testing.assert_allclose(batch["signal"][b, :, :n].numpy(), own, rtol=1e-6)
        assert (batch["signal"][b, :, n:] == 0).all()
    assert batch["demographics"].tolist() == [[10.0, 11.0], [0.0, 1.0], [6.0, 7.0]]


def test_fit_streams_the_train_split_with_the_previous_statistics(compose_train) -> None:
    from ecgx.transforms.signal import MinMax, Standardize

    dm = instantiate(compose_train().data)
    dm.setup("fit")
    rows = dm.indices["train"]
    for make in (lambda: Standardize(per_lead=False), lambda: Standardize(per_lead=True),
                 lambda: MinMax(per_lead=True)):  # fmt: skip
        before = make().fit(dm.cache[int(j)] for j in rows)  # record by record, as it was
        for chunk_bytes in (48_000 * 7, 1 << 25):
            after = make().fit(dm.cache.stream(rows, chunk_bytes=chunk_bytes))
            for key, value in before.state_dict().items():
                np.testing.assert_array_equal(after.state_dict()[key], value)
    np.testing.assert_array_equal(
        dm.transform.normalize.mean, Standardize().fit(dm.cache[int(j)] for j in rows).mean
    )
