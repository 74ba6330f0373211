"""The objectives' losses are the formulas they name; masking masks what it is told to."""

from __future__ import annotations

import functools
import math

import hydra
import pytest
import torch

from ecgx.errors import ConfigValueError
from ecgx.models.patch_transformer import PatchTransformer
from ecgx.models.s4 import S4Classifier
from ecgx.pretrain.module import Pretrainer
from ecgx.pretrain.objectives import (
    CPC,
    Contrastive,
    MaskedReconstruction,
    info_nce,
    nt_xent,
    patch_mask,
)
from ecgx.pretrain.views import Views, rotate_vcg


def test_info_nce_equals_a_hand_computation() -> None:
    scores = torch.tensor([[[2.0, 0.5, -1.0], [0.0, 1.0, 3.0], [1.0, 1.0, 1.0]]])
    by_hand = 0.0
    for i in range(3):
        row = [float(s) for s in scores[0, i]]
        by_hand -= math.log(math.exp(row[i]) / sum(math.exp(s) for s in row))
    assert float(info_nce(scores)) == pytest.approx(by_hand / 3, rel=1e-6)


def test_nt_xent_equals_a_hand_computation() -> None:
    torch.manual_seed(0)
    a, b = torch.randn(3, 4), torch.randn(3, 4)
    z = torch.nn.functional.normalize(torch.cat([a, b]), dim=1)
    by_hand = 0.0
    for i in range(6):
        pair = (i + 3) % 6
        others = [math.exp(float(z[i] @ z[j]) / 0.5) for j in range(6) if j != i]
        by_hand -= math.log(math.exp(float(z[i] @ z[pair]) / 0.5) / sum(others))
    assert float(nt_xent(a, b, 0.5)) == pytest.approx(by_hand / 6, rel=1e-5)


def test_cpc_scores_each_prediction_against_the_same_records_other_steps() -> None:
    """One future step, codes made so that the prediction equals the true next code: the
    loss is InfoNCE of those scores, computed here without the objective."""
    torch.manual_seed(0)
    net = S4Classifier(12, 2, d_model=8, d_state=4, n_layers=1, bidirectional=False, dropout=0)
    cpc = CPC(net, steps=1)
    x = torch.randn(2, 12, 16)
    loss, extra = cpc(net, x)
    z = net.encode(x).transpose(1, 2)
    c = net.contextualise(net.encode(x)).transpose(1, 2)
    pred = cpc.predictor(c)[:, :-1]
    scores = pred @ z[:, 1:].transpose(1, 2)
    assert torch.allclose(loss, info_nce(scores))
    assert 0.0 <= extra["accuracy"] <= 1.0


def test_cpc_same_step_negatives_are_the_other_records_at_that_step() -> None:
    """negatives=same_step: each prediction W_k c_t of record b is scored against z_{t+k} of
    every record in the batch, its own the positive; loss and accuracy by hand."""
    torch.manual_seed(0)
    net = S4Classifier(12, 2, d_model=8, d_state=4, n_layers=1, bidirectional=False, dropout=0)
    cpc = CPC(net, steps=2, negatives="same_step")
    x = torch.randn(3, 12, 16)
    loss, extra = cpc(net, x)
    with torch.no_grad():
        z = net.encode(x).transpose(1, 2)
        c = net.contextualise(net.encode(x)).transpose(1, 2)
    n_rec, n_steps, d = z.shape
    weights = cpc.predictor.weight.detach().view(2, d, d)
    step_losses, hits, total = [], 0, 0
    for k in (1, 2):
        terms = []
        for t in range(n_steps - k):
            for b in range(n_rec):
                pred = weights[k - 1] @ c[b, t]
                row = [float(pred @ z[other, t + k]) for other in range(n_rec)]
                terms.append(-math.log(math.exp(row[b]) / sum(math.exp(r) for r in row)))
                hits += max(range(n_rec), key=row.__getitem__) == b
                total += 1
        step_losses.append(sum(terms) / len(terms))
    assert float(loss.detach()) == pytest.approx(sum(step_losses) / 2, rel=1e-5)
    assert extra["accuracy"] == pytest.approx(hits / total)


def test_cpc_refuses_an_unknown_negatives_mode() -> None:
    net = S4Classifier(12, 2, d_model=8, d_state=4, n_layers=1, bidirectional=False)
    with pytest.raises(ConfigValueError, match="negatives='batch'.*same_step"):
        CPC(net, negatives="batch")


def test_cpc_negatives_mode_is_read_from_the_pretrain_config(compose_train) -> None:
    net = S4Classifier(12, 2, d_model=8, d_state=4, n_layers=1, bidirectional=False)
    default = hydra.utils.instantiate(compose_train("pretrain=cpc").pretrain.objective)(net)
    chosen = compose_train("pretrain=cpc", "pretrain.objective.negatives=same_step")
    assert default.negatives == "same_record"
    assert hydra.utils.instantiate(chosen.pretrain.objective)(net).negatives == "same_step"


