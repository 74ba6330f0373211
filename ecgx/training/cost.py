"""What a trained model costs: the ``cost/*`` params ``ecgx compare`` shows beside the metrics."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def model_cost(
    net: Any, datamodule: Any, batch_size: int = 32, budget_s: float = 2.0
) -> dict[str, Any]:
    """The ``cost/*`` params ``ecgx compare`` shows beside the metrics: trainable parameters,
    forward FLOPs of one record (torch's counter, 2 per multiply-add), the size of the
    state dict's tensors, and inference time per record on the net's device (median of 3
    no-grad forwards of a batch, after a warm-up).

    The batch is 32 records, fewer for a model too slow to time 32 within ``budget_s``: cost
    is reported, never worth slowing a training run down for. Failures are logged, not raised.
    """
    import statistics
    import time

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ecgx.models.base import count_parameters

    # The tensors' bytes, not a torch.save into memory: the container adds a few KB, and
    # serialising a 600 MB model only to weigh it cost seconds per run.
    state_bytes = sum(t.numel() * t.element_size() for t in net.state_dict().values()
                      if isinstance(t, torch.Tensor))  # fmt: skip
    cost: dict[str, Any] = {
        "cost/parameters": count_parameters(net),
        "cost/checkpoint_mb": round(state_bytes / 2**20, 4),
    }
    was_training = net.training
    try:
        record = datamodule.example_input()
        net.eval()
        with torch.no_grad():
            with FlopCounterMode(display=False) as counter:
                net(record)  # also the warm-up: a first call pays one-off setup costs
            start = time.perf_counter()
            net(record)
            one = time.perf_counter() - start
            n = max(1, min(batch_size, int(budget_s / (3 * max(one, 1e-6)))))
            inputs = record.expand(n, *record.shape[1:]).contiguous()
            times = []
            for _ in range(3):
                start = time.perf_counter()
                net(inputs)
                times.append(time.perf_counter() - start)
        cost["cost/flops_per_sample"] = int(counter.get_total_flops())
        cost["cost/inference_ms_per_record"] = round(1000 * statistics.median(times) / n, 4)
        cost["cost/inference_batch"] = n
        cost["cost/inference_device"] = str(record.device)
    except Exception as err:  # noqa: BLE001 - a cost we cannot measure is left out
        log.warning("model cost: FLOPs/timing not measured (%s)", err)
    finally:
        net.train(was_training)
    return cost
