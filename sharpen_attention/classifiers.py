"""Classifiers: torchvision VGG-19 and ResNet-18/50/101 with the last layer sized for the class count.

Output stride 32 (torchvision's), 16 or 8 (:func:`set_output_stride`): the last stages keep
their resolution, with dilated convolutions instead, as WSSS classifiers do. The stride is the
input size over the size of the last feature map before the head (ResNet: ``layer4``; VGG-19:
after ``pool5``; its attention layer conv5_4 sits before pool5, at stride 16, 16 and 8).

Weights: ``"none"`` (random initialisation), ``"imagenet"`` (torchvision's weights, downloaded
by torchvision for users with internet), or a path to a local state dict or checkpoint (for
offline use), or ``"builtin:<key>"`` (the built-in pretrained start, docs/method.md §8). ImageNet
heads and the built-in start's head are dropped when loading: the new last layer starts at random,
as a classifier fine-tuned from ImageNet does; a local file's head is kept when it fits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models as tvm

from sharpen_core.pretrained import is_builtin, weights_file
from sharpen_core.checkpoints import CheckpointMismatch, load_checkpoint, read_state_dict
from sharpen_core.errors import ConfigError

ARCHS: dict[str, tuple[Any, Any]] = {
    "resnet18": (tvm.resnet18, tvm.ResNet18_Weights.IMAGENET1K_V1),
    "resnet50": (tvm.resnet50, tvm.ResNet50_Weights.IMAGENET1K_V2),
    "resnet101": (tvm.resnet101, tvm.ResNet101_Weights.IMAGENET1K_V2),
    "vgg19": (tvm.vgg19, tvm.VGG19_Weights.IMAGENET1K_V1),
}


OUTPUT_STRIDES = (32, 16, 8)


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


class DenseMaxPool2d(nn.MaxPool2d):
    """A 2×2 max pooling at stride 1 that keeps the size, taps ``dilation`` apart: at every pixel what a
    stride-2 2×2 pooling gives at the pixels of its grid (the right/bottom border is replicated, which
    a max ignores). Subclasses MaxPool2d, so layer lookups that find pools still find it."""

    def __init__(self, dilation: int = 1):
        super().__init__(kernel_size=2, stride=1, dilation=dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = int(self.dilation)
        return F.max_pool2d(F.pad(x, (0, d, 0, d), mode="replicate"), 2, 1, 0, d)


def _dilate_conv(conv: nn.Conv2d, dilation: int) -> None:
    """Stride 1 and ``dilation`` for a 3×3 convolution (padding = dilation keeps the size); 1×1 get stride 1."""
    conv.stride = (1, 1)
    if conv.kernel_size == (3, 3):
        conv.dilation, conv.padding = (dilation, dilation), (dilation, dilation)


def _dilate_resnet_stage(stage: nn.Sequential, before: int) -> None:
    """Remove a ResNet stage's stride 2 (torchvision's rule for ``replace_stride_with_dilation``, for
    BasicBlock and Bottleneck alike): the strided convolution at dilation ``before``, every later one
    at ``2 × before``, the shortcut's 1×1 at stride 1. Evaluated at every other pixel the stage then
    computes exactly what the strided stage did."""
    for block in stage:
        for conv in (m for name, m in block.named_children() if name.startswith("conv")):
            _dilate_conv(conv, before if conv.stride == (2, 2) else 2 * before)
        if block.downsample is not None:
            block.downsample[0].stride = (1, 1)


def set_output_stride(model: nn.Module, output_stride: int) -> nn.Module:
    """Make a torchvision ResNet or VGG keep stride ``output_stride`` (32, 16 or 8) to its last feature
    map, in place: the stride-2 steps past it become stride 1 and the layers after them are dilated by
    the stride given up (ResNet: ``layer4`` for 16, ``layer3`` and ``layer4`` for 8; VGG: ``pool5`` for
    16, ``pool4`` and ``pool5`` for 8 (:class:`DenseMaxPool2d`), conv5 then at dilation 2). Weights keep
    their shapes, so ImageNet and other checkpoints still load."""
    if output_stride not in OUTPUT_STRIDES:
        raise ValueError(f"output stride must be one of {OUTPUT_STRIDES}, got {output_stride}")
    steps = {32: 0, 16: 1, 8: 2}[output_stride]
    if isinstance(model, tvm.ResNet):
        for k, stage in enumerate([model.layer3, model.layer4][2 - steps:]):
            _dilate_resnet_stage(stage, 2 ** k)
        return model
    if isinstance(model, tvm.VGG):
        feats = model.features
        pools = [i for i, m in enumerate(feats) if isinstance(m, nn.MaxPool2d)]
        if steps == 2:  # conv5 and pool5 follow the stride-1 pool4
            feats[pools[-2]] = DenseMaxPool2d(1)
            for m in list(feats)[pools[-2] + 1:pools[-1]]:
                if isinstance(m, nn.Conv2d):
                    _dilate_conv(m, 2)
        if steps >= 1:
            feats[pools[-1]] = DenseMaxPool2d(2 if steps == 2 else 1)
        return model
    raise TypeError(f"unsupported model {type(model).__name__}")


def build_classifier(arch: str, num_classes: int, weights: str = "none", output_stride: int = 32) -> nn.Module:
    """A torchvision classifier for ``num_classes`` classes at ``output_stride``, randomly
    initialised or from ``weights``."""
    if arch not in ARCHS:
        raise ConfigError(f"unknown architecture {arch!r}; expected one of: {', '.join(ARCHS)}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    if output_stride not in OUTPUT_STRIDES:
        raise ConfigError(f"classify.output_stride must be one of {OUTPUT_STRIDES}, got {output_stride}")
    model = _build(arch, num_classes, weights)
    return set_output_stride(model, output_stride) if output_stride != 32 else model


def _build(arch: str, num_classes: int, weights: str) -> nn.Module:
    factory, imagenet = ARCHS[arch]
    keep_head = not is_builtin(weights or "none")  # the pretrained start gives the body only (docs/method.md §8)
    weights = weights_file(weights or "none")  # "builtin:<key>" -> the cached file (sharpen_core/pretrained.py)
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
        if keep_head and head_w is not None and head_w.shape == own[head_name + ".weight"].shape and head_b is not None:
            head(model).load_state_dict({"weight": head_w, "bias": head_b})
    return model


def check_checkpoint(meta: dict[str, Any], arch: str, num_classes: int, source: str | Path,
                     output_stride: int | None = None) -> None:
    """Refuse a checkpoint made for another architecture, class count or output stride (None: any;
    a checkpoint without one was made at 32), saying which."""
    if meta.get("arch") != arch:
        raise CheckpointMismatch(f"{source}: checkpoint is for architecture {meta.get('arch')!r}, "
                                 f"but this run uses {arch!r}")
    if meta.get("num_classes") != num_classes:
        raise CheckpointMismatch(f"{source}: checkpoint is for {meta.get('num_classes')} classes, "
                                 f"but this dataset has {num_classes}")
    if output_stride is not None and meta.get("output_stride", 32) != output_stride:
        raise CheckpointMismatch(f"{source}: checkpoint is for output stride {meta.get('output_stride', 32)}, "
                                 f"but this run uses {output_stride} (classify.output_stride)")


def load_classifier(checkpoint: str | Path, num_classes: int, class_names: Sequence[str] | None = None,
                    device: torch.device | str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """The classifier of a ``classify train`` checkpoint, in eval mode on ``device``, checked against the dataset.

    The architecture and output stride come from the checkpoint; its class count (and class names, when both
    sides have them) must match the dataset's.
    """
    state = load_checkpoint(checkpoint, "a checkpoint.pt written by `sharpen classify train`")
    if not isinstance(state, dict) or "model" not in state or "arch" not in state:
        raise CheckpointMismatch(f"{checkpoint}: not a classifier checkpoint; expected checkpoint.pt from "
                                 "`sharpen classify train`")
    check_checkpoint(state, state["arch"], num_classes, checkpoint)
    names = state.get("class_names")
    if class_names is not None and names is not None and list(names) != list(class_names):
        raise CheckpointMismatch(f"{checkpoint}: checkpoint classes {list(names)[:4]}... differ from the "
                                 f"dataset's {list(class_names)[:4]}...")
    model = build_classifier(state["arch"], num_classes, output_stride=int(state.get("output_stride", 32)))
    model.load_state_dict(state["model"])
    return model.to(device).eval(), state
