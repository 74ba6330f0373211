"""The S4D kernel is the state-space recurrence it stands for, computed by FFT convolution."""

from __future__ import annotations

import torch

from ecgx.models.s4 import S4Block, S4Classifier


def _recurrence(block: S4Block, u: torch.Tensor, which: int = 0) -> torch.Tensor:
    """y = 2 Re(C x_l) with x_l = Ā x_{l-1} + B̄ u_l, stepped sample by sample (complex)."""
    kern = block.kernel
    h = u.shape[1]
    rows = slice(which * h, (which + 1) * h)
    dt = kern.log_dt[rows].exp()[:, None].double()
    a = torch.complex(-kern.a_real_log[rows].exp().double(), kern.a_imag[rows].double())
    c = torch.view_as_complex(kern.c[rows].double().contiguous())
    a_bar = (dt * a).exp()
    b_bar = (a_bar - 1) / a
    state = torch.zeros(u.shape[0], h, a.shape[1], dtype=torch.cdouble)
    out = []
    for step in range(u.shape[-1]):
        state = a_bar * state + b_bar * u[:, :, step, None].double()
        out.append(2 * (c * state).sum(-1).real)
    return torch.stack(out, dim=-1)


def test_causal_kernel_equals_the_direct_recurrence() -> None:
    torch.manual_seed(0)
    block = S4Block(d_model=3, d_state=8, bidirectional=False, dropout=0.0)
    u = torch.randn(2, 3, 64)
    expected = _recurrence(block, u) + u.double() * block.d[:, None].double()
    with torch.no_grad():
        assert torch.allclose(block.ssm(u).double(), expected, atol=1e-4)


def test_bidirectional_kernel_adds_the_reversed_recurrence_over_the_future() -> None:
    torch.manual_seed(1)
    block = S4Block(d_model=2, d_state=4, bidirectional=True, dropout=0.0)
    u = torch.randn(1, 2, 40)
    past = _recurrence(block, u, 0)
    # The backward SSM runs over the reversed record delayed by one sample: it sees strictly
    # later samples only.
    shifted = _recurrence(block, torch.nn.functional.pad(u.flip(-1)[..., :-1], (1, 0)), 1)
    expected = past + shifted.flip(-1) + u.double() * block.d[:, None].double()
    with torch.no_grad():
        assert torch.allclose(block.ssm(u).double(), expected, atol=1e-4)


def test_causal_s4_with_an_encoder_never_sees_the_future() -> None:
    """CPC's context at step t must not depend on samples after t (left-padded encoder)."""
    torch.manual_seed(0)
    net = S4Classifier(12, 3, d_model=16, d_state=4, n_layers=2, bidirectional=False,
                       encoder_widths=[16, 16], encoder_kernels=[3, 1],
                       encoder_strides=[2, 1]).eval()  # fmt: skip
    x = torch.randn(1, 12, 100)
    changed = x.clone()
    changed[..., 60:] += 5.0
    with torch.no_grad():
        a, b = net.forward_sequence(x), net.forward_sequence(changed)
    assert a.shape == (1, 16, 50)
    assert torch.allclose(a[..., :30], b[..., :30], atol=1e-5)  # steps before sample 60
    assert not torch.allclose(a[..., 30:], b[..., 30:])
