"""S4 (diagonal state-space, S4D) as a 1D ECG classifier, and as CPC's encoder + context network.

Configuration of the ICLR 2026 ECG foundation-model benchmark (AI4HealthUOL/ecg-fm-benchmarking,
``run.sh`` case ``s4`` and ``code/clinical_ts/models/s4_model.py``): inputs of 2.5 s at 100 Hz
(``--input-size 2.5 --fs-model 100``, 12 leads), a 1×1 convolution from the leads to
``d_model=512`` (``--s4-h 512``), ``n_layers=4`` S4 blocks (``--s4-layers 4``) of state size
``d_state=8`` (``--s4-n 8``), bidirectional, dropout 0.2, post-norm LayerNorm after each residual
sum, average pooling over time and one linear layer to the classes. Its supervised PTB-XL
superdiagnostic fine-tuning result is .932 macro AUROC (``Confidence_Interval.xlsx``).

ECG-CPC's network (``code/conf/config_cpc_ecg_s4_heedb.yaml``) is the same class with a strided
convolutional encoder in front (``encoder_widths=[512]*4``, kernels ``[3,1,1,1]``, strides
``[2,1,1,1]``) and a *causal* S4 context network (``bidirectional=false``, state 8, width 512):
conf/model/s4_cpc.yaml. :meth:`S4Classifier.encode` and :meth:`S4Classifier.contextualise` are the
two halves CPC pretraining needs (:mod:`ecgx.pretrain.objectives`).

What differs from the benchmark: the kernel is S4D (Gu et al., "On the Parameterization and
Initialization of Diagonal State Space Models", NeurIPS 2022: diagonal A with the S4D-Lin
initialisation, zero-order-hold discretisation) instead of the benchmark's DPLR S4 kernel. It is
written here in torch because no installed library provides it; :func:`s4d_kernel` is checked
against the direct recurrence it stands for (tests/models/test_s4.py). The convolution runs
through FFT, so a 1000-sample record costs O(L log L), not O(L·N) sequential steps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ecgx.errors import ConfigValueError
from ecgx.models.base import ECGModel

__all__ = ["S4Block", "S4Classifier", "S4DKernel", "fft_conv", "s4d_kernel"]


def s4d_kernel(
    log_dt: torch.Tensor,
    a_real_log: torch.Tensor,
    a_imag: torch.Tensor,
    c: torch.Tensor,
    length: int,
) -> torch.Tensor:
    """The convolution kernel ``K[h, l] = 2 Re(Σ_n C[h,n] B̄[h,n] Ā[h,n]^l)`` of a diagonal SSM.

    ``A = -exp(a_real_log) + i a_imag`` (stable: negative real part), zero-order hold with step
    ``dt = exp(log_dt)``: ``Ā = exp(dt A)``, ``B̄ = (Ā - 1) / A`` (B is folded into C, as S4D).
    Only half of the conjugate pairs are stored, hence the ``2 Re``.
    """
    dt = log_dt.exp()[:, None]  # (H, 1)
    a = torch.complex(-a_real_log.exp(), a_imag)  # (H, N)
    dta = a * dt
    b_bar = (dta.exp() - 1.0) / a
    steps = torch.arange(length, device=a.device, dtype=dta.real.dtype)
    powers = (dta[..., None] * steps).exp()  # (H, N, L): Ā^l
    return 2.0 * torch.einsum("hn,hnl->hl", c * b_bar, powers).real


def fft_conv(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Linear (not circular) convolution of ``u`` (B, H, L) with ``k`` (H, Lk) by FFT.

    ``Lk == L``: causal, ``y[l] = Σ_{j≤l} k[j] u[l-j]``. ``Lk == 2L`` (a bidirectional kernel,
    see :class:`S4DKernel`): the second half wraps to the future inputs.
    """
    length = u.shape[-1]
    n = 2 * length
    y = torch.fft.irfft(torch.fft.rfft(u.float(), n=n) * torch.fft.rfft(k.float(), n=n), n=n)
    return y[..., :length].to(u.dtype)


class S4DKernel(nn.Module):
    """Parameters of ``channels`` diagonal SSMs of state ``d_state`` (S4D-Lin initialisation:
    ``A_n = -1/2 + iπn``, ``log dt ~ U(log 1e-3, log 1e-1)``, ``C ~ N(0, 1/2)`` complex)."""

    def __init__(self, channels: int, d_state: int, dt_min: float = 1e-3, dt_max: float = 1e-1):
        super().__init__()
        if d_state < 2 or d_state % 2:
            raise ConfigValueError(f"model.d_state must be an even number ≥ 2, got {d_state}")
        half = d_state // 2  # conjugate pairs: half the state is stored
        log_dt = torch.rand(channels) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        self.log_dt = nn.Parameter(log_dt)
        self.a_real_log = nn.Parameter(torch.full((channels, half), math.log(0.5)))
        self.a_imag = nn.Parameter(math.pi * torch.arange(half).float().repeat(channels, 1))
        self.c = nn.Parameter(torch.view_as_real(torch.randn(channels, half, dtype=torch.cfloat)))

    def forward(self, length: int) -> torch.Tensor:
        return s4d_kernel(self.log_dt, self.a_real_log, self.a_imag,
                          torch.view_as_complex(self.c), length)  # fmt: skip