def test_cpc_refuses_a_bidirectional_context() -> None:
    with pytest.raises(ConfigValueError, match="bidirectional=false"):
        CPC(S4Classifier(12, 2, d_model=8, d_state=4, n_layers=1, bidirectional=True))


@pytest.mark.parametrize(("ratio", "lead_ratio"), [(0.75, 0.25), (0.5, 0.0), (0.3, 1 / 12)])
def test_masking_covers_the_configured_fraction(ratio: float, lead_ratio: float) -> None:
    mask = patch_mask(8, 12, 20, ratio, lead_ratio, torch.Generator().manual_seed(0))
    assert (mask.flatten(1).sum(1) == round(ratio * 240)).all()
    whole_leads = mask.all(dim=2).sum(1)
    assert (whole_leads >= round(lead_ratio * 12)).all()
    assert not torch.equal(mask[0], mask[1])  # drawn per record


def test_masking_more_leads_than_the_ratio_is_a_config_error() -> None:
    with pytest.raises(ConfigValueError, match="lead_mask_ratio"):
        patch_mask(1, 12, 10, 0.25, 0.5)


def test_masked_reconstruction_loss_is_the_error_on_masked_patches_only() -> None:
    torch.manual_seed(0)
    net = PatchTransformer(12, 2, patch_size=10, dim=16, depth=1, heads=2).eval()
    objective = MaskedReconstruction(net, mask_ratio=0.5, lead_mask_ratio=0.0)
    x = torch.randn(2, 12, 40)
    loss, extra = objective(net, x)
    assert extra["masked_fraction"] == 0.5
    # A decoder that reproduces the visible patches exactly still pays for the masked ones:
    # with zero weights and zero bias the loss is the masked patches' mean square.
    torch.nn.init.zeros_(objective.decoder.weight)
    torch.nn.init.zeros_(objective.decoder.bias)
    torch.manual_seed(1)
    loss, _ = objective(net, x)
    torch.manual_seed(1)
    mask = patch_mask(2, 12, 4, 0.5, 0.0).flatten(1)
    expected = net.patchify(x).flatten(1, 2).pow(2).mean(-1)[mask].mean()
    assert torch.allclose(loss, expected)


def test_mae_encoder_sees_only_the_visible_tokens_and_the_decoder_fills_the_grid() -> None:
    torch.manual_seed(0)
    net = PatchTransformer(12, 2, patch_size=10, dim=16, depth=1, heads=2).eval()
    objective = MaskedReconstruction(net, mask_ratio=0.75, lead_mask_ratio=0.25,
                                     encoder_sees="visible", decoder_depth=1, decoder_dim=8,
                                     decoder_heads=2).eval()  # fmt: skip
    x = torch.randn(2, 12, 40)
    seen: list[torch.Tensor] = []
    net.encoder.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    torch.manual_seed(1)
    loss, extra = objective(net, x)
    torch.manual_seed(1)
    mask = patch_mask(2, 12, 4, 0.75, 0.25).flatten(1)
    grid = net.embed(x) + net.positions(12, 4, x.device)
    assert extra["masked_fraction"] == 0.75
    # the encoder got exactly each record's visible tokens, in grid order, with their positions
    assert torch.allclose(seen[0], grid[~mask].view(2, 12, 16))
    # and the loss is still the error on the masked patches only
    torch.nn.init.zeros_(objective.decoder.weight)
    torch.nn.init.zeros_(objective.decoder.bias)
    torch.manual_seed(1)
    loss, _ = objective(net, x)
    expected = net.patchify(x).flatten(1, 2).pow(2).mean(-1)[mask].mean()
    assert torch.allclose(loss, expected)


def test_norm_target_reconstructs_each_patch_standardised() -> None:
    net = PatchTransformer(12, 2, patch_size=10, dim=16, depth=1, heads=2).eval()
    objective = MaskedReconstruction(net, mask_ratio=0.5, lead_mask_ratio=0.0, norm_target=True)
    torch.nn.init.zeros_(objective.decoder.weight)
    torch.nn.init.zeros_(objective.decoder.bias)
    x = 5.0 + 3.0 * torch.randn(2, 12, 40)  # offset and scale the raw target would carry
    torch.manual_seed(1)
    loss, _ = objective(net, x)
    torch.manual_seed(1)
    mask = patch_mask(2, 12, 4, 0.5, 0.0).flatten(1)
    p = net.patchify(x).flatten(1, 2)
    z = (p - p.mean(-1, keepdim=True)) / (p.var(-1, keepdim=True) + 1e-6).sqrt()
    assert torch.allclose(loss, z.pow(2).mean(-1)[mask].mean())
    assert loss < 1.0  # a zero prediction of a standardised patch, not of its 5.0 offset


