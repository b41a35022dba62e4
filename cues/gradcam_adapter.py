"""Thin adapter to pytorch-grad-cam's mechanisms (ScoreCAM, LayerCAM, XGradCAM, EigenCAM, ...).

Slower than the native mechanisms (one forward and backward pass per class, and for ScoreCAM and
Ablation-CAM many more forward passes) and not differentiable. The maps are pytorch-grad-cam's
unscaled ones (its ``get_cam_image`` followed by ReLU) at feature resolution, as torch tensors;
the caller resizes and normalises them as for the native mechanisms. The model's mode and its
parameters' ``.grad`` are restored afterwards (pytorch-grad-cam sets eval mode and calls
``backward``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn


INSTALL_HINT = "pip install -e '.[cams]'"
"""pytorch-grad-cam (PyPI ``grad-cam``) is an optional extra of this project."""


def gradcam_available() -> bool:
    """Whether pytorch-grad-cam can be imported (the adapter mechanisms need it)."""
    try:
        import pytorch_grad_cam  # noqa: F401
    except ImportError:
        return False
    return True


def _load(mechanism: str) -> Any:
    from cues.attention import ADAPTER_MECHANISMS

    try:
        import pytorch_grad_cam
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError:
        raise ImportError(f"mechanism {mechanism!r} needs pytorch-grad-cam, which is not installed: "
                          f"{INSTALL_HINT}") from None
    return getattr(pytorch_grad_cam, ADAPTER_MECHANISMS[mechanism]), ClassifierOutputTarget


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
        with torch.enable_grad():
            for m, mode in modes.items():  # pytorch-grad-cam put the model in eval mode
                m.training = mode
            x = images.detach()
            if cam.uses_gradients:
                x = x.clone().requires_grad_(True)  # gradients reach the layers even for a frozen model
            logits = None
            idx = None
            per_class: dict[str, list[Tensor]] = {n: [] for n in names}
            column = 0
            while idx is None or column < idx.shape[1]:
                outputs = cam.activations_and_grads(x)
                if idx is None:
                    logits = outputs.detach()
                    spec = classes(logits) if callable(classes) else classes
                    idx = resolve_classes(spec, x.shape[0], logits.shape[1], logits.device)
                    if idx.shape[1] == 0:
                        break
                targets = [target_class(max(int(c), 0)) for c in idx[:, column]]
                if cam.uses_gradients:
                    loss = sum(t(o) for t, o in zip(targets, outputs))
                    loss.backward()
                acts = [a.cpu().numpy() for a in cam.activations_and_grads.activations]
                grads = [g.cpu().numpy() for g in cam.activations_and_grads.gradients]
                for i, n in enumerate(names):
                    a = acts[i]
                    g = grads[i] if i < len(grads) else None
                    img = cam.get_cam_image(x, modules[n], targets, a, g, False)
                    per_class[n].append(torch.as_tensor(img).float().clamp(min=0))
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
