"""``torch.compile`` on CPU gives the eager numbers, forward and backward (inductor, C++)."""

from __future__ import annotations

import pytest
import torch

from ecgx.models.catalog import build

# One of each kind of layer the zoo has: residual convolutions, recurrent attention, a small
# LeNet; compiling every model would cost minutes each on 2 cores.
COMPILED = [("compact_resnet", 500), ("imle_net", 1000), ("xai_lenet", 250)]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "samples"), COMPILED)
def test_compiled_model_matches_eager(name: str, samples: int) -> None:
    torch._dynamo.reset()
    torch.manual_seed(0)
    # eval(): inductor draws dropout masks from its own generator, so train-mode outputs differ
    # by design; gradients still flow through every layer.
    model = build(name, num_classes=3).eval()
    x = torch.randn(2, model.input_shape[0], samples)
    compiled = torch.compile(model)
    eager_out = model(x)
    eager_out.square().sum().backward()
    eager_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    out = compiled(x)
    out.square().sum().backward()
    torch.testing.assert_close(out, eager_out, rtol=1e-4, atol=1e-5)
    for p, g in zip(model.parameters(), eager_grads, strict=True):
        torch.testing.assert_close(p.grad, g, rtol=1e-3, atol=1e-5)
