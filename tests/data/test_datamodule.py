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

    from ecgx.data.record import RecordError

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
