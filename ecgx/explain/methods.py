"""Attribution methods: one class per method, one call shape.

``Method(model, **options).attribute(inputs, target) -> attributions`` shaped like ``inputs``
((B, leads, samples) for the 1D models, (B, channels, H·W) or (B, C, H, W) for chart images),
with ``target`` the class index (an int or one per record). Every gradient method is captum's;
what is written here is only what captum leaves to the caller: choosing the layer (the model's
declared ``target_layer``), the baselines (zero, or a background set drawn from the train
split), upsampling layer maps to the input's length, chunking records into batches, and
checking that the model is one the method is valid for.

Which models a method supports, and why:
- DeepLift, DeepLiftShap, Guided Backprop, Guided Grad-CAM override the backward pass of
  nonlinearity *modules*. A ReLU called through ``torch.nn.functional`` is invisible to them,
  and a ReLU module called twice in one forward shares one hook state, so their rules would
  silently not apply; :func:`relu_usage` detects both and the methods refuse such models.
- LRP (captum's, epsilon rule) propagates relevance layer by layer: every operation that mixes
  values must be a module with a rule. ecgx's residual sums are :class:`~ecgx.models.layers.Add`
  modules (captum's rule for a sum splits relevance between its terms by their share), and
  what runs between modules may only route values (concatenation, reshaping, zero padding,
  max-pooling). :func:`lrp_blockers` checks that on one forward; models with recurrent layers,
  attention, squeeze-excitation gates (a product of two signals) or functional arithmetic are
  refused by name, since captum has no rule for them (zennit, which has canonizers for some,
  does not import here: it needs torchvision). BatchNorm is merged into a preceding
  convolution in a Sequential, as the XAI4ECG seed's canonizer does; others get the rule.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from captum import attr
from torch import nn
from torch.overrides import TorchFunctionMode

from ecgx.errors import ConfigValueError

Target = int | torch.Tensor


class UnsupportedModelError(ConfigValueError):
    """The method's rules are not valid for this model's layers."""


def _functions_outside(
    model: nn.Module, inputs: torch.Tensor, modules: Sequence[nn.Module]
) -> tuple[list[Any], Counter[int]]:
    """One forward of ``model`` on the first input: the torch functions it calls outside
    ``modules`` (in call order), and how often each of ``modules`` ran (by ``id``). A
    ``TorchFunctionMode`` sees functional calls that module hooks cannot."""
    calls: Counter[int] = Counter()
    inside = [0]
    outside: list[Any] = []

    class _Spy(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
            if not inside[0]:
                outside.append(func)
            return func(*args, **(kwargs or {}))

    def pre(module: nn.Module, _: Any) -> None:
        calls[id(module)] += 1
        inside[0] += 1

    def post(module: nn.Module, _: Any, __: Any) -> None:
        inside[0] -= 1

    handles = [m.register_forward_pre_hook(pre) for m in modules]
    handles += [m.register_forward_hook(post) for m in modules]
    try:
        with torch.no_grad(), _Spy():
            model(inputs[:1])
    finally:
        for h in handles:
            h.remove()
    return outside, calls


def relu_usage(model: nn.Module, inputs: torch.Tensor) -> dict[str, int]:
    """How the model applies ReLUs in one forward: ``functional`` calls outside ReLU modules,
    and ``reused`` ReLU modules (called more than once)."""
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    outside, calls = _functions_outside(model, inputs, relus)
    functional = sum(1 for f in outside if f in (torch.relu, torch.relu_, nn.functional.relu))
    return {"functional": functional, "reused": sum(1 for c in calls.values() if c > 1)}


def _require_relu_modules(model: nn.Module, inputs: torch.Tensor, method: str) -> None:
    usage = relu_usage(model, inputs)
    if usage["functional"] or usage["reused"]:
        raise UnsupportedModelError(
            f"{method} does not support {type(model).__name__}: it applies "
            f"{usage['functional']} functional ReLU(s) and reuses {usage['reused']} ReLU "
            f"module(s), which captum's modified backward rules cannot see; use saliency, "
            f"integrated_gradients, gradient_shap, occlusion or grad_cam instead"
        )


def _targets(target: Target, n: int) -> torch.Tensor:
    t = torch.as_tensor(target, dtype=torch.long)
    return t.expand(n).clone() if t.ndim == 0 else t


@contextmanager
def _held_fixed(model: nn.Module, extras: Mapping[str, torch.Tensor]) -> Iterator[None]:
    """Every forward of ``model`` gets ``extras`` (one record's, (1, d)) by keyword, expanded to
    the batch it is called with."""

    def hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        n = args[0].shape[0]
        return args, {**kwargs, **{k: v.expand(n, *v.shape[1:]) for k, v in extras.items()}}

    handle = model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


class Method:
    """Base class: chunking, eval mode and the target layer; subclasses write ``_attribute``.

    Args:
        model: (B, ...) -> logits; put in eval mode (BatchNorm statistics, no dropout).
        batch_size: records per captum call (memory bound; captum batches its own steps).
    """

    #: attributions carry a sign (evidence for / against the class)
    signed: bool = True
    #: the method needs baselines drawn from the data (set with :meth:`set_background`)
    needs_background: bool = False
    #: attributions scale with (input − baseline) (IG, DeepLift, SHAP, ...), not local
    #: sensitivities (saliency, Grad-CAM): captum's infidelity perturbs them differently
    multiplies_by_inputs: bool = False

    def __init__(self, model: nn.Module, batch_size: int = 32) -> None:
        self.model = model.eval()
        self.batch_size = batch_size
        self.background: torch.Tensor | None = None
        self._checked = False

    @property
    def name(self) -> str:
        return type(self).__name__

    def set_background(self, background: torch.Tensor) -> None:
        self.background = background.detach()

    def check(self, inputs: torch.Tensor) -> None:
        """Raise :class:`UnsupportedModelError` when the method is not valid for the model."""

    def attribute(
        self,
        inputs: torch.Tensor,
        target: Target,
        extras: Mapping[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Attributions of ``inputs`` (the signal) for ``target``. ``extras``: the model's other
        inputs (e.g. demographics, (records, d)), held fixed at each record's own values."""
        if extras:
            # One record at a time, its extras broadcast to whatever batch captum builds from it
            # (IG steps, SHAP samples, occlusion masks expand it in different orders).
            rows = []
            for i in range(len(inputs)):
                with _held_fixed(self.model, {k: v[i : i + 1] for k, v in extras.items()}):
                    rows.append(self.attribute(inputs[i : i + 1], _targets(target, len(inputs))[i]))
            return torch.cat(rows)
        if not self._checked:
            self.check(inputs)
            self._checked = True
        if self.needs_background and self.background is None:
            raise ConfigValueError(f"{self.name} needs a background set (set_background)")
        targets = _targets(target, len(inputs))
        if len(targets) != len(inputs):
            raise ValueError(f"{len(targets)} targets for {len(inputs)} records")
        parts = [
            self._attribute(inputs[i : i + self.batch_size], targets[i : i + self.batch_size])
            for i in range(0, len(inputs), self.batch_size)
        ]
        out = torch.cat(parts).detach()
        if out.shape != inputs.shape:  # a bug here, not a user error: say what came back
            raise RuntimeError(f"{self.name} gave {tuple(out.shape)} for {tuple(inputs.shape)}")
        return out

    def _attribute(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _layer(self) -> nn.Module:
        layer_name = getattr(self.model, "target_layer", "")
        if not layer_name:
            raise UnsupportedModelError(f"{type(self.model).__name__} declares no target_layer")
        return self.model.get_submodule(layer_name)


class Saliency(Method):
    """The input gradient of the class logit (XAI4ECG's saliency; ``abs`` for |gradient|)."""

    def __init__(self, model: nn.Module, abs: bool = False, batch_size: int = 32) -> None:
        super().__init__(model, batch_size)
        self.abs = abs
        self.signed = not abs

    def _attribute(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return attr.Saliency(self.model).attribute(x, target=target, abs=self.abs)


class InputXGradient(Method):
    multiplies_by_inputs = True

    def _attribute(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return attr.InputXGradient(self.model).attribute(x, target=target)


class IntegratedGradients(Method):
    """Path integral of gradients from a baseline (``zero`` or the background's ``mean``)."""

    multiplies_by_inputs = True

    def __init__(
        self,
        model: nn.Module,
        n_steps: int = 50,
        baseline: str = "zero",
        method: str = "gausslegendre",
        internal_batch_size: int | None = 256,
        batch_size: int = 32,
    ) -> None:
        super().__init__(model, batch_size)
        if baseline not in ("zero", "mean"):
            raise ConfigValueError(f"explainer baseline must be zero or mean, got {baseline!r}")
        self.n_steps, self.baseline, self.method = n_steps, baseline, method
        self.internal_batch_size = internal_batch_size
        self.needs_background = baseline == "mean"

    def baselines(self, x: torch.Tensor) -> torch.Tensor:
        if self.baseline == "zero":
            return torch.zeros_like(x)
        return self.background.mean(0, keepdim=True).expand_as(x)

    def _attribute(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return attr.IntegratedGradients(self.model).attribute(
            x, baselines=self.baselines(x), target=target, n_steps=self.n_steps,
            method=self.method, internal_batch_size=self.internal_batch_size,
        )  # fmt: skip


class DeepLift(Method):
    multiplies_by_inputs = True

    def check(self, inputs: torch.Tensor) -> None:
        _require_relu_modules(self.model, inputs, self.name)

    def _attribute(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return attr.DeepLift(self.model).attribute(x, baselines=torch.zeros_like(x), target=target)


class GradientShap(Method):
    """Expected gradients (the CPSC seed's ``shap.GradientExplainer``): baselines drawn from a
    background set of training records, a random point on each path, gradient × difference."""

    multiplies_by_inputs = True

    needs_background = True

    def __init__(
        self, model: nn.Module, n_samples: int = 50, stdevs: float = 0.0, batch_size: int = 8
    ) -> None:
        super().__init__(model, batch_size)
        self.n_samples, self.stdevs = n_samples, stdevs

    def _attribute(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return attr.GradientShap(self.model).attribute(
            x, baselines=self.background, n_samples=self.n_samples, stdevs=self.stdevs,
            target=target,
        )  # fmt: skip


class DeepLiftShap(Method):
    """DeepLift averaged over a background set of baselines."""

    multiplies_by_inputs = True

    needs_background = True

    def __init__(self, model: nn.Module, batch_size: int = 4) -> None:
        super().__init__(model, batch_size)

    def check(self, inputs: torch.Tensor) -> None:
        _require_relu_modules(self.model, inputs, self.name)

    def _attribute(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return attr.DeepLiftShap(self.model).attribute(x, baselines=self.background, target=target)


class Occlusion(Method):
    """Change of the class logit when part of the input is set to 0.

    ``mode: time`` slides a window of ``window`` samples (``stride`` apart) over each lead
    (``per_lead: false`` occludes all leads at once); ``mode: lead`` removes whole leads.
    """

    multiplies_by_inputs = True

    def __init__(
        self,
        model: nn.Module,
        mode: str = "time",
        window: int = 50,
        stride: int = 25,
        per_lead: bool = True,
        batch_size: int = 16,
    ) -> None:
        super().__init__(model, batch_size)
        if mode not in ("time", "lead"):
            raise ConfigValueError(f"occlusion mode must be time or lead, got {mode!r}")
        self.mode, self.window, self.stride, self.per_lead = mode, window, stride, per_lead

    def _attribute(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.mode == "lead":
            mask = torch.arange(x.shape[1]).view(1, -1, *([1] * (x.ndim - 2))).expand_as(x[:1])
            return attr.FeatureAblation(self.model).attribute(
                x, target=target, feature_mask=mask, perturbations_per_eval=x.shape[1]
            )
        leads = 1 if self.per_lead else x.shape[1]
        return attr.Occlusion(self.model).attribute(
            x, sliding_window_shapes=(leads, self.window), strides=(leads, self.stride),
            target=target, perturbations_per_eval=8,
        )  # fmt: skip


class GuidedBackprop(Method):
    def check(self, inputs: torch.Tensor) -> None:
        _require_relu_modules(self.model, inputs, self.name)

    def _attribute(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return attr.GuidedBackprop(self.model).attribute(x, target=target)


def _upsample(model: nn.Module, cam: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A layer map onto the input, by the model's own rule where it has one."""
    if hasattr(model, "layer_map_to_input"):
        return model.layer_map_to_input(cam, like).contiguous()
    mode = "linear" if like.ndim == 3 else "bilinear"
    up = attr.LayerAttribution.interpolate(cam, tuple(like.shape[2:]), interpolate_mode=mode)
    return up.expand_as(like).contiguous()


class GradCAM(Method):
    """Grad-CAM at the model's ``target_layer`` (or ``layer``), upsampled to the input."""

    signed = False

    def __init__(self, model: nn.Module, layer: str | None = None, batch_size: int = 32) -> None:
        super().__init__(model, batch_size)
        self.layer = layer

    def _layer(self) -> nn.Module:
        return self.model.get_submodule(self.layer) if self.layer else super()._layer()

    def _attribute(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        cam = attr.LayerGradCam(self.model, self._layer()).attribute(
            x, target=target, relu_attributions=True
        )
        return _upsample(self.model, cam, x)


class GuidedGradCAM(GradCAM):
    """Grad-CAM × Guided Backprop (the vision and XAI4ECG seeds' Guided Grad-CAM)."""

    signed = True

    def check(self, inputs: torch.Tensor) -> None:
        _require_relu_modules(self.model, inputs, self.name)

    def _attribute(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        cam = attr.LayerGradCam(self.model, self._layer()).attribute(
            x, target=target, relu_attributions=True
        )
        guided = attr.GuidedBackprop(self.model).attribute(x, target=target)
        return guided * _upsample(self.model, cam, x)


class LRP(Method):
    """Layer-wise relevance propagation with the epsilon rule (ε = 1e-3, XAI4ECG's choice) on
    a copy of the model whose BatchNorms are merged into the preceding convolutions. Supports
    feed-forward, residual (with :class:`~ecgx.models.layers.Add`) and concatenating models;
    see :func:`lrp_blockers` for what is refused."""

    multiplies_by_inputs = True

    def __init__(self, model: nn.Module, epsilon: float = 1e-3, batch_size: int = 32) -> None:
        super().__init__(model, batch_size)
        self.epsilon = epsilon
        self._lrp_model: nn.Module | None = None

    def check(self, inputs: torch.Tensor) -> None:
        blockers = lrp_blockers(self.model, inputs)
        if blockers:
            raise UnsupportedModelError(
                f"lrp does not support {type(self.model).__name__}: captum's LRP has no rule "
                f"for {', '.join(blockers)} (supported: convolutions, linear, BatchNorm, "
                f"pooling, ReLU, residual Add modules, concatenation)"
            )
        self._lrp_model = _lrp_copy(self.model, self.epsilon)

    def _attribute(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # captum deletes every layer's rule after an attribution: set them again for each call
        # (max-sensitivity attributes perturbed copies with the same method).
        _epsilon_rules(self._lrp_model, self.epsilon)
        return attr.LRP(self._lrp_model).attribute(x, target=target)


#: leaf modules captum's LRP handles with the epsilon rule or passes relevance through
_LRP_LEAVES = (
    nn.Conv1d, nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.MaxPool1d,
    nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.ReLU, nn.Dropout, nn.Identity, nn.Flatten,
    nn.Sequential,  # an empty one: the identity
)  # fmt: skip
#: operations between modules that only move values (their gradient routes relevance
#: unchanged, which is what LRP does with them); anything else would scale or copy it
_LRP_ROUTING = frozenset({
    "cat", "concat", "stack", "flatten", "reshape", "view", "transpose", "permute", "squeeze",
    "unsqueeze", "contiguous", "pad", "__getitem__", "dim", "size", "__get__", "amax", "max",
    "max_pool1d", "max_pool2d", "new_zeros", "split", "chunk", "clone",
})  # fmt: skip


def lrp_blockers(model: nn.Module, inputs: torch.Tensor) -> list[str]:
    """What in one forward of ``model`` captum's LRP has no rule for: leaf modules of other
    types (LSTM, attention, Sigmoid gates, ...) unless they declare ``lrp_rule = "epsilon"``
    (ecgx's weightless residual sums and shortcuts), and arithmetic between modules (a
    functional ``+`` or ``*``), each named once."""
    leaves = [m for m in model.modules() if not list(m.children())]
    blockers = sorted({type(m).__name__ for m in leaves
                       if not isinstance(m, _LRP_LEAVES) and _declared_rule(m) != "epsilon"})  # fmt: skip
    outside, _ = _functions_outside(model, inputs, leaves)
    names = (getattr(func, "__name__", str(func)) for func in outside)
    functional = Counter(name for name in names if name not in _LRP_ROUTING)
    return blockers + [f"functional {name} ({n}x)" for name, n in sorted(functional.items())]


def _declared_rule(module: nn.Module) -> str | None:
    return getattr(module, "lrp_rule", None)


def _copying(forward: Any) -> Any:
    def call(*args: Any, **kwargs: Any) -> Any:
        out = forward(*args, **kwargs)
        return out.clone() if any(out is a for a in args) else out

    return call


def _lrp_copy(model: nn.Module, epsilon: float) -> nn.Module:
    """A deep copy with each Conv→BN pair of a Sequential fused into one convolution (the BN
    dropped, as the seed's canonizer does), identities as pass-through layers, and the epsilon
    rule on every other layer."""
    from collections import OrderedDict

    from torch.nn.utils.fusion import fuse_conv_bn_eval

    net = copy.deepcopy(model).eval()
    for parent in list(net.modules()):
        if not isinstance(parent, nn.Sequential):
            continue
        kept: OrderedDict[str, nn.Module] = OrderedDict()
        previous: nn.Module | None = None
        for name, child in parent.named_children():
            if isinstance(child, nn.BatchNorm1d | nn.BatchNorm2d) and isinstance(
                previous, nn.Conv1d | nn.Conv2d
            ):
                fused = fuse_conv_bn_eval(previous, child)
                previous.weight, previous.bias = fused.weight, fused.bias
                continue
            kept[name] = previous = child
        for name in list(parent._modules):
            del parent._modules[name]
        for name, child in kept.items():
            parent.add_module(name, child)
    # A layer that returns its input tensor itself (an identity, a stride-1 shortcut) would have
    # captum hook one tensor as both its input and its output: such layers return a copy.
    for module in net.modules():
        if not list(module.children()) and not isinstance(module, nn.ReLU | nn.Dropout):
            module.forward = _copying(module.forward)
    _epsilon_rules(net, epsilon)
    return net


def _epsilon_rules(net: nn.Module, epsilon: float) -> None:
    from captum.attr._utils.lrp_rules import EpsilonRule

    for module in net.modules():
        # ReLU / Dropout are captum's pass-through layers; everything else with no children is
        # linear in its input (conv, linear, pooling, remaining BN, Add) and gets the rule.
        if not list(module.children()) and not isinstance(module, nn.ReLU | nn.Dropout):
            module.rule = EpsilonRule(epsilon=epsilon)


class Attention(Method):
    """IMLE-Net's own explanation (spec A8): beat-level attention interpolated over each beat
    window, scaled by the lead's channel attention, min-max normalised per record."""

    signed = False

    def check(self, inputs: torch.Tensor) -> None:
        if not hasattr(self.model, "forward_with_attention"):
            raise UnsupportedModelError(
                f"attention needs a model with attention maps (imle_net), got "
                f"{type(self.model).__name__}"
            )

    def maps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return self.model.forward_with_attention(x)[1]

    def _attribute(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        from ecgx.explain.plots import imle_beat_map

        alphas = self.maps(x)
        beat, channel = alphas["beat"].numpy(), alphas["channel"].numpy()
        maps = [imle_beat_map(b, c, x.shape[-1]) for b, c in zip(beat, channel, strict=True)]
        return torch.from_numpy(np.stack(maps)).to(x.dtype)
