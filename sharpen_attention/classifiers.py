"""Classifiers: torchvision VGG-19 and ResNet-18/50/101 with the last layer sized for the class count.

Weights: ``"none"`` (random initialisation), ``"imagenet"`` (torchvision's weights, downloaded
by torchvision for users with internet), or a path to a local state dict or checkpoint (for
offline use). ImageNet heads are dropped when loading: the new last layer starts at random.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn
from torchvision import models as tvm

from sharpen_core.checkpoints import CheckpointMismatch, load_checkpoint, read_state_dict

ARCHS: dict[str, tuple[Any, Any]] = {
    "resnet18": (tvm.resnet18, tvm.ResNet18_Weights.IMAGENET1K_V1),
    "resnet50": (tvm.resnet50, tvm.ResNet50_Weights.IMAGENET1K_V2),
    "resnet101": (tvm.resnet101, tvm.ResNet101_Weights.IMAGENET1K_V2),
    "vgg19": (tvm.vgg19, tvm.VGG19_Weights.IMAGENET1K_V1),
}


def head(model: nn.Module) -> nn.Linear:
    """The last (classification) layer."""
    if isinstance(model, tvm.ResNet):
        return model.fc
    if isinstance(model, tvm.VGG):
        return model.classifier[-1]
    raise TypeError(f"unsupported model {type(model).__name__}")


def _replace_head(model: nn.Module, num_classes: int) -> None:
    old = head(model)
    new = nn.Linear(old.in_features, num_classes)
    if isinstance(model, tvm.ResNet):
        model.fc = new
    else:
        model.classifier[-1] = new


def build_classifier(arch: str, num_classes: int, weights: str = "none") -> nn.Module:
    """A torchvision classifier for ``num_classes`` classes, randomly initialised or from ``weights``."""
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; expected one of: {', '.join(ARCHS)}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    factory, imagenet = ARCHS[arch]
    if weights == "imagenet":
        model = factory(weights=imagenet)
        _replace_head(model, num_classes)
        return model
    model = factory(weights=None, num_classes=num_classes)
    if weights not in ("none", "", None):
        path = Path(weights)
        state = read_state_dict(path)
        head_name = "fc" if arch.startswith("resnet") else "classifier.6"
        own = model.state_dict()
        body = {k: v for k, v in state.items() if not k.startswith(head_name + ".")}
        missing = [k for k in own if not k.startswith(head_name + ".") and k not in body]
        wrong = [k for k, v in body.items() if k in own and own[k].shape != v.shape]
        unexpected = [k for k in body if k not in own]
        if missing or wrong or unexpected:
            detail = (f"{len(missing)} missing (e.g. {missing[:2]}), {len(unexpected)} unexpected "
                      f"(e.g. {unexpected[:2]}), {len(wrong)} of another shape (e.g. {wrong[:2]})")
            raise CheckpointMismatch(f"{path}: weights do not fit {arch}: {detail}")
        model.load_state_dict(body, strict=False)
        head_w, head_b = state.get(head_name + ".weight"), state.get(head_name + ".bias")
        if head_w is not None and head_w.shape == own[head_name + ".weight"].shape and head_b is not None:
            head(model).load_state_dict({"weight": head_w, "bias": head_b})
    return model


def check_checkpoint(meta: dict[str, Any], arch: str, num_classes: int, source: str | Path) -> None:
    """Refuse a checkpoint made for another architecture or class count, saying which."""
    if meta.get("arch") != arch:
        raise CheckpointMismatch(f"{source}: checkpoint is for architecture {meta.get('arch')!r}, "
                                 f"but this run uses {arch!r}")
    if meta.get("num_classes") != num_classes:
        raise CheckpointMismatch(f"{source}: checkpoint is for {meta.get('num_classes')} classes, "
                                 f"but this dataset has {num_classes}")


def load_classifier(checkpoint: str | Path, num_classes: int, class_names: Sequence[str] | None = None,
                    device: torch.device | str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """The classifier of a ``classify train`` checkpoint, in eval mode on ``device``, checked against the dataset.

    The architecture comes from the checkpoint; its class count (and class names, when both
    sides have them) must match the dataset's.
    """
    state = load_checkpoint(checkpoint)
    if not isinstance(state, dict) or "model" not in state or "arch" not in state:
        raise ValueError(f"{checkpoint}: not a classifier checkpoint; expected checkpoint.pt from "
                         "`sharpen classify train`")
    check_checkpoint(state, state["arch"], num_classes, checkpoint)
    names = state.get("class_names")
    if class_names is not None and names is not None and list(names) != list(class_names):
        raise CheckpointMismatch(f"{checkpoint}: checkpoint classes {list(names)[:4]}... differ from the "
                                 f"dataset's {list(class_names)[:4]}...")
    model = build_classifier(state["arch"], num_classes)
    model.load_state_dict(state["model"])
    return model.to(device).eval(), state
