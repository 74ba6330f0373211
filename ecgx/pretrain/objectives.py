"""Self-supervised objectives: CPC, masked reconstruction (ST-MEM) and contrastive views.

Each objective is an ``nn.Module`` built around the classifier it pretrains (``objective(net)``)
and called as ``objective(net, x) -> (loss, {name: value})``. It holds only its own
pretraining-time parts (CPC's predictor, the mask token and decoder, the projection head), never
the net, so the checkpoint's ``net.*`` weights are exactly what the downstream classifier of the
same ``model=`` config loads (``init_from``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ecgx.errors import ConfigValueError
from ecgx.models.patch_transformer import sinusoid_table
from ecgx.pretrain.views import Views

__all__ = ["CPC", "Contrastive", "MaskedReconstruction", "info_nce", "nt_xent", "patch_mask"]


def info_nce(scores: torch.Tensor) -> torch.Tensor:
    """InfoNCE of square score matrices (..., M, M) whose positives lie on the diagonal:
    the mean over rows of ``-log softmax(row)[diagonal]``."""
    m = scores.shape[-1]
    target = torch.arange(m, device=scores.device).expand(scores.shape[:-1])
    return F.cross_entropy(scores.reshape(-1, m).float(), target.reshape(-1))


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's normalised-temperature cross-entropy over 2N views: view i's positive is its
    pair, its negatives the other 2N - 2 views of the batch."""
    z = F.normalize(torch.cat([a, b]).float(), dim=1)
    n = len(a)
    sim = z @ z.T / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(sim, target)


def _need(net: nn.Module, objective: str, *methods: str) -> None:
    missing = [m for m in methods if not hasattr(net, m)]
    if missing:
        raise ConfigValueError(
            f"pretrain={objective}: model {type(net).__name__} has no {', '.join(missing)} "
            f"(use {'model=s4_cpc' if objective == 'cpc' else 'model=patch_transformer'})"
        )


