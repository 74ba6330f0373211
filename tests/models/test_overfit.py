"""Every model can memorise 16 records of the synthetic set: the loss falls tenfold."""

from __future__ import annotations

import inspect
import time

import numpy as np
import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import get_class
from omegaconf import OmegaConf

from ecgx.data.ptbxl import PTBXL
from ecgx.models.catalog import build, model_names
from ecgx.paths import config_dir

LENGTH = 250  # 2.5 s at 100 Hz
SHORT = 100  # 1 s, for the models above HEAVY FLOPs per record at LENGTH (ResNet101, IMLE-Net)
FULL = 1000  # for models that cannot take 2.5 s (ECGNet's head is sized for long inputs)
HEAVY = 1e9
MAX_STEPS = 150


@pytest.fixture(scope="module")
def sixteen(synthetic_root) -> tuple[torch.Tensor, torch.Tensor]:
    reader = PTBXL(synthetic_root)
    meta = reader.metadata()
    y, _, keep = reader.labels(meta)
    rows = np.flatnonzero(keep)[:16]
    x = np.stack([reader.read(meta.iloc[i]).signal[:, :FULL] for i in rows])
    x = (x - x.mean()) / x.std()
    return torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y[rows])


@pytest.mark.slow
@pytest.mark.parametrize("name", model_names())
def test_model_overfits_sixteen_records(name: str, sixteen) -> None:
    x, y = sixteen
    cls = get_class(OmegaConf.load(config_dir() / "model" / f"{name}.yaml")._target_)
    # Models whose architecture is tied to the input length are built for this one.
    fits_length = "input_length" in inspect.signature(cls).parameters
    torch.manual_seed(0)
    try:
        model = build(
            name, num_classes=y.shape[1], **({"input_length": LENGTH} if fits_length else {})
        )
        x = x[..., 300 : 300 + LENGTH]
    except InstantiationException:
        model = build(
            name, num_classes=y.shape[1], **({"input_length": FULL} if fits_length else {})
        )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    model.train()
    first = last = None
    start = time.perf_counter()
    for _ in range(MAX_STEPS):
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        first = first if first is not None else loss.item()
        last = loss.item()
        if last <= first / 10:
            break
    assert last <= first / 10, f"{name}: loss {first:.3f} -> {last:.3f} in {MAX_STEPS} steps"
    assert time.perf_counter() - start < 600
