"""Segmenters: DeepLab-LargeFOV (VGG-16, docs/method.md §4) and DeepLabV3+ (segmentation_models_pytorch).

Both take a (B, 3, H, W) image normalised with the ImageNet mean/std and return (B, L, h, w)
logits: LargeFOV at output stride 8 (a 321 px input gives 41×41), DeepLabV3+ at the input size
(any input size: it is padded to a multiple of the encoder's stride and the logits cropped back).

Weights: ``"none"`` (random initialisation), ``"imagenet"`` (torchvision's VGG-16 for LargeFOV's
convolutions, with fc6/fc7 decimated from the ImageNet fully-connected layers as DeepLab did; smp's
ImageNet encoder for V3+; both download, so only when asked), or a local file: a state dict (or a
checkpoint holding one under ``"model"``) of the backbone (a torchvision VGG-16 / ResNet or an smp
encoder) or of the whole segmenter. Keys that do not fit are reported, never silently dropped.

Checkpoints (:func:`save_segmenter`, :func:`load_segmenter`) hold ``{"meta": {...}, "model":
state dict, ...}`` and are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision import models as tvm

from sharpen_core.checkpoints import CheckpointMismatch, load_checkpoint, read_state_dict, save_checkpoint, unwrap
from sharpen_core.pretrained import weights_file
from sharpen_core.errors import ConfigError

SEGMENTERS: tuple[str, ...] = ("deeplab-largefov", "deeplabv3plus")
LARGEFOV_ENCODER = "vgg16"  # the only backbone of DeepLab-LargeFOV (what meta["encoder"] says)
META_KEYS = ("model", "encoder", "num_classes")

__all__ = ["SEGMENTERS", "CheckpointMismatch", "DeepLabLargeFOV", "build_segmenter", "last_layer", "param_groups",
           "save_segmenter", "load_segmenter", "unwrap", "largefov_output_size",
           "read_checkpoint", "check_segmenter_meta", "decimate_vgg_fc"]


# --------------------------------------------------------------------------- DeepLab-LargeFOV
class DeepLabLargeFOV(nn.Module):
    """DeepLab-LargeFOV (Chen et al. 2015) as SEC uses it (docs/method.md §4).

    ``features`` has the 31 modules of torchvision's ``vgg16().features`` at the same indices (so a
    torchvision VGG-16 state dict loads into it as is), with DeepLab's pooling: pool1-3 3×3 stride 2
    pad 1 (ceil mode, as Caffe), pool4-5 3×3 stride 1 pad 1, conv5 dilation 2. Then a 3×3 average
    pool (stride 1 pad 1), fc6 3×3 dilation 12 → 1024, ReLU, dropout, fc7 1×1 → 1024, ReLU, dropout,
    fc8 1×1 → L. Output stride 8: 321 → 161 → 81 → 41.
    """

    def __init__(self, num_classes: int = 21, dropout: float = 0.5):
        super().__init__()
        features = tvm.vgg.make_layers(tvm.vgg.cfgs["D"])  # vgg16().features, without building its classifier
        for m in features.modules():
            if isinstance(m, nn.Conv2d):  # torchvision's VGG initialisation
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        for i in (4, 9, 16):
            features[i] = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
        for i in (23, 30):
            features[i] = nn.MaxPool2d(3, stride=1, padding=1)
        for i in (24, 26, 28):
            features[i].dilation, features[i].padding = (2, 2), (2, 2)
        self.features = features
        self.pool5a = nn.AvgPool2d(3, stride=1, padding=1)
        self.fc6 = nn.Conv2d(512, 1024, 3, padding=12, dilation=12)
        self.drop6 = nn.Dropout(dropout)
        self.fc7 = nn.Conv2d(1024, 1024, 1)
        self.drop7 = nn.Dropout(dropout)
        self.fc8 = nn.Conv2d(1024, num_classes, 1)
        for m in (self.fc6, self.fc7):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        nn.init.normal_(self.fc8.weight, std=0.01)  # DeepLab's fc8 initialisation
        nn.init.zeros_(self.fc8.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool5a(self.features(x))
        x = self.drop6(F.relu(self.fc6(x), inplace=True))
        x = self.drop7(F.relu(self.fc7(x), inplace=True))
        return self.fc8(x)


def largefov_output_size(size: int) -> int:
    """Output side of LargeFOV for an input side: three ceil-mode 3×3/2 pools (321 → 41)."""
    for _ in range(3):
        size = size // 2 + 1  # ceil((size + 2 - 3) / 2) + 1
    return size


def decimate_vgg_fc(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """DeepLab's fc6/fc7 from VGG-16's ImageNet fully-connected layers: keep every 4th unit, and
    every 3rd position of fc6's 7×7 window (7×7 → 3×3, made dilated); 4096 → 1024 units.

    ``state`` holds ``classifier.0.*`` (4096, 25088) and ``classifier.3.*`` (4096, 4096) of a
    torchvision VGG-16; returns ``fc6.*`` (1024, 512, 3, 3) and ``fc7.*`` (1024, 1024, 1, 1).
    """
    w6 = state["classifier.0.weight"].reshape(-1, 512, 7, 7)[::4, :, ::3, ::3]
    w7 = state["classifier.3.weight"][::4, ::4]
    return {"fc6.weight": w6.contiguous(), "fc6.bias": state["classifier.0.bias"][::4].contiguous(),
            "fc7.weight": w7.reshape(*w7.shape, 1, 1).contiguous(),
            "fc7.bias": state["classifier.3.bias"][::4].contiguous()}


# --------------------------------------------------------------------------- DeepLabV3+
def _deeplabv3plus_class():
    import segmentation_models_pytorch as smp

    class DeepLabV3PlusAnySize(smp.DeepLabV3Plus):
        """smp's DeepLabV3+ that accepts any input size: the image is padded at the bottom and right
        with zeros (the mean colour after normalisation) to a multiple of the encoder's output
        stride, and the logits are cropped back to the input size."""

        def forward(self, x: Tensor) -> Tensor:
            h, w = x.shape[-2:]
            stride = int(self.encoder.output_stride)
            ph, pw = (-h) % stride, (-w) % stride
            if ph or pw:
                x = F.pad(x, (0, pw, 0, ph))
            return super().forward(x)[..., :h, :w]

    return DeepLabV3PlusAnySize


# --------------------------------------------------------------------------- building and weights


def _last_prefix(model: str) -> str:
    return "fc8." if model == "deeplab-largefov" else "segmentation_head.0."


def _as_segmenter_keys(model: str, state: dict[str, Tensor]) -> tuple[str, dict[str, Tensor], list[str]]:
    """(kind, state mapped to the segmenter's key names, keys dropped on purpose).

    kind is ``"full"`` (a whole segmenter) or ``"backbone"`` (a VGG-16 / ResNet / smp encoder).
    """
    if model == "deeplab-largefov":
        if any(k.startswith(("fc6.", "fc7.", "fc8.")) for k in state):
            return "full", dict(state), []
        body = {k: v for k, v in state.items() if not k.startswith("classifier.")}
        dropped = [k for k in state if k.startswith("classifier.")]
        cls0, cls3 = state.get("classifier.0.weight"), state.get("classifier.3.weight")
        if cls0 is not None and tuple(cls0.shape) == (4096, 25088) and cls3 is not None \
                and tuple(cls3.shape) == (4096, 4096) and "classifier.0.bias" in state and "classifier.3.bias" in state:
            body.update(decimate_vgg_fc(state))
            dropped = [k for k in dropped if not k.startswith(("classifier.0.", "classifier.3."))]
        return "backbone", body, dropped
    if any(k.startswith(("decoder.", "segmentation_head.")) for k in state):
        return "full", dict(state), []
    if all(k.startswith("encoder.") for k in state):
        return "backbone", dict(state), []
    dropped = [k for k in state if k.startswith("fc.")]  # a torchvision ResNet's ImageNet head
    return "backbone", {"encoder." + k: v for k, v in state.items() if not k.startswith("fc.")}, dropped


def _load_into(net: nn.Module, model: str, state: dict[str, Tensor], source: str) -> dict[str, Any]:
    """Load ``state`` (backbone or full segmenter) into ``net``; raise CheckpointMismatch listing what does not fit."""
    kind, mapped, dropped = _as_segmenter_keys(model, state)
    own = net.state_dict()
    last = _last_prefix(model)
    if kind == "full":
        wanted = [k for k in own if not k.startswith(last)]
    else:
        prefix = "features." if model == "deeplab-largefov" else "encoder."
        wanted = [k for k in own if k.startswith(prefix)]
    missing = [k for k in wanted if k not in mapped]
    unexpected = [k for k in mapped if k not in own]
    wrong = [f"{k} {tuple(mapped[k].shape)} vs {tuple(own[k].shape)}" for k in mapped
             if k in own and not k.startswith(last) and mapped[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        def show(keys: list[str]) -> str:
            return ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")

        raise CheckpointMismatch(
            f"{source}: weights (read as a {kind} state dict) do not fit {model}: "
            f"{len(missing)} missing [{show(missing)}], {len(unexpected)} unexpected [{show(unexpected)}], "
            f"{len(wrong)} of another shape [{show(wrong)}]; expected a state dict of the "
            f"{'whole segmenter' if kind == 'full' else 'backbone'}")
    head_fits = all(k in mapped and mapped[k].shape == own[k].shape for k in own if k.startswith(last))
    load = {k: v for k, v in mapped.items() if not k.startswith(last) or head_fits}
    net.load_state_dict(load, strict=False)
    return {"kind": kind, "loaded": len(load), "dropped": dropped, "last_layer_loaded": head_fits and kind == "full"}


def build_segmenter(model: str, encoder: str = "resnet50", num_classes: int = 21, weights: str = "none") -> nn.Module:
    """A segmenter for ``num_classes`` labels (background included), randomly initialised or from ``weights``.

    ``model``: one of :data:`SEGMENTERS`; ``encoder``: the smp encoder of DeepLabV3+ (ignored by
    LargeFOV, whose backbone is VGG-16). ``weights``: ``"none"`` | ``"imagenet"`` | a local file.
    """
    if model not in SEGMENTERS:
        raise ConfigError(f"unknown segmenter {model!r}; expected one of: {', '.join(SEGMENTERS)}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2 (background and one class), got {num_classes}")
    weights = weights_file(weights or "none")  # "builtin:<key>" -> the cached file (sharpen_core/pretrained.py)
    if model == "deeplab-largefov":
        net: nn.Module = DeepLabLargeFOV(num_classes)
        if weights == "imagenet":
            vgg = tvm.vgg16(weights=tvm.VGG16_Weights.IMAGENET1K_V1)
            _load_into(net, model, vgg.state_dict(), "torchvision VGG16_Weights.IMAGENET1K_V1")
    else:
        cls = _deeplabv3plus_class()
        try:
            net = cls(encoder_name=encoder, encoder_weights="imagenet" if weights == "imagenet" else None,
                      classes=num_classes)
        except KeyError as e:
            raise ConfigError(f"unknown DeepLabV3+ encoder {encoder!r} ({e}); expected a "
                              "segmentation_models_pytorch encoder name such as resnet50") from None
    if weights not in ("none", "imagenet"):
        path = Path(weights)
        _load_into(net, model, read_state_dict(path), str(path))
    return net


def last_layer(model: nn.Module) -> nn.Module:
    """The classification layer: LargeFOV's fc8, DeepLabV3+'s segmentation head conv."""
    model = unwrap(model)
    if isinstance(model, DeepLabLargeFOV):
        return model.fc8
    head = getattr(model, "segmentation_head", None)
    if head is not None and isinstance(head[0], nn.Conv2d):
        return head[0]
    raise TypeError(f"unsupported segmenter {type(model).__name__}")


def param_groups(model: nn.Module, lr: float, weight_decay: float, last_layer_lr_mult: float = 10.0
                 ) -> list[dict[str, Any]]:
    """Optimizer groups: every parameter at ``lr``, the last layer's at ``lr × last_layer_lr_mult`` (SEC: ×10)."""
    last = {id(p) for p in last_layer(model).parameters()}
    params = [p for p in unwrap(model).parameters() if p.requires_grad]
    return [
        {"name": "body", "params": [p for p in params if id(p) not in last], "lr": lr, "weight_decay": weight_decay},
        {"name": "last_layer", "params": [p for p in params if id(p) in last], "lr": lr * last_layer_lr_mult,
         "weight_decay": weight_decay},
    ]


# --------------------------------------------------------------------------- checkpoints
def save_segmenter(path: str | Path, model: nn.Module, meta: dict[str, Any], extra: dict[str, Any] | None = None
                   ) -> None:
    """Write ``{"meta": meta, "model": state dict, **extra}`` atomically (DDP unwrapped).

    ``meta`` holds at least ``model``, ``encoder`` and ``num_classes`` (plain Python values only:
    it is read back with ``weights_only=True``).
    """
    absent = [k for k in META_KEYS if k not in meta]
    if absent:
        raise ValueError(f"segmenter meta lacks {absent}; expected at least {list(META_KEYS)}")
    save_checkpoint(path, {**(extra or {}), "meta": dict(meta), "model": unwrap(model).state_dict()})


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw checkpoint dict (``weights_only=True``), with a clear error for a missing or bad file."""
    state = load_checkpoint(path, "a checkpoint.pt written by `sharpen segment train`")
    if not isinstance(state, dict) or not isinstance(state.get("meta"), dict) or not isinstance(state.get("model"), dict):
        raise CheckpointMismatch(f"{path}: not a segmenter checkpoint; expected one written by `sharpen segment train`")
    return state


def check_segmenter_meta(meta: dict[str, Any], source: str | Path, model: str | None = None,
                         encoder: str | None = None, num_classes: int | None = None) -> None:
    """Refuse a checkpoint made for another model, encoder or class count, saying which."""
    if model is not None and meta.get("model") != model:
        raise CheckpointMismatch(f"{source}: checkpoint is for model {meta.get('model')!r}, but this run uses {model!r}")
    if encoder is not None and meta.get("model") == "deeplabv3plus" and meta.get("encoder") != encoder:
        raise CheckpointMismatch(f"{source}: checkpoint is for encoder {meta.get('encoder')!r}, "
                                 f"but this run uses {encoder!r}")
    if num_classes is not None and meta.get("num_classes") != num_classes:
        raise CheckpointMismatch(f"{source}: checkpoint is for {meta.get('num_classes')} classes, "
                                 f"but this dataset has {num_classes}")


def load_segmenter(path: str | Path, device: str | torch.device = "cpu", num_classes: int | None = None, *,
                   model: str | None = None, encoder: str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """(segmenter in eval mode on ``device``, meta) from a checkpoint of :func:`save_segmenter`.

    ``num_classes`` / ``model`` / ``encoder``, when given, must match the checkpoint's
    (:class:`CheckpointMismatch` otherwise, naming both).
    """
    state = read_checkpoint(path)
    meta = state["meta"]
    check_segmenter_meta(meta, path, model, encoder, num_classes)
    net = build_segmenter(meta["model"], meta.get("encoder") or "resnet50", int(meta["num_classes"]))
    try:
        net.load_state_dict(state["model"])
    except RuntimeError as e:
        raise CheckpointMismatch(f"{path}: weights do not fit {meta['model']} ({e})") from None
    return net.to(device).eval(), meta