class CPC(nn.Module):
    """Contrastive predictive coding as ECG-CPC (Mehari & Strodthoff 2022; the benchmark's
    ``config_cpc_ecg_s4_heedb.yaml``): the encoder's codes ``z_t``, a causal context network's
    ``c_t``, one linear prediction per future step ``k = 1..steps`` (``multi_prediction``,
    no bias), InfoNCE of ``W_k c_t`` against ``z_{t+k}``. Where the negatives come from:

    - ``same_record`` (ECG-CPC's published config, ``negatives_from_same_seq_only=True``): the
      same record's codes at the other steps; scores (B, T-k, T-k).
    - ``same_step``: the codes at the same future step ``t+k`` of the other records in the
      batch; scores (T-k, B, B), O(T·B²·D) like ``same_record``. A cheap form of
      cross-record negatives, the per-time-step in-batch InfoNCE some CPC implementations use
      (e.g. sslsv's speaker-verification CPC loss); not ECG-CPC's published setting. A
      record-constant feature (the morphology) can tell the records apart here, which
      ``same_record`` never rewards.
    - ``all`` (``negatives_from_same_seq_only=False``): every step of every record in the
      batch; scores (B·(T-k))², far slower.
    """

    #: the values ``negatives`` accepts
    NEGATIVES = ("same_record", "same_step", "all")

    def __init__(self, net: nn.Module, steps: int = 14, negatives: str = "same_record"):
        super().__init__()
        _need(net, "cpc", "encode", "contextualise", "feature_dim")
        if getattr(net, "bidirectional", False):
            raise ConfigValueError(
                "pretrain=cpc needs a causal context network: model.bidirectional=false "
                "(model=s4_cpc); a bidirectional one sees the future it must predict"
            )
        if steps < 1:
            raise ConfigValueError(f"pretrain.objective.steps must be ≥ 1, got {steps}")
        self.steps = int(steps)
        if negatives not in self.NEGATIVES:
            raise ConfigValueError(
                f"pretrain.objective.negatives={negatives!r} is not one of "
                f"{', '.join(self.NEGATIVES)}"
            )
        self.negatives = negatives
        dim = int(net.feature_dim)
        self.predictor = nn.Linear(dim, dim * self.steps, bias=False)

    def forward(self, net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        z = net.encode(x)
        c = net.contextualise(z).transpose(1, 2)  # (B, T, D)
        z = z.transpose(1, 2)
        b, t, d = z.shape
        steps = min(self.steps, t - 1)
        if steps < 1:
            raise ConfigValueError(f"pretrain=cpc: the encoder leaves {t} step(s) of "
                                   f"{x.shape[-1]} samples; nothing to predict")  # fmt: skip
        # One weight block per step, applied to the context that has a target: slicing one
        # (B, T, steps, D) prediction instead costs a zero-filled gradient of it per step.
        weights = self.predictor.weight.view(self.steps, d, d)
        losses, correct, total = [], 0, 0
        for k in range(1, steps + 1):
            pred, target = F.linear(c[:, : t - k], weights[k - 1]), z[:, k:]
            if self.negatives == "same_record":
                scores = pred @ target.transpose(1, 2)  # (B, T-k, T-k)
            elif self.negatives == "same_step":
                scores = torch.einsum("btd,ctd->tbc", pred, target)  # (T-k, B, B)
            else:
                scores = pred.reshape(-1, d) @ target.reshape(-1, d).T
            losses.append(info_nce(scores))
            hits = scores.argmax(-1) == torch.arange(scores.shape[-1], device=scores.device)
            correct, total = correct + int(hits.sum()), total + hits.numel()
        return torch.stack(losses).mean(), {"accuracy": correct / max(total, 1)}


def patch_mask(
    batch: int,
    leads: int,
    patches: int,
    mask_ratio: float,
    lead_mask_ratio: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Which tokens to mask, (batch, leads, patches) bool: ``round(lead_mask_ratio · leads)``
    whole leads, then random patches of the others until exactly
    ``round(mask_ratio · leads · patches)`` tokens of each record are masked."""
    n_tokens = leads * patches
    n_masked = round(mask_ratio * n_tokens)
    n_leads = round(lead_mask_ratio * leads)
    if not 0 < n_masked < n_tokens or n_leads * patches > n_masked:
        raise ConfigValueError(
            f"pretrain: mask_ratio={mask_ratio} must mask some but not all of {n_tokens} tokens, "
            f"and at least lead_mask_ratio={lead_mask_ratio} of the leads"
        )
    # Scores: masked leads first (-1), then random; the n_masked lowest scores are masked.
    scores = torch.rand(batch, leads, patches, generator=generator)
    lead_order = torch.rand(batch, leads, generator=generator).argsort(dim=1)
    whole = torch.zeros(batch, leads, dtype=torch.bool)
    whole.scatter_(1, lead_order[:, :n_leads], True)
    scores[whole] = -1.0
    flat = scores.flatten(1)
    mask = torch.zeros_like(flat, dtype=torch.bool)
    mask.scatter_(1, flat.argsort(dim=1)[:, :n_masked], True)
    return mask.view(batch, leads, patches)


class MaskedReconstruction(nn.Module):
    """ST-MEM-style masked modelling: random whole leads and time patches are masked and their
    samples reconstructed; the loss is the mean squared error on the masked patches.

    Two arrangements, both from the literature:

    - ``encoder_sees="all"`` (SimMIM): the masked tokens' embeddings are replaced by a
      learned mask token and the encoder sees every position.
    - ``encoder_sees="visible"`` (default; MAE, He et al. 2022; ST-MEM, Na et al. 2024): the
      encoder sees only the visible tokens (with their positions); a transformer decoder of
      ``decoder_depth`` layers, width ``decoder_dim``, gets them back on the full grid with a
      mask token at each masked position and fills those in. Needs ``decoder_depth >= 1``.

    ``decoder_depth=0`` is one linear layer from the encoder's tokens to the patch samples;
    ``>= 1`` puts a small transformer in between, so the encoder's last layers need not
    specialise in samples (MAE's ablation: a deeper decoder lifts linear probing).
    ``norm_target=true`` reconstructs each patch standardised by its own mean and std (MAE's
    ``norm_pix_loss``). ST-MEM masks 75 % of the patches; it also has per-lead SEP tokens,
    which this patch transformer does not.
    """

    def __init__(
        self,
        net: nn.Module,
        mask_ratio: float = 0.75,
        lead_mask_ratio: float = 0.25,
        encoder_sees: str = "visible",
        decoder_depth: int = 2,
        decoder_dim: int = 64,
        decoder_heads: int = 4,
        norm_target: bool = False,
    ) -> None:
        super().__init__()
        _need(net, "masked", "embed", "transform", "patchify", "patch_size")
        if encoder_sees not in ("all", "visible"):
            raise ConfigValueError(
                f"pretrain.objective.encoder_sees={encoder_sees!r}: use 'all' (SimMIM: mask "
                "tokens through the encoder) or 'visible' (MAE: visible tokens only)"
            )
        if encoder_sees == "visible":
            _need(net, "masked", "positions", "encode")
        if encoder_sees == "visible" and decoder_depth < 1:
            raise ConfigValueError(
                f"pretrain.objective.encoder_sees=visible needs pretrain.objective.decoder_depth "
                f">= 1 (got {decoder_depth}): a linear decoder cannot fill in tokens the encoder "
                "never saw"
            )
        if decoder_depth and decoder_dim % decoder_heads:
            raise ConfigValueError(
                f"pretrain.objective.decoder_dim={decoder_dim} must be a multiple of "
                f"pretrain.objective.decoder_heads={decoder_heads}"
            )
        self.mask_ratio = float(mask_ratio)
        self.lead_mask_ratio = float(lead_mask_ratio)
        self.encoder_sees = encoder_sees
        self.norm_target = bool(norm_target)
        dim = int(net.feature_dim)
        self.decoder_depth = int(decoder_depth)
        width = int(decoder_dim) if self.decoder_depth else dim
        # the mask token lives where it is inserted: encoder width (SimMIM), decoder width (MAE)
        self.mask_token = nn.Parameter(torch.randn(dim if encoder_sees == "all" else width) * 0.02)
        if self.decoder_depth:
            self.decoder_embed = nn.Linear(dim, width)
            self.decoder_lead = nn.Embedding(int(net.in_channels), width)
            layer = nn.TransformerEncoderLayer(width, int(decoder_heads), 4 * width, 0.0,
                                               activation="gelu", batch_first=True,
                                               norm_first=True)  # fmt: skip
            self.decoder_blocks = nn.TransformerEncoder(layer, self.decoder_depth,
                                                        enable_nested_tensor=False)  # fmt: skip
            self.decoder_norm = nn.LayerNorm(width)
        self.decoder = nn.Linear(width, int(net.patch_size))

    def _decode(self, tokens: torch.Tensor, leads: int) -> torch.Tensor:
        """Decoder tokens on the full grid (B, leads·patches, width) -> patch samples."""
        if self.decoder_depth:
            patches = tokens.shape[1] // leads
            time = sinusoid_table(patches, tokens.shape[-1], tokens.device).repeat(leads, 1)
            lead = self.decoder_lead.weight[:leads].repeat_interleave(patches, dim=0)
            tokens = self.decoder_norm(self.decoder_blocks(tokens + time + lead))
        return self.decoder(tokens)

    def forward(self, net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        patches = net.patchify(x)  # (B, leads, P, S)
        b, leads, n_patches, _ = patches.shape
        mask = patch_mask(b, leads, n_patches, self.mask_ratio, self.lead_mask_ratio)
        mask = mask.to(x.device).flatten(1)
        tokens = net.embed(x)
        if self.encoder_sees == "all":
            tokens = torch.where(mask[..., None], self.mask_token.to(tokens.dtype), tokens)
            encoded = net.transform(tokens, leads)
            grid = self.decoder_embed(encoded) if self.decoder_depth else encoded
        else:
            tokens = tokens + net.positions(leads, n_patches, x.device)
            # every record has the same number of visible tokens (patch_mask masks exactly
            # n_masked each), so they gather into one dense batch; stable: grid order kept
            n_visible = int((~mask[0]).sum())
            visible = mask.to(torch.int8).argsort(dim=1, stable=True)[:, :n_visible]
            encoded = net.encode(
                tokens.gather(1, visible[..., None].expand(-1, -1, tokens.shape[-1]))
            )
            kept = self.decoder_embed(encoded)
            grid = self.mask_token.to(kept.dtype).expand(b, mask.shape[1], -1).clone()
            grid = grid.scatter(1, visible[..., None].expand(-1, -1, kept.shape[-1]), kept)
        recon = self._decode(grid, leads)
        target = patches.flatten(1, 2).float()
        if self.norm_target:
            target = (target - target.mean(-1, keepdim=True)) / (
                target.var(-1, keepdim=True) + 1e-6
            ).sqrt()
        error = (recon.float() - target).pow(2).mean(-1)
        return error[mask].mean(), {"masked_fraction": float(mask.float().mean())}


class Contrastive(nn.Module):
    """SimCLR on ECGs (Chen et al. 2020): two views of each record (:class:`Views`: CLOCS's
    adjacent segments or another record of the same patient, 3KG's vectorcardiographic rotation and scaling, noise), the net's pooled
    features through a two-layer projection head, NT-Xent at ``temperature``."""

    def __init__(
        self,
        net: nn.Module,
        views: Views | None = None,
        temperature: float = 0.1,
        projection_dim: int = 128,
    ) -> None:
        super().__init__()
        _need(net, "contrastive", "forward_features")
        dim = int(getattr(net, "feature_dim", 0)) or _feature_width(net)
        self.views = views or Views()
        self.temperature = float(temperature)
        self.projection = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(),
                                        nn.Linear(dim, projection_dim))  # fmt: skip

    #: the Pretrainer passes each record's partner (data.pairs=patient) to this objective
    takes_partner = True

    def forward(
        self, net: nn.Module, x: torch.Tensor, partner: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        a, b = self.views(x, partner)
        za = self.projection(net.forward_features(a).flatten(1))
        zb = self.projection(net.forward_features(b).flatten(1))
        loss = nt_xent(za, zb, self.temperature)
        with torch.no_grad():  # how often a view's nearest other view is its pair
            sim = F.normalize(za.float(), dim=1) @ F.normalize(zb.float(), dim=1).T
            accuracy = float(
                (sim.argmax(1) == torch.arange(len(sim), device=sim.device)).float().mean()
            )
        return loss, {"accuracy": accuracy}


def _feature_width(net: nn.Module) -> int:
    """Width of ``forward_features`` for models that do not declare ``feature_dim``."""
    leads, samples = getattr(net, "input_shape", (12, 1000))
    training = net.training
    net.eval()
    with torch.no_grad():
        width = net.forward_features(torch.zeros(2, leads, samples)).flatten(1).shape[1]
    net.train(training)
    return int(width)
