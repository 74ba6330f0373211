"""The vision seed's 2D backbones: torchvision's sizes and names, chart inputs, weight loading."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from torch import nn

from ecgx.models.base import count_parameters
from ecgx.models.catalog import build
from ecgx.models.image import ImageModel, StochasticDepth, load_torchvision_weights
from ecgx.models.resnet2d import ResNet18

# conf/model name -> (torchvision parameters at 1000 classes, in-features of the last Linear
# (spec 2.4), state-dict entries and a fingerprint of torchvision's "key:shape" lines at 1000
# classes, computed once from torchvision 0.29's own models, which the tests do not import).
TORCHVISION = {
    "resnet18_2d": (11_689_512, 512, 122, "3e58b0798c806a0c"),
    "resnet50_2d": (25_557_032, 2048, 320, "781bb16f43b8f96f"),
    "convnext_tiny": (28_589_128, 768, 182, "5c1934c7e7f217f7"),
    "convnext_base": (88_591_464, 1024, 344, "e5bd5a734f947aba"),
    "efficientnet_b0": (5_288_548, 1280, 360, "e1f159b97ca4b202"),
    "efficientnet_b3": (12_233_232, 1536, 574, "ddbc48d0e5f9ddc6"),
    "mobilenetv3_small": (2_542_856, 1024, 244, "45e84af7b7bba021"),
    "mobilenetv3_large": (5_483_032, 1280, 312, "9cb349b03a916ada"),
}
NAMES = sorted(TORCHVISION)
# One of each family for the behavioural tests: the larger sibling differs only in widths and
# depths (checked above by names and shapes), and test_catalog runs every model's gradients.
FAMILIES = ["convnext_tiny", "efficientnet_b0", "mobilenetv3_small", "resnet18_2d"]
SMALL = (64, 64)


def small(name: str, **overrides: object) -> ImageModel:
    torch.manual_seed(0)
    model = build(name, image_size=list(SMALL), **overrides)
    assert isinstance(model, ImageModel)
    return model


def fingerprint(state_dict: dict[str, torch.Tensor]) -> str:
    text = "\n".join(f"{key}:{tuple(value.shape)}" for key, value in state_dict.items())
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@pytest.mark.parametrize("name", NAMES)
def test_sizes_and_state_dict_names_are_torchvisions(name: str) -> None:
    total, features, entries, digest = TORCHVISION[name]
    model = build(name, num_classes=1000)
    assert count_parameters(model) == total
    assert model.num_features == features
    state = model.state_dict()
    assert len(state) == entries
    assert fingerprint(state) == digest
    # At the seed's 4 classes only the last Linear shrinks.
    seed = build(name)
    assert seed.num_classes == seed.seed_num_classes == 4
    assert count_parameters(seed) == total - (features + 1) * (1000 - 4)


def test_torchvision_hyper_parameters() -> None:
    def rates(model: nn.Module) -> list[float]:
        return [m.p for m in model.modules() if isinstance(m, StochasticDepth)]

    def norms(model: nn.Module) -> set[tuple[float, float | None]]:
        return {(m.eps, m.momentum) for m in model.modules() if isinstance(m, nn.BatchNorm2d)}

    tiny, base = build("convnext_tiny"), build("convnext_base")
    assert rates(tiny)[0] == 0.0 and rates(tiny)[-1] == pytest.approx(0.1)
    assert rates(base)[-1] == pytest.approx(0.5)
    assert torch.all(tiny.features[1][0].layer_scale.detach() == torch.tensor(1e-6))
    b0, b3 = build("efficientnet_b0"), build("efficientnet_b3")
    assert rates(b0)[-1] == pytest.approx(0.2 * 15 / 16)
    assert b0.classifier[0].p == 0.2 and b3.classifier[0].p == 0.3
    assert b3.image_size == (300, 300) and b3.input_shape == (3, 300 * 300)
    # torchvision keeps PyTorch's BatchNorm defaults for B0-B4, eps 1e-3 only for B5-B7.
    assert norms(b0) == norms(b3) == {(1e-5, 0.1)}
    for name in ("mobilenetv3_small", "mobilenetv3_large"):
        model = build(name)
        assert norms(model) == {(1e-3, 0.01)}
        assert model.classifier[2].p == 0.2
        kinds = {type(m) for m in model.modules()}
        assert {nn.Hardswish, nn.Hardsigmoid, nn.ReLU} <= kinds


@pytest.mark.parametrize("name", FAMILIES)
def test_flat_and_image_inputs(name: str) -> None:
    model = small(name).eval()
    h, w = SMALL
    image = torch.rand(2, 3, h, w)
    with torch.no_grad():
        from_image = model(image)
        from_flat = model(image.reshape(2, 3, h * w))
    assert from_image.shape == (2, 4)
    assert torch.equal(from_image, from_flat)
    assert model.input_shape == (3, h * w)
    with pytest.raises(ValueError, match=rf"{h * w}.*got {h * w - 1}"):
        model(torch.rand(2, 3, h * w - 1))
    with pytest.raises(ValueError, match="in_channels=3"):
        model(torch.rand(2, 12, h * w))


def test_grey_charts_are_repeated_to_three_channels() -> None:
    rgb = small("mobilenetv3_small").eval()
    grey = small("mobilenetv3_small", in_channels=1).eval()
    assert list(grey.state_dict()) == list(rgb.state_dict())
    load_torchvision_weights(grey, rgb.state_dict())
    x = torch.rand(2, 1, SMALL[0] * SMALL[1])
    with torch.no_grad():
        assert torch.allclose(grey(x), rgb(x.expand(-1, 3, -1)), atol=1e-6)
    with pytest.raises(ValueError, match="in_channels must be 1 or 3"):
        ResNet18(12, 4)


def test_normalisation_is_imagenet_or_none() -> None:
    model = small("resnet18_2d").eval()
    plain = small("resnet18_2d", normalize=None).eval()
    x = torch.rand(1, 3, *SMALL)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(model(x), plain((x - mean) / std), atol=1e-5)
    with pytest.raises(ValueError, match="normalize"):
        ResNet18(3, 4, normalize="per-image")


@pytest.mark.parametrize("name", FAMILIES)
def test_target_layer_is_the_last_feature_map(name: str) -> None:
    model = small(name).eval()
    seen: list[torch.Tensor] = []
    handle = model.get_target_layer().register_forward_hook(lambda m, i, o: seen.append(o))
    with torch.no_grad():
        features = model.forward_features(torch.rand(2, 3, *SMALL))
    handle.remove()
    assert len(seen) == 1 and seen[0].dim() == 4 and seen[0].shape[0] == 2
    assert features.shape == (2, model.num_features)
    assert model.forward_head(features).shape == (2, 4)


@pytest.mark.parametrize("name", FAMILIES)
def test_torchvision_weights_load_with_a_new_head(name: str, tmp_path: Path) -> None:
    torch.manual_seed(1)
    imagenet = build(name, num_classes=1000, image_size=list(SMALL))
    path = tmp_path / "imagenet.pth"
    torch.save(imagenet.state_dict(), path)
    source = imagenet.state_dict()
    model = small(name)
    head = [f"{model.head_prefix}.weight", f"{model.head_prefix}.bias"]
    before = {key: value.clone() for key, value in model.state_dict().items() if key in head}
    assert load_torchvision_weights(model, path) == head
    for key, value in model.state_dict().items():
        if key in head:
            assert torch.equal(value, before[key])  # left as initialised
        else:
            assert torch.equal(value, source[key]), key
    # The same class count loads everything, the head included.
    assert load_torchvision_weights(build(name, num_classes=1000, image_size=64), source) == []
    with pytest.raises(ValueError, match=head[0]):
        load_torchvision_weights(model, source, strict_head=True)


def test_bad_torchvision_weights_are_named() -> None:
    source = build("resnet18_2d", num_classes=1000).state_dict()
    model = small("resnet18_2d")
    kept = {key: value.clone() for key, value in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"'layer3\.0\.conv1\.weight' has shape"):
        load_torchvision_weights(model, {**source, "layer3.0.conv1.weight": torch.zeros(1)})
    missing = dict(source)
    del missing["layer2.1.bn2.running_var"]
    with pytest.raises(ValueError, match=r"'layer2\.1\.bn2\.running_var'.*missing"):
        load_torchvision_weights(model, missing)
    with pytest.raises(ValueError, match=r"'layer1\.0\.conv3\.weight' is not in ResNet18"):
        load_torchvision_weights(model, build("resnet50_2d", num_classes=1000).state_dict())
    # Nothing was copied by the failed attempts.
    assert all(torch.equal(v, kept[k]) for k, v in model.state_dict().items())
    # DataParallel prefixes are stripped.
    prefixed = {f"module.{key}": value for key, value in source.items()}
    assert load_torchvision_weights(model, prefixed) == ["fc.weight", "fc.bias"]


@pytest.mark.parametrize("name", FAMILIES)
def test_gradients_reach_every_parameter(name: str) -> None:
    model = small(name).train()
    model(torch.rand(2, 3, SMALL[0] * SMALL[1])).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing
