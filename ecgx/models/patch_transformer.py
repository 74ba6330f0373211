"""A small transformer encoder over per-lead time patches (ST-MEM's tokenisation).

ST-MEM (Na et al., "Guiding Masked Representation Learning to Capture Spatio-Temporal
Relationship of Electrocardiogram", ICLR 2024) cuts each lead into non-overlapping patches of
75 samples (9 s at 250 Hz: 30 patches a lead), embeds every patch linearly, adds a positional
embedding (time) and a lead embedding (which lead), and runs a ViT encoder over all
leads × patches tokens; its masked pretraining reconstructs masked patches
(:class:`ecgx.pretrain.objectives.MaskedReconstruction`). ST-MEM's encoder is ViT-B (width 768,
12 layers, 12 heads); the defaults here are a small one (width 128, 4 layers, 4 heads) that
trains on a CPU. What differs: sinusoidal (fixed) time positions so any record length works,
no per-lead SEP tokens, mean pooling of all tokens as the record's features.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ecgx.errors import ConfigValueError
from ecgx.models.base import ECGModel

__all__ = ["PatchTransformer", "sinusoid_table"]


class PatchTransformer(ECGModel):
    """(B, leads, samples) -> logits through leads × patches tokens.

    Args:
        patch_size: samples per patch (ST-MEM: 75 at 250 Hz); ``samples`` must be a multiple.
        dim / depth / heads / mlp_ratio / dropout: the encoder (pre-norm transformer layers).
    """

    target_layer = "sequence"
    input_shape = (12, 1000)
    head_modules = ("head",)

    def __init__(
        self,
        in_channels: int = 12,
        num_classes: int = 5,
        patch_size: int = 50,
        dim: int = 128,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: float = 4.0,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ConfigValueError(f"model.dim={dim} must be a multiple of model.heads={heads}")
        self.patch_size = int(patch_size)
        self.in_channels = int(in_channels)
        self.dim = int(dim)
        self.patch_embed = nn.Linear(self.patch_size, dim)
        self.lead_embed = nn.Embedding(in_channels, dim)
        layer = nn.TransformerEncoderLayer(dim, heads, int(dim * mlp_ratio), dropout,
                                           activation="gelu", batch_first=True,
                                           norm_first=True)  # fmt: skip
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        self.feature_dim = dim
        #: the token sequence as (B, dim, leads·patches): Grad-CAM's layer
        self.sequence = nn.Identity()

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, leads, samples) -> (B, leads, patches, patch_size)."""
        if x.shape[-1] % self.patch_size:
            raise ConfigValueError(
                f"PatchTransformer: {x.shape[-1]} samples are not a multiple of "
                f"model.patch_size={self.patch_size} (crop the records, e.g. transform "
                f"RandomCrop, or change patch_size)"
            )
        b, leads, samples = x.shape
        return x.reshape(b, leads, samples // self.patch_size, self.patch_size)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Token embeddings without positions (B, leads·patches, dim): a masked objective
        replaces some of them before :meth:`transform`."""
        patches = self.patchify(x)
        return self.patch_embed(patches).flatten(1, 2)

    def positions(self, leads: int, patches: int, device: torch.device) -> torch.Tensor:
        """Time and lead embeddings of the lead-major token grid: (leads·patches, dim)."""
        time = sinusoid_table(patches, self.dim, device).repeat(leads, 1)
        return time + self.lead_embed.weight[:leads].repeat_interleave(patches, dim=0)

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Run the encoder over tokens that already carry their positions: a masked objective
        may pass a subset of the grid (MAE: the visible tokens only)."""
        return self.norm(self.encoder(tokens))

    def transform(self, tokens: torch.Tensor, leads: int) -> torch.Tensor:
        """Add time and lead positions and run the encoder: (B, leads·patches, dim)."""
        patches = tokens.shape[1] // leads
        return self.encode(tokens + self.positions(leads, patches, tokens.device))

    def forward_sequence(self, x: torch.Tensor) -> torch.Tensor:
        return self.sequence(self.transform(self.embed(x), x.shape[1]).transpose(1, 2))

    def forward_features(self, x: torch.Tensor, **extra: torch.Tensor) -> torch.Tensor:
        return self.forward_sequence(x).mean(dim=-1)

    def forward_head(self, features: torch.Tensor, **extra: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def layer_map_to_input(self, layer_map: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        # Tokens are lead-major (lead 0's patches, then lead 1's): each lead gets its own map.
        b, leads, samples = x.shape
        per_lead = layer_map.reshape(b, leads, -1)
        return per_lead.repeat_interleave(self.patch_size, dim=-1)[..., :samples]


def sinusoid_table(length: int, dim: int, device: torch.device) -> torch.Tensor:
    """Fixed sine/cosine positions (Vaswani et al. 2017): (length, dim)."""
    position = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim, device=device)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq[: dim // 2])
    return table