class S4Block(nn.Module):
    """One S4 layer as the benchmark's ``S4Model`` stacks it: SSM convolution + skip term
    ``D·u``, GELU, dropout, 1×1 convolution to 2H and GLU; the caller adds the residual and
    normalises (post-norm)."""

    def __init__(self, d_model: int, d_state: int, bidirectional: bool, dropout: float) -> None:
        super().__init__()
        self.bidirectional = bidirectional
        self.kernel = S4DKernel(d_model * (2 if bidirectional else 1), d_state)
        self.d = nn.Parameter(torch.randn(d_model))
        self.dropout = nn.Dropout1d(dropout) if dropout > 0 else nn.Identity()
        self.output = nn.Sequential(nn.Conv1d(d_model, 2 * d_model, 1), nn.GLU(dim=1))

    def ssm(self, u: torch.Tensor) -> torch.Tensor:
        """The linear state-space part, (B, H, L) -> (B, H, L)."""
        length = u.shape[-1]
        k = self.kernel(length)
        if self.bidirectional:
            # Forward kernel on [0, L), backward kernel reversed on (L, 2L): each output sees
            # its past through the first and its strict future through the second.
            forward, backward = k.chunk(2, dim=0)
            k = F.pad(forward, (0, length)) + F.pad(backward.flip(-1), (length, 0))
        return fft_conv(u, k) + u * self.d[:, None]

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.output(self.dropout(F.gelu(self.ssm(u))))


class S4Classifier(ECGModel):
    """S4 over the whole record: (B, leads, samples) -> logits (see the module docstring).

    Args:
        d_model: width of every S4 layer (H).
        d_state: state size of each SSM (N; even: conjugate pairs).
        n_layers: S4 blocks.
        bidirectional: each block sees the past and the future (False: causal, as CPC needs).
        dropout: after each block's GELU (Dropout1d, i.e. whole channels, as the benchmark).
        encoder_widths / encoder_kernels / encoder_strides: a strided convolutional encoder
            (ECG-CPC) in place of the benchmark's 1×1 convolution; empty: the 1×1 convolution.
    """

    target_layer = "sequence"
    input_shape = (12, 250)
    head_modules = ("head",)

    def __init__(
        self,
        in_channels: int = 12,
        num_classes: int = 5,
        d_model: int = 512,
        d_state: int = 8,
        n_layers: int = 4,
        bidirectional: bool = True,
        dropout: float = 0.2,
        encoder_widths: Sequence[int] = (),
        encoder_kernels: Sequence[int] = (),
        encoder_strides: Sequence[int] = (),
    ) -> None:
        super().__init__()
        if not len(encoder_widths) == len(encoder_kernels) == len(encoder_strides):
            raise ConfigValueError(
                "model.encoder_widths, encoder_kernels and encoder_strides need one entry per "
                f"layer, got {list(encoder_widths)}, {list(encoder_kernels)}, "
                f"{list(encoder_strides)}"
            )
        self.bidirectional = bool(bidirectional)
        self.encoder = _encoder(in_channels, d_model, encoder_widths, encoder_kernels,
                                encoder_strides)  # fmt: skip
        self.layers = nn.ModuleList(
            S4Block(d_model, d_state, self.bidirectional, dropout) for _ in range(n_layers)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(n_layers))
        self.head = nn.Linear(d_model, num_classes)
        self.feature_dim = d_model
        #: the context sequence (B, d_model, T'): Grad-CAM's layer, time on the last axis
        self.sequence = nn.Identity()

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Local features ``z`` (B, d_model, T'): the encoder alone (CPC's targets)."""
        return self.encoder(x)

    def contextualise(self, z: torch.Tensor) -> torch.Tensor:
        """The S4 stack over ``z`` (B, d_model, T') -> (B, d_model, T') (CPC's context ``c``)."""
        for block, norm in zip(self.layers, self.norms):
            z = norm((z + block(z)).transpose(1, 2)).transpose(1, 2)
        return z

    def forward_sequence(self, x: torch.Tensor) -> torch.Tensor:
        return self.sequence(self.contextualise(self.encode(x)))

    def forward_features(self, x: torch.Tensor, **extra: torch.Tensor) -> torch.Tensor:
        return self.forward_sequence(x).mean(dim=-1)  # the benchmark pools by averaging

    def forward_head(self, features: torch.Tensor, **extra: torch.Tensor) -> torch.Tensor:
        return self.head(features)


def _encoder(
    in_channels: int,
    d_model: int,
    widths: Sequence[int],
    kernels: Sequence[int],
    strides: Sequence[int],
) -> nn.Module:
    if not widths:
        return nn.Conv1d(in_channels, d_model, 1)
    layers: list[nn.Module] = []
    channels = in_channels
    for width, kernel, stride in zip(widths, kernels, strides):
        # Left padding only: a step's code never depends on later samples (CPC predicts them).
        layers += [nn.ConstantPad1d((int(kernel) - 1, 0), 0.0),
                   nn.Conv1d(channels, int(width), int(kernel), stride=int(stride)),
                   nn.BatchNorm1d(int(width)), nn.ReLU()]  # fmt: skip
        channels = int(width)
    if channels != d_model:
        layers.append(nn.Conv1d(channels, d_model, 1))
    return nn.Sequential(*layers)
