"""data.pairs=patient: each record's partner is another record of the same patient."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from ecgx.data.datamodule import ECGDataModule
from ecgx.data.pairs import PatientPartners
from ecgx.errors import ConfigValueError
from ecgx.training.preflight import check_pairs


def test_partners_are_other_records_of_the_same_patient_or_the_record_itself() -> None:
    ids = np.array(["7", 3.0, 7.0, "3", "7", np.nan, "", "9"], dtype=object)
    rows = np.arange(len(ids)) * 10 + 1
    partners = PatientPartners(rows, ids)
    group = {1: {21, 41}, 21: {1, 41}, 41: {1, 21}, 11: {31}, 31: {11}}
    rng = np.random.default_rng(0)
    seen = {row: set() for row in rows}
    for _ in range(50):
        for position, partner in enumerate(partners.draw(np.arange(len(ids)), rng)):
            seen[rows[position]].add(int(partner))
    for row in rows:
        # Several records: every other record of the patient, never itself. One record (or no
        # id: NaN, empty): itself, not another id-less record.
        assert seen[row] == group.get(int(row), {int(row)})
    assert partners.n_with_partner == 5
    fixed = partners.draw(np.arange(len(ids)), None)
    np.testing.assert_array_equal(fixed, partners.draw(np.arange(len(ids)), None))
    assert all(int(p) in group.get(int(r), {int(r)}) for r, p in zip(rows, fixed))


def test_batches_carry_a_partner_of_the_same_patient(compose_train) -> None:
    cfg = compose_train("pretrain=contrastive", "pretrain.objective.views.pairs=patient")
    assert cfg.data.pairs == "patient"  # follows the views' setting
    dm = instantiate(cfg.data)
    dm.setup("fit")
    meta = dm.cache.meta
    train = set(dm.indices["train"].tolist())
    batch = next(iter(dm.train_dataloader()))
    own, other = batch["index"].numpy(), batch["partner_index"].numpy()
    assert batch["partner"].shape == batch["signal"].shape
    patient = meta["patient_id"].astype(str).to_numpy()
    np.testing.assert_array_equal(patient[own], patient[other])
    assert set(other.tolist()) <= train  # partners come from the same split
    several = meta.iloc[sorted(train)].groupby("patient_id").size()
    several = set(several[several > 1].index.astype(str))
    paired = np.isin(patient[own], list(several))
    assert paired.any() and (other[paired] != own[paired]).all()
    assert (other[~paired] == own[~paired]).all()
    # The partner's signal is that record, normalised as the record itself is.
    expected = dm.transform.normalize(dm.cache.gather(other))
    torch.testing.assert_close(batch["partner"], torch.from_numpy(expected))
    single = dm.train_dataloader().dataset[0]
    assert patient[single["partner_index"]] == patient[single["index"]]
    with pytest.raises(ConfigValueError, match="data.pairs='cmlp' is not one of"):
        ECGDataModule(dataset=None, split=None, pairs="cmlp")


def test_patient_pairs_outside_contrastive_pretraining_are_refused(compose_train) -> None:
    check_pairs(compose_train("pretrain=contrastive", "pretrain.objective.views.pairs=patient"))
    for overrides, objective in ((["data.pairs=patient"], "none"),
                                 (["pretrain=cpc", "data.pairs=patient"], "objectives.CPC")):  # fmt: skip
        with pytest.raises(ConfigValueError, match=f"this run's objective is .*{objective}"):
            check_pairs(compose_train(*overrides))
