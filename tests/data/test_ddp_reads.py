"""DDP ranks read disjoint records: ecgx's loaders use the default samplers, which Lightning
replaces by a DistributedSampler under ``trainer=ddp`` / ``ddp_sim``; here two ranks are built
with Lightning's own replacement (the function its data connector calls) and their batches
compared."""

from __future__ import annotations

import numpy as np
from hydra.utils import instantiate
from lightning.pytorch.trainer.connectors.data_connector import _get_distributed_sampler
from lightning.pytorch.trainer.states import RunningStage
from lightning.pytorch.utilities.data import _update_dataloader
from torch.utils.data import RandomSampler, SequentialSampler


def test_two_ranks_read_disjoint_records_of_every_split(compose_train) -> None:
    cfg = compose_train("trainer=ddp_sim", "data.batch_size=16")
    # Lightning injects its sampler only when this is left on (its default).
    assert cfg.trainer.get("use_distributed_sampler", True) is True
    dm = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    loaders = {"train": (dm.train_dataloader(), RunningStage.TRAINING, True),
               "val": (dm.val_dataloader(), RunningStage.VALIDATING, False),
               "test": (dm.test_dataloader(), RunningStage.TESTING, False)}  # fmt: skip
    for name, (loader, stage, shuffle) in loaders.items():
        # What Lightning replaces (a user sampler would be wrapped instead).
        assert isinstance(loader.sampler, RandomSampler if shuffle else SequentialSampler)
        ranks = []
        for rank in (0, 1):
            sampler = _get_distributed_sampler(loader, shuffle, 0, stage, num_replicas=2,
                                               rank=rank)  # fmt: skip
            ranked = _update_dataloader(loader, sampler, stage)
            ranks.append(np.concatenate([b["index"].numpy() for b in ranked]))
        expected = dm.indices[name]
        # DistributedSampler evens the ranks out by repeating records: at most one here.
        pad = (-len(expected)) % 2
        overlap = np.intersect1d(ranks[0], ranks[1])
        assert len(overlap) <= pad, (name, overlap)
        assert sorted(set(ranks[0]) | set(ranks[1])) == sorted(expected.tolist()), name
        assert abs(len(ranks[0]) - len(ranks[1])) == 0 and len(ranks[0]) < len(expected)
