"""Two views of each ECG of a batch for contrastive pretraining (torch, on the batch's device).

- ``pairs``: where the two views come from. ``segments``: CLOCS's contrastive multi-segment
  coding (CMSC, Kiyasseh et al., ICML 2021), the two adjacent, non-overlapping halves of the
  record (same patient, same time). ``patient``: across records, as CLOCS takes views that
  share a patient id as positives: the record's first half and the second half of its partner,
  another record of the same patient that the DataModule puts in the batch
  (``data.pairs=patient``, :mod:`ecgx.data.pairs`); a patient with one record is paired with
  itself, which is CMSC's pair. ``none``: the whole record twice (augmentations alone).
- ``rotation_deg`` / ``scale``: 3KG (Gopal et al., ML4H 2021): each view goes to a
  vectorcardiogram by the inverse Dower transform of leads I, II, V1-V6 (Edenbrandt & Pahlm
  1988), is rotated about the three axes by angles drawn uniformly in ±``rotation_deg`` and
  scaled by a factor drawn uniformly in ``scale``, then projected back to the eight independent
  leads (the pseudo-inverse of the inverse Dower matrix) and III, aVR, aVL, aVF derived from I
  and II. Needs the 12 leads in canonical order. The ranges are configurable; they are the
  paper's description as read here, not checked against its code.
- ``noise_std``: Gaussian noise (in units of the standardised signal) on each view.

Augmentations are written here in torch because they apply to a batch on the GPU, per record
with its own random draw; no installed library does the VCG rotation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ecgx.errors import ConfigValueError

__all__ = ["INVERSE_DOWER", "PAIRS", "Views", "rotate_vcg"]

PAIRS = ("segments", "patient", "none")

# Rows X, Y, Z; columns V1, V2, V3, V4, V5, V6, I, II (Edenbrandt & Pahlm, J Electrocardiol 1988).
INVERSE_DOWER = torch.tensor(
    [
        [-0.172, -0.074, 0.122, 0.231, 0.239, 0.194, 0.156, -0.010],
        [0.057, -0.019, -0.106, -0.022, 0.041, 0.048, -0.227, 0.887],
        [-0.229, -0.310, -0.246, -0.063, 0.055, 0.108, 0.022, 0.102],
    ]
)
_INDEPENDENT = [6, 7, 8, 9, 10, 11, 0, 1]  # V1..V6, I, II in the canonical 12-lead order


def rotate_vcg(
    x: torch.Tensor, rotation_deg: float, scale: Sequence[float], generator=None
) -> torch.Tensor:
    """3KG on a batch (B, 12, T) in canonical lead order (see the module docstring)."""
    if x.shape[1] != 12:
        raise ConfigValueError(
            f"pretrain views: 3KG rotation needs the 12 leads in canonical order, got "
            f"{x.shape[1]} leads (set pretrain.objective.views.rotation_deg=0)"
        )
    b = x.shape[0]
    forward = INVERSE_DOWER.to(x.device, torch.float32)
    back = torch.linalg.pinv(forward)  # (8, 3)
    angles = (torch.rand(b, 3, generator=generator) * 2 - 1) * math.radians(rotation_deg)
    low, high = float(scale[0]), float(scale[1])
    factor = torch.rand(b, generator=generator) * (high - low) + low
    rotation = _rotation(angles).to(x.device) * factor.to(x.device)[:, None, None]
    vcg = torch.einsum("ce,bet->bct", forward, x[:, _INDEPENDENT].float())
    eight = torch.einsum("ec,bct->bet", back, torch.einsum("bij,bjt->bit", rotation, vcg))
    i, ii = eight[:, 6], eight[:, 7]
    limb = torch.stack([i, ii, ii - i, -(i + ii) / 2, i - ii / 2, ii - i / 2], dim=1)
    return torch.cat([limb, eight[:, :6]], dim=1).to(x.dtype)


def _rotation(angles: torch.Tensor) -> torch.Tensor:
    """Rz · Ry · Rx for each row of (B, 3) angles (x, y, z)."""
    cos, sin = angles.cos(), angles.sin()
    one, zero = torch.ones_like(cos[:, 0]), torch.zeros_like(cos[:, 0])

    def mat(*rows):
        return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)

    rx = mat((one, zero, zero), (zero, cos[:, 0], -sin[:, 0]), (zero, sin[:, 0], cos[:, 0]))
    ry = mat((cos[:, 1], zero, sin[:, 1]), (zero, one, zero), (-sin[:, 1], zero, cos[:, 1]))
    rz = mat((cos[:, 2], -sin[:, 2], zero), (sin[:, 2], cos[:, 2], zero), (zero, zero, one))
    return rz @ ry @ rx


class Views:
    """Makes the two views of a batch; see the module docstring for each option."""

    def __init__(
        self,
        pairs: str = "segments",
        rotation_deg: float = 45.0,
        scale: Sequence[float] = (1.0, 1.5),
        noise_std: float = 0.05,
    ) -> None:
        if len(scale) != 2 or not 0 < scale[0] <= scale[1]:
            raise ConfigValueError(f"pretrain views: scale must be [low, high] > 0, got {scale}")
        if pairs not in PAIRS:
            raise ConfigValueError(
                f"pretrain.objective.views.pairs={pairs!r} is not one of {', '.join(PAIRS)}"
            )
        self.pairs = pairs
        self.rotation_deg = float(rotation_deg)
        self.scale = (float(scale[0]), float(scale[1]))
        self.noise_std = float(noise_std)

    def __call__(
        self, x: torch.Tensor, partner: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The two views of a batch ``x`` (B, leads, T); ``partner`` (same shape): each
        record's partner (``pairs=patient``)."""
        half = x.shape[-1] // 2
        if self.pairs == "patient":
            if partner is None or partner.shape != x.shape:
                raise ConfigValueError(
                    "pretrain.objective.views.pairs=patient needs each record's partner of the "
                    "same shape in the batch: set data.pairs=patient (pretrain=contrastive does)"
                )
            a, b = x[..., :half], partner[..., half : 2 * half]
        elif self.pairs == "segments":
            a, b = x[..., :half], x[..., half : 2 * half]
        else:
            a, b = x, x
        return self.augment(a), self.augment(b)

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        if self.rotation_deg > 0 or self.scale != (1.0, 1.0):
            x = rotate_vcg(x, self.rotation_deg, self.scale)
        if self.noise_std > 0:
            x = x + self.noise_std * torch.randn_like(x)
        return x