def test_masked_options_come_from_the_config_and_bad_ones_are_named(compose_train) -> None:
    net = PatchTransformer(12, 2, patch_size=50, dim=16, depth=1, heads=2)
    cfg = compose_train("pretrain=masked", "pretrain.objective.encoder_sees=visible",
                        "pretrain.objective.decoder_depth=2",
                        "pretrain.objective.norm_target=true")  # fmt: skip
    objective = hydra.utils.instantiate(cfg.pretrain.objective)(net)
    assert (objective.encoder_sees, len(objective.decoder_blocks.layers)) == ("visible", 2)
    assert objective.norm_target
    with pytest.raises(ConfigValueError, match="decoder_depth >= 1"):
        MaskedReconstruction(net, encoder_sees="visible", decoder_depth=0)
    with pytest.raises(ConfigValueError, match="encoder_sees='some'"):
        MaskedReconstruction(net, encoder_sees="some")


def test_patch_transformer_names_a_length_it_cannot_cut() -> None:
    net = PatchTransformer(12, 2, patch_size=50, dim=16, depth=1, heads=2)
    with pytest.raises(ConfigValueError, match="patch_size=50"):
        net(torch.randn(1, 12, 120))


def test_3kg_views_keep_the_limb_lead_relations_and_rotate() -> None:
    torch.manual_seed(0)
    x = torch.randn(4, 12, 50)
    out = rotate_vcg(x, 45.0, (1.0, 1.5))
    i, ii, iii, avr, avl, avf = out[:, :6].unbind(1)
    assert torch.allclose(iii, ii - i, atol=1e-5)
    assert torch.allclose(avr, -(i + ii) / 2, atol=1e-5)
    assert torch.allclose(avl + avf + avr, torch.zeros_like(avr), atol=1e-5)
    same = rotate_vcg(x, 0.0, (1.0, 1.0))
    again = rotate_vcg(same, 0.0, (1.0, 1.0))
    assert torch.allclose(same, again, atol=1e-4)  # a projection: idempotent without rotation
    assert not torch.allclose(out, same, atol=1e-3)


def test_contrastive_views_are_adjacent_halves_or_the_partners_second_half() -> None:
    plain = {"rotation_deg": 0.0, "scale": (1.0, 1.0), "noise_std": 0.0}
    x = torch.arange(12 * 10, dtype=torch.float32).reshape(1, 12, 10)
    partner = -x
    a, b = Views(pairs="segments", **plain)(x, partner)
    assert torch.equal(a, x[..., :5]) and torch.equal(b, x[..., 5:])
    a, b = Views(pairs="patient", **plain)(x, partner)
    assert torch.equal(a, x[..., :5]) and torch.equal(b, partner[..., 5:])
    with pytest.raises(ConfigValueError, match="set data.pairs=patient"):
        Views(pairs="patient", **plain)(x)
    with pytest.raises(ConfigValueError, match="views.pairs='record'"):
        Views(pairs="record")


def test_only_the_contrastive_objective_takes_a_partner() -> None:
    net = S4Classifier(12, 2, d_model=8, d_state=4, n_layers=1, bidirectional=False,
                       encoder_widths=[8], encoder_kernels=[1], encoder_strides=[1])  # fmt: skip
    batch = {"signal": torch.randn(2, 12, 40), "partner": torch.randn(2, 12, 40)}
    cpc = Pretrainer(net, functools.partial(CPC, steps=2), torch.optim.Adam)
    with pytest.raises(ConfigValueError, match="CPC uses no second record"):
        cpc.training_step(batch, 0)
    views = Views(pairs="patient", rotation_deg=0.0, scale=(1.0, 1.0), noise_std=0.0)
    contrastive = Contrastive(net, views)
    with torch.no_grad():
        loss, _ = contrastive(net, batch["signal"], batch["partner"])
        same, _ = contrastive(net, batch["signal"], batch["signal"])
    assert not torch.isclose(loss, same)  # the partner, not the record, made the second view


def test_contrastive_loss_falls_when_views_match() -> None:
    torch.manual_seed(0)
    net = S4Classifier(12, 2, d_model=8, d_state=4, n_layers=1)
    objective = Contrastive(net, Views(rotation_deg=0.0, scale=(1.0, 1.0), noise_std=0.0))
    loss, _ = objective(net, torch.randn(6, 12, 40))
    assert torch.isfinite(loss) and loss > 0
    with pytest.raises(ConfigValueError, match="12 leads"):
        Views()(torch.randn(2, 3, 40))
