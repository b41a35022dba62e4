"""Class attention maps (docs/method.md §1): Grad-CAM (Eq. 1), Grad-CAM++ and channel-weighted attention (Eq. 2).

For a layer with activations ``A`` (B, K, H, W) and class scores ``y^c`` (the logits), the
gradients ``g^c = ∂y^c/∂A`` of every requested class come from one forward pass and one batched
vector–Jacobian product (``torch.vmap`` over ``torch.autograd.grad`` with one-hot cotangents),
never one backward pass per class. For a torchvision ResNet and its last layer (global average pooling + linear
head) ``g^c_kij = W[c, k] / Z`` exactly, so no backward pass is needed there at all.

Each native mechanism turns ``g`` into channel weights ``α^c_k`` (docs/method.md §1 table; its
entry in :data:`sharpen_attention.mechanisms.REGISTRY` holds the weight function) and the map is
``M^c = ReLU(Σ_k α^c_k A_k)``. With ``create_graph=True`` the maps are differentiable w.r.t. the
network's parameters through both ``A`` and ``α`` (what the ICASC losses train on).

    with AttentionExtractor(model, layers=("last", "inner"), mechanism="channel") as extract:
        result = extract(images, classes=None)        # all classes
        result.maps["last"]                           # (B, num_classes, h, w) in [0, 1]

Extra mechanisms from pytorch-grad-cam (the registry's ``"pytorch-grad-cam"`` kind) run through a thin
adapter (:mod:`sharpen_attention.gradcam_adapter`): slower (one forward/backward per class, more for
ScoreCAM and Ablation-CAM) and not differentiable.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import VGG, ResNet

from sharpen_core.errors import UsageError

from .gradcam_adapter import adapter_maps
from .mechanisms import NATIVE, get_mechanism, names

VJP_MODES = ("vmap", "is_grads_batched", "loop")
LAYER_ALIASES = ("last", "inner")
NORM_EPS = 1e-7

ClassSpec = Union[None, int, Sequence[int], Sequence[Sequence[int]], Tensor]
Classes = Union[ClassSpec, Callable[[Tensor], ClassSpec]]


# --------------------------------------------------------------------------- pure functions

def weighted_map(acts: Tensor, weights: Tensor) -> Tensor:
    """The map ``M^c = ReLU(Σ_k α^c_k A_k)``: acts (B, K, H, W), weights (B, C, K) → (B, C, H, W)."""
    return torch.einsum("bkhw,bck->bchw", acts, weights).relu()


def max_normalize(maps: Tensor, eps: float = NORM_EPS) -> Tensor:
    """``M / (max M + ε)`` per image and class (docs/method.md §1), over the last two dimensions."""
    return maps / (maps.amax(dim=(-2, -1), keepdim=True) + eps)


# --------------------------------------------------------------------------- layers

def _numbered_stages(module: nn.Module) -> list[str]:
    names = []
    i = 1
    while isinstance(getattr(module, f"layer{i}", None), nn.Module):
        names.append(f"layer{i}")
        i += 1
    return names


def default_layers(model: nn.Module) -> dict[str, str]:
    """Module names of the "last" and "inner" layers (docs/method.md §1) of a ResNet or VGG.

    ResNet (torchvision, or any net with ``layer1..layerN`` stages and a linear head):
    ``layerN`` / ``layerN-1`` outputs. VGG: the ReLU after the last conv before the last pool
    (VGG-19: ``features.35``, conv5_4) and before the pool before it (``features.26``, conv4_4).
    The model may be wrapped: the first ResNet/VGG submodule found is used.
    """
    for prefix, m in model.named_modules():
        p = prefix + "." if prefix else ""
        stages = _numbered_stages(m)
        if isinstance(m, ResNet) or (len(stages) >= 2 and any(
                isinstance(getattr(m, h, None), nn.Linear) for h in ("fc", "linear"))):
            return {"last": p + stages[-1], "inner": p + stages[-2]}
        if isinstance(m, VGG):
            feats = list(m.features)
            pools = [i for i, layer in enumerate(feats) if isinstance(layer, nn.MaxPool2d)]
            found = []
            for pool in pools[-2:]:
                relus = [i for i in range(pool) if isinstance(feats[i], nn.ReLU)]
                found.append(f"{p}features.{relus[-1]}")
            if len(found) == 2:
                return {"last": found[1], "inner": found[0]}
    raise ValueError(
        f"no default attention layers for {type(model).__name__} (known: torchvision ResNet and VGG); "
        f"name the layers by module name, e.g. layers=('features.35',)")


def _available(model: nn.Module) -> str:
    names = [n for n, _ in model.named_modules() if n]
    short = [n for n in names if n.count(".") <= 1]
    text = ", ".join(short[:80])
    if len(short) > 80 or len(short) < len(names):
        text += f" ... ({len(names)} modules in all; any name from model.named_modules() works)"
    return text


def resolve_layers(model: nn.Module, layers: str | Sequence[str]) -> dict[str, str]:
    """Map each requested layer ("last", "inner" or a module name) to a module name of ``model``."""
    if isinstance(layers, str):
        layers = (layers,)
    if len(layers) == 0:
        raise ValueError("at least one layer is needed")
    modules = dict(model.named_modules())
    defaults: dict[str, str] | None = None
    out: dict[str, str] = {}
    for key in layers:
        if key in LAYER_ALIASES and key not in modules:
            if defaults is None:
                defaults = default_layers(model)
            out[key] = defaults[key]
        elif key in modules and key != "":
            out[key] = key
        else:
            close = difflib.get_close_matches(key, [n for n in modules if n], n=3)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise UsageError(f"unknown layer {key!r} for {type(model).__name__}.{hint} "
                             f"Use 'last', 'inner' or a module name. Available: {_available(model)}")
    return out


def _closed_form_head(model: nn.Module, module_name: str) -> nn.Linear | None:
    """The linear head when ``g^c = W[c]/Z`` holds exactly at ``module_name`` (torchvision ResNet, last stage)."""
    if not isinstance(model, ResNet):
        return None
    cls = type(model)
    if cls.forward is not ResNet.forward or cls._forward_impl is not ResNet._forward_impl:
        return None
    pool, fc = getattr(model, "avgpool", None), getattr(model, "fc", None)
    if not (isinstance(pool, nn.AdaptiveAvgPool2d) and pool.output_size in (1, (1, 1))
            and type(fc) is nn.Linear and module_name == "layer4"):
        return None
    if fc._forward_hooks or fc._forward_pre_hooks or pool._forward_hooks or pool._forward_pre_hooks:
        return None
    return fc


def _input_channels(model: nn.Module) -> int | None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    return None


# --------------------------------------------------------------------------- classes

def resolve_classes(classes: ClassSpec, batch: int, num_classes: int, device: torch.device) -> Tensor:
    """Requested classes as a (B, C) long tensor; -1 pads ragged per-image lists.

    ``None``: all classes. An int: that class for every image. A (B,) tensor or a list of B ints:
    one class per image. A (B, C) tensor or a list of B lists (ragged allowed, padded with -1).
    """
    if classes is None:
        idx = torch.arange(num_classes, device=device).expand(batch, num_classes)
    elif isinstance(classes, int) and not isinstance(classes, bool):
        idx = torch.full((batch, 1), classes, dtype=torch.long, device=device)
    elif isinstance(classes, Tensor):
        if classes.is_floating_point() or classes.is_complex() or classes.dtype == torch.bool:
            raise TypeError(f"classes must be an integer tensor, got {classes.dtype}")
        idx = classes.to(device=device, dtype=torch.long)
        if idx.dim() == 0:
            idx = idx.expand(batch).unsqueeze(1)
        elif idx.dim() == 1:
            idx = idx.unsqueeze(1)
        elif idx.dim() != 2:
            raise ValueError(f"classes tensor must be (B,) or (B, C), got shape {tuple(classes.shape)}")
    else:
        rows = list(classes)
        if all(isinstance(r, int) for r in rows):
            rows = [[r] for r in rows]
        try:
            rows = [[int(c) for c in r] for r in rows]
        except TypeError:
            raise TypeError("classes must be None, an int, a tensor, a list of ints (one per image) "
                            "or a list of lists of ints") from None
        width = max((len(r) for r in rows), default=0)
        idx = torch.full((len(rows), width), -1, dtype=torch.long)
        for i, r in enumerate(rows):
            idx[i, :len(r)] = torch.tensor(r, dtype=torch.long)
        idx = idx.to(device)
    if idx.shape[0] != batch:
        raise ValueError(f"classes given for {idx.shape[0]} images, but the batch has {batch}")
    bad = (idx < -1) | (idx >= num_classes)
    if bool(bad.any()):
        value = int(idx[bad][0])
        raise ValueError(f"class index {value} out of range: the model has {num_classes} classes "
                         f"(valid 0..{num_classes - 1}; -1 marks padding)")
    return idx


def _one_hot_batched(idx: Tensor, num_classes: int, dtype: torch.dtype) -> Tensor:
    """grad_outputs (C, B, N): row (j, b) is the one-hot of class idx[b, j] (zero for padding)."""
    b, c = idx.shape
    out = torch.zeros(c, b, num_classes + 1, dtype=dtype, device=idx.device)
    where = torch.where(idx < 0, num_classes, idx).t().unsqueeze(-1)
    out.scatter_(-1, where, 1.0)
    return out[..., :num_classes]


# --------------------------------------------------------------------------- extractor

@dataclass
class AttentionResult:
    """Maps per requested layer (B, C, h, w), the logits (B, N) of the same forward, the classes (B, C).

    ``classes[b, j]`` is the class of ``maps[key][b, j]``; -1 marks padding (its map is zero).
    ``layers`` maps each key of ``maps`` to its module name.
    """

    maps: dict[str, Tensor]
    logits: Tensor
    classes: Tensor
    layers: dict[str, str] = field(default_factory=dict)


class AttentionExtractor:
    """Class attention maps of ``model`` at ``layers`` (docs/method.md §1), all requested classes per call.

    Args:
        model: a CNN returning logits (B, N). Its mode (train/eval) is used as is and left alone.
        layers: "last", "inner" (docs/method.md §1 defaults for ResNet and VGG) or module names.
        mechanism: a name of :data:`sharpen_attention.mechanisms.REGISTRY` (native or pytorch-grad-cam).
        closed_form: use ``g^c = W[c]/Z`` at a torchvision ResNet's ``layer4`` (None: where it holds).
        vjp: how the gradients of all classes are computed from the one forward pass: "vmap"
            (``torch.vmap`` over ``torch.autograd.grad``: truly batched convolution and batch-norm
            backward), "is_grads_batched" (``torch.autograd.grad(..., is_grads_batched=True)``; its
            legacy vmap loops over classes inside convolution and batch-norm backward) or "loop"
            (one ``autograd.grad`` per class over the same graph; the baseline).
        class_chunk: at most this many classes per batched VJP (bounds memory for many classes).
        gradcampp_eps: the ε in Grad-CAM++'s denominator (0 per docs/method.md §1; pytorch-grad-cam uses 1e-6).

    Use as a context manager (hooks stay registered inside it and are removed on exit, also on
    errors), or call directly (hooks are registered for the call only).
    """

    def __init__(self, model: nn.Module, layers: str | Sequence[str] = ("last",), mechanism: str = "channel",
                 *, closed_form: bool | None = None, vjp: str = "vmap", class_chunk: int | None = None,
                 gradcampp_eps: float = 0.0) -> None:
        self._entry = get_mechanism(mechanism)
        if class_chunk is not None and class_chunk < 1:
            raise ValueError(f"class_chunk must be positive, got {class_chunk}")
        self.model = model
        self.mechanism = mechanism
        self.layers = resolve_layers(model, layers)
        if vjp not in VJP_MODES:
            raise ValueError(f"unknown vjp mode {vjp!r}; expected one of {VJP_MODES}")
        self.vjp = vjp
        self.class_chunk = class_chunk
        self.gradcampp_eps = gradcampp_eps
        modules = dict(model.named_modules())
        self._modules = {name: modules[name] for name in dict.fromkeys(self.layers.values())}
        self._heads: dict[str, nn.Linear] = {}
        if closed_form is not False and self._entry.native:
            for name in self._modules:
                fc = _closed_form_head(model, name)
                if fc is not None:
                    self._heads[name] = fc
            if closed_form and not self._heads:
                raise ValueError("closed_form=True needs a torchvision ResNet and its 'layer4' (last) layer")
        self._in_channels = _input_channels(model)
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._capture: dict[str, Tensor] | None = None
        self._switch_grad_on = False

    # -- hooks
    def __enter__(self) -> AttentionExtractor:
        self._register()
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove_hooks()

    def _register(self) -> None:
        if self._handles:
            return
        try:
            for name, module in self._modules.items():
                self._handles.append(module.register_forward_hook(self._make_hook(name)))
        except BaseException:
            self.remove_hooks()
            raise

    def remove_hooks(self) -> None:
        """Remove this extractor's hooks from the model (idempotent)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._capture = None

    @contextmanager
    def _hooks(self) -> Iterator[None]:
        owned = not self._handles
        self._register()
        try:
            yield
        finally:
            self._capture = None
            if owned:
                self.remove_hooks()

    def _make_hook(self, name: str) -> Callable[[nn.Module, object, object], Tensor | None]:
        def hook(module: nn.Module, inputs: object, output: object) -> Tensor | None:
            if self._capture is None:
                return None
            if not isinstance(output, Tensor):
                raise TypeError(f"layer {name!r} returns {type(output).__name__}; attention needs a tensor output")
            if output.dim() != 4:
                raise ValueError(f"layer {name!r} output has shape {tuple(output.shape)}; expected (B, K, H, W)")
            if name in self._capture:
                raise RuntimeError(f"layer {name!r} ran more than once in one forward pass; pick a layer that runs once")
            if self._switch_grad_on:
                # inference: no graph before the first hooked layer, a graph from here on
                torch.set_grad_enabled(True)
            if torch.is_grad_enabled() and not output.requires_grad:
                output = output.detach().requires_grad_()
            self._capture[name] = output
            # downstream gets a copy, so in-place ops later cannot modify the captured tensor
            return output.clone() if output.requires_grad else output
        return hook

    # -- the call
    def __call__(self, images: Tensor, classes: Classes = None, *, create_graph: bool = False,
                 normalize: bool = True, size: str | tuple[int, int] | None = None,
                 eps: float = NORM_EPS, weight_grad: bool = True) -> AttentionResult:
        """Attention maps of ``classes`` for ``images`` (B, 3, H, W) from one forward pass.

        Args:
            classes: None (all), an int, (B,) or (B, C) indices, a list of per-image lists (ragged
                lists are padded with -1), or a callable mapping the detached logits to any of these
                (e.g. ground truth plus the most confusing class).
            create_graph: differentiable maps (and logits) for a training loss; otherwise detached.
            weight_grad: with ``create_graph``, the maps are differentiable through the channel
                weights ``α`` too (docs/method.md §1, the paper's gradient: a second-order backward through
                the layers above); False treats ``α`` as constants, so the gradient flows through
                the activations ``A`` only (no double backward: faster, not the paper's gradient).
            normalize: divide each map by its maximum plus ``eps`` (docs/method.md §1).
            size: None (feature resolution), "input" (the images' size) or (h, w); bilinear.
        """
        self._check_images(images)
        if size == "input":
            size = (int(images.shape[-2]), int(images.shape[-1]))
        elif size is not None and not (isinstance(size, (tuple, list)) and len(size) == 2):
            raise ValueError(f"size must be None, 'input' or (h, w), got {size!r}")
        if not self._entry.native:
            if create_graph:
                raise ValueError(f"mechanism {self.mechanism!r} ({self._entry.kind}) is not differentiable; "
                                 f"use one of {tuple(names(NATIVE))} with create_graph=True")
            raw, logits, idx = adapter_maps(self.model, self._modules, images, classes, self.mechanism,
                                            resolve_classes)
        else:
            raw, logits, idx = self._native(images, classes, create_graph, weight_grad)
        maps = {}
        for key, name in self.layers.items():
            m = raw[name]
            if size is not None and tuple(m.shape[-2:]) != tuple(size):
                m = F.interpolate(m, size=tuple(size), mode="bilinear", align_corners=False)
            if normalize:
                m = max_normalize(m, eps)
            maps[key] = m
        if not create_graph:
            maps = {k: v.detach() for k, v in maps.items()}
            logits = logits.detach()
        return AttentionResult(maps=maps, logits=logits, classes=idx, layers=dict(self.layers))

    def _check_images(self, images: Tensor) -> None:
        if not isinstance(images, Tensor):
            raise TypeError(f"images must be a torch.Tensor of shape (B, C, H, W), got {type(images).__name__}")
        if images.dim() != 4:
            raise ValueError(f"images must have shape (B, C, H, W), got shape {tuple(images.shape)}")
        if not images.is_floating_point():
            raise TypeError(f"images must be a floating-point tensor, got {images.dtype}")
        channels = self._in_channels
        if channels is not None and images.shape[1] != channels:
            raise ValueError(f"images have {images.shape[1]} channels, the model expects {channels} "
                             f"(shape (B, C, H, W) = {tuple(images.shape)})")
        if images.shape[0] == 0:
            raise ValueError("images is an empty batch")

    def _native(self, images: Tensor, classes: Classes, create_graph: bool, weight_grad: bool = True
                ) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        autograd_layers = [n for n in self._modules if n not in self._heads]
        amp = torch.is_autocast_enabled(images.device.type)
        need_graph = create_graph or bool(autograd_layers)
        if images.is_inference():
            with torch.inference_mode(False):
                images = images.clone()
        with self._hooks(), torch.inference_mode(False):
            self._capture = {}
            self._switch_grad_on = need_graph and not create_graph
            try:
                with torch.set_grad_enabled(create_graph):
                    logits = self.model(images)
            finally:
                self._switch_grad_on = False
            acts = dict(self._capture)
            self._capture = None
        missing = [n for n in self._modules if n not in acts]
        if missing:
            raise RuntimeError(f"layer(s) {missing} did not run in the model's forward pass")
        if not isinstance(logits, Tensor) or logits.dim() != 2:
            shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise ValueError(f"the model must return logits of shape (B, num_classes), got {shape}")
        num_classes = logits.shape[1]
        if callable(classes):
            classes = classes(logits.detach())
        idx = resolve_classes(classes, images.shape[0], num_classes, logits.device)

        grads: dict[str, Tensor] = {}
        raw = {}
        # the backward replays the forward's dtypes; autocast must not recast inside the batched VJP
        with torch.autocast(device_type=images.device.type, enabled=False):
            for name, fc in self._heads.items():
                grads[name] = self._closed_form_grads(fc, acts[name], idx, create_graph and weight_grad)
            if autograd_layers:
                # torch.vmap's batch-norm backward rejects autocast's mixed dtypes: use the legacy batching
                mode = "is_grads_batched" if amp and self.vjp == "vmap" else self.vjp
                grads.update(self._vjp(logits, [acts[n] for n in autograd_layers], autograd_layers, idx,
                                       create_graph and weight_grad, mode, keep_graph=create_graph))
            weigh = self._entry.weights
            assert weigh is not None  # a native mechanism
            for name in self._modules:
                a = acts[name] if create_graph else acts[name].detach()
                dtype = torch.promote_types(a.dtype, torch.float32)  # half/bfloat16 -> float32
                a, g = a.to(dtype), grads[name].to(dtype)
                weights = weigh(a if weight_grad else a.detach(), g, self.gradcampp_eps)
                weights = weights * (idx >= 0).unsqueeze(-1).to(weights.dtype)
                raw[name] = weighted_map(a, weights)
        return raw, logits, idx

    @staticmethod
    def _closed_form_grads(fc: nn.Linear, acts: Tensor, idx: Tensor, create_graph: bool) -> Tensor:
        """GAP + linear head: ``g^c_kij = W[c, k] / Z`` (docs/method.md §1), expanded to (B, C, K, H, W)."""
        weight = fc.weight if create_graph else fc.weight.detach()
        b, k, h, w = acts.shape
        g = weight[idx.clamp(min=0)] / (h * w)  # (B, C, K)
        return g[..., None, None].expand(*g.shape, h, w)

    def _vjp(self, logits: Tensor, inputs: list[Tensor], names: list[str], idx: Tensor,
             create_graph: bool, mode: str | None = None, keep_graph: bool = False) -> dict[str, Tensor]:
        """``∂y^c/∂A`` for every requested class: batched VJP (C, B, N) one-hots → (B, C, K, H, W)."""
        num_classes = logits.shape[1]
        grad_outputs = _one_hot_batched(idx, num_classes, logits.dtype)  # (C, B, N)
        total = grad_outputs.shape[0]
        if total == 0:
            return {n: a.new_zeros((a.shape[0], 0, *a.shape[1:])) for n, a in zip(names, inputs)}
        mode = mode or self.vjp
        parts: list[tuple[int, tuple[Tensor, ...]]] = []  # (classes in this part, grads per input)
        if mode == "vmap":
            def one(v: Tensor) -> tuple[Tensor, ...]:
                return torch.autograd.grad(logits, inputs, grad_outputs=v, create_graph=create_graph,
                                           retain_graph=True, materialize_grads=True)

            parts.append((total, torch.vmap(one, chunk_size=self.class_chunk)(grad_outputs)))
        elif mode == "is_grads_batched":
            step = self.class_chunk or total
            starts = list(range(0, total, step))
            for s in starts:
                retain = create_graph or keep_graph or s != starts[-1]
                chunk = grad_outputs[s:s + step]
                parts.append((chunk.shape[0], torch.autograd.grad(
                    logits, inputs, grad_outputs=chunk, is_grads_batched=True, create_graph=create_graph,
                    retain_graph=retain, materialize_grads=True)))
        else:
            for j in range(total):
                retain = create_graph or keep_graph or j != total - 1
                g = torch.autograd.grad(logits, inputs, grad_outputs=grad_outputs[j], create_graph=create_graph,
                                        retain_graph=retain, materialize_grads=True)
                parts.append((1, tuple(x.unsqueeze(0) for x in g)))
        out = {}
        for i, n in enumerate(names):
            # a layer the logits do not depend on gets zeros (is_grads_batched returns them unbatched)
            pieces = [g[i] if g[i].dim() == inputs[i].dim() + 1 else g[i].expand(count, *g[i].shape)
                      for count, g in parts]
            stacked = pieces[0] if len(pieces) == 1 else torch.cat(pieces)
            out[n] = stacked.movedim(0, 1)
        return out


def attention_maps(model: nn.Module, images: Tensor, classes: Classes = None, *,
                   layers: str | Sequence[str] = ("last",), mechanism: str = "channel",
                   create_graph: bool = False, normalize: bool = True,
                   size: str | tuple[int, int] | None = None, **options: object) -> AttentionResult:
    """One-shot :class:`AttentionExtractor` call (hooks registered and removed within)."""
    with AttentionExtractor(model, layers, mechanism, **options) as extract:  # type: ignore[arg-type]
        return extract(images, classes, create_graph=create_graph, normalize=normalize, size=size)
