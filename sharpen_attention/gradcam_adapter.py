"""Thin adapter to pytorch-grad-cam's mechanisms (ScoreCAM, LayerCAM, XGradCAM, EigenCAM, ...).

Which ones, and the class of each: the ``"pytorch-grad-cam"`` entries of
:data:`sharpen_attention.mechanisms.REGISTRY`.

Slower than the native mechanisms (one forward and backward pass per class, and for ScoreCAM and
Ablation-CAM many more forward passes) and not differentiable. The maps are pytorch-grad-cam's
unscaled ones (its ``get_cam_image`` followed by ReLU) at feature resolution, as torch tensors;
the caller resizes and normalises them as for the native mechanisms. The model's mode and its
parameters' ``.grad`` are restored afterwards (pytorch-grad-cam sets eval mode and calls
``backward``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from .mechanisms import INSTALL_HINT, get_mechanism


def _load(mechanism: str) -> Any:
    try:
        import pytorch_grad_cam
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError:
        raise ImportError(f"mechanism {mechanism!r} needs pytorch-grad-cam, which is not installed: "
                          f"{INSTALL_HINT}") from None
    return getattr(pytorch_grad_cam, get_mechanism(mechanism).cam_class), ClassifierOutputTarget


class _NoBars:
    """Stands in for the ``tqdm`` module inside pytorch-grad-cam: its ScoreCAM and Ablation-CAM draw a progress
    bar per image and class unconditionally (thousands of lines on stderr); the caller has its own bar."""

    @staticmethod
    def tqdm(iterable: Any, *args: Any, **kwargs: Any) -> Any:
        return iterable


@contextmanager
def _without_inner_bars() -> Iterator[None]:
    import importlib

    saved = []
    for name in ("pytorch_grad_cam.score_cam", "pytorch_grad_cam.ablation_cam"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(module, "tqdm"):
            saved.append((module, module.tqdm))
            module.tqdm = _NoBars
    try:
        yield
    finally:
        for module, original in saved:
            module.tqdm = original


def adapter_maps(model: nn.Module, modules: dict[str, nn.Module], images: Tensor, classes: Any,
                 mechanism: str, resolve_classes: Callable[..., Tensor]
                 ) -> tuple[dict[str, Tensor], Tensor, Tensor]:
    """Unscaled maps {module name: (B, C, h, w)}, logits (B, N) and classes (B, C), one class per pass."""
    cam_class, target_class = _load(mechanism)
    modes = {m: m.training for m in model.modules()}
    saved_grads = [(p, p.grad) for p in model.parameters()]
    names = list(modules)
    cam = cam_class(model=model, target_layers=[modules[n] for n in names])
    try:
        with torch.enable_grad(), _without_inner_bars():
            for m, mode in modes.items():  # pytorch-grad-cam put the model in eval mode
                m.training = mode
            x = images.detach()
            if cam.uses_gradients:
                x = x.clone().requires_grad_(True)  # gradients reach the layers even for a frozen model
            logits = None
            idx = None
            # in eval mode a pass can skip the images whose class in this column is padding (-1): for
            # ScoreCAM and Ablation-CAM that is hundreds of forward passes per image saved
            subset = not any(modes.values())
            per_class: dict[str, list[Tensor]] = {n: [] for n in names}
            column = 0
            while idx is None or column < idx.shape[1]:
                rows = None
                if idx is None:
                    outputs = cam.activations_and_grads(x)
                    logits = outputs.detach()
                    spec = classes(logits) if callable(classes) else classes
                    idx = resolve_classes(spec, x.shape[0], logits.shape[1], logits.device)
                    if idx.shape[1] == 0:
                        break
                    xs = x
                elif subset:
                    rows = torch.nonzero(idx[:, column] >= 0).flatten()
                    xs = x[rows.to(x.device)]
                    if xs.shape[0] > 0:
                        outputs = cam.activations_and_grads(xs)
                else:
                    xs = x
                    outputs = cam.activations_and_grads(xs)
                wanted = idx[:, column] if rows is None else idx[rows, column]
                targets = [target_class(max(int(c), 0)) for c in wanted]
                if xs.shape[0] > 0:
                    if cam.uses_gradients:
                        loss = sum(t(o) for t, o in zip(targets, outputs))
                        loss.backward()
                    acts = [a.cpu().numpy() for a in cam.activations_and_grads.activations]
                    grads = [g.cpu().numpy() for g in cam.activations_and_grads.gradients]
                for i, n in enumerate(names):
                    if xs.shape[0] > 0:
                        a = acts[i]
                        g = grads[i] if i < len(grads) else None
                        img = torch.as_tensor(cam.get_cam_image(xs, modules[n], targets, a, g, False)).float()
                        img = img.clamp(min=0)
                    if rows is not None:  # back to the whole batch, zeros where the column is padding
                        full = torch.zeros((x.shape[0], *per_class[n][0].shape[1:]) if per_class[n] else
                                           (x.shape[0], *img.shape[1:]))
                        if xs.shape[0] > 0:
                            full[rows.cpu()] = img
                        img = full
                    per_class[n].append(img)
                cam.activations_and_grads.clear()
                column += 1
    finally:
        cam.activations_and_grads.release()
        for m, mode in modes.items():
            m.training = mode
        for p, g in saved_grads:
            p.grad = g
    assert logits is not None and idx is not None
    maps = {}
    for n in names:
        if per_class[n]:
            m = torch.stack(per_class[n], dim=1).to(images.device)
        else:
            m = images.new_zeros((images.shape[0], 0, 1, 1))
        maps[n] = m * (idx >= 0)[:, :, None, None].to(m.dtype)
    return maps, logits, idx
