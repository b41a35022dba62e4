"""One TOML file per run, read with the standard library into typed dataclasses.

Every stage reads the same :class:`Config`. Any key can be overridden from the command line
with ``--set section.key=value`` (the value is parsed as a TOML value, so ``--set
classify.lr=0.02``, ``--set cues.scales=[1.0,0.5]`` and ``--set data.root=/data/VOC`` all
work). An unknown section or key, or a value of the wrong type, is an error that names the key
and the file (or ``--set``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError as ConfigError  # re-exported; defined with the other user-facing errors


@dataclass
class RunConfig:
    """[run]: what every stage shares."""

    name: str = "run"
    seed: int = 0
    device: str = "auto"  # "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ...
    run_dir: str = "runs/default"
    # `sharpen run`: the stages to run (in pipeline order) and the cue sets, "<classifier variant>:<mechanism>"
    stages: list[str] = field(default_factory=lambda: ["data", "classify", "cues", "segment", "predict", "report"])
    cue_sets: list[str] = field(default_factory=lambda: ["baseline:gradcam", "baseline:gradcampp",
                                                         "baseline:channel", "icasc:channel"])
    # the cue sets that also get a SEC segmenter (and its prediction); the others are scored as cues only
    # (tau sweep, seed precision/recall). ["all"]: every entry of cue_sets.
    segment_cue_sets: list[str] = field(default_factory=lambda: ["all"])
    full_supervision: bool = True  # also train the fully-supervised reference segmenter
    submission: bool = True  # write (and, for the built-in dataset, score) a test-split submission of the best one


@dataclass
class DataConfig:
    """[data]: the dataset and how images are prepared (docs/method.md §7)."""

    root: str = "builtin_data"
    builtin: bool = False  # build the built-in dataset at `root` when it is missing
    builtin_size: str = "default"  # "small" | "medium" | "default"
    builtin_seed: int = 0
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"
    num_workers: int = 2  # loader processes (cue extraction, quality, prediction; training when not cached)
    cache_mib: int = 1024  # training stages keep the split's decoded images in memory when they fit (0 = off)
    train_workers: int = -1  # loader processes of the training stages; -1 = 0 when cached, else num_workers
    torch_threads: int = 0  # torch intra-op threads of the training stages; 0 = the cores the workers leave
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    scale_range: list[float] = field(default_factory=lambda: [0.7, 1.3])
    hflip: bool = True


@dataclass
class ClassifyConfig:
    """[classify]: classifier training, plain or ICASC (docs/method.md §2-3)."""

    arch: str = "resnet18"  # resnet18 | resnet50 | resnet101 | vgg19
    output_stride: int = 32  # 32 | 16 | 8: the last stages dilated instead of strided (classify/models.py)
    dataset: str = "voc"  # "voc" (VOC layout, multi-label) | "imagefolder" | "cifar100" | "cub200"
    dataset_root: str = ""  # for the single-label kinds; "" = data.root
    train_split: str = ""  # "" = data.train_split
    val_split: str = ""  # "" = data.val_split
    weights: str = "none"  # "none" | "imagenet" | "builtin" (the built-in pretrained start, [pretrain]) | a local file
    # "baseline" | "icasc-gradcam" | "icasc", or "<one of those>@<label>": that variant with the ICASC loss keys of
    # variant_overrides["<name>"] (e.g. the paper's setting and one chosen on val side by side; docs/method.md §2.6)
    variants: list[str] = field(default_factory=lambda: ["baseline", "icasc-gradcam", "icasc"])
    image_size: int = 299
    augment: str = "batch"  # "batch" (crop + flip of uint8 batches in the training process) | "loader" (per sample)
    crop_scale: list[float] = field(default_factory=lambda: [1.0, 1.0])  # random-resized crop area fraction ("batch")
    crop_ratio: list[float] = field(default_factory=lambda: [1.0, 1.0])  # its aspect ratio range, e.g. [0.75, 1.333]
    batch_size: int = 16
    epochs: int = 20
    max_batches_per_epoch: int = 0  # 0 = the whole split; >0 caps each epoch (quick runs, smoke tests)
    optimizer: str = "sgd"  # "sgd" (the paper's) | "adamw" (docs/method.md §3; sharpen_core/optim.py)
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = False  # SGD only
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # AdamW only
    weight_decay: float = 1e-4
    schedule: str = "cosine"  # "cosine" (one cycle) | "step" (at `milestones`, epochs) | "poly" | "onecycle"
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1
    poly_power: float = 0.9
    warmup_steps: int = 0  # linear warm-up steps from warmup_factor x lr (onecycle: its rise; 0 = 30 %)
    warmup_factor: float = 0.1
    sigma: float = 0.55  # target-region threshold σ (Eq. 4)
    omega: float = 100.0  # target-region sharpness ω (Eq. 4)
    theta: float = 0.8  # consistency margin θ (Eq. 5)
    weight_as_inner: float = 1.0
    weight_as_last: float = 1.0
    weight_ac: float = 1.0
    ac_hinge: bool = False  # L_AC = max(0, θ − ...) (docs/method.md §2.4); false: unclipped, as the public code
    attention_rampup_steps: int = 0  # the attention terms' weight rises linearly 0 -> 1 over these optimiser steps (§2.5)
    # "<variant>@<label>" -> {key: value} of VARIANT_OVERRIDE_KEYS, e.g. [classify.variant_overrides."icasc@val"]
    variant_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    target_region_grad: bool = False
    attention_weight_grad: bool = True  # ICASC maps differentiable through α too (docs/method.md §1); false: through A only
    amp: bool = True
    channels_last: bool = True
    freeze_bn: bool = False  # BatchNorm in eval mode (running statistics), e.g. to fine-tune with small batches
    sync_bn: bool = True  # SyncBatchNorm under DDP on CUDA (CPU/gloo DDP keeps per-process statistics)


@dataclass
class CuesConfig:
    """[cues]: attention extraction and SEC localization cues (docs/method.md §4, §6)."""

    scales: list[float] = field(default_factory=lambda: [1.0, 0.5, 1.5, 2.0])
    flip: bool = True
    fg_threshold: float = 0.2
    bg_rule: str = "lowest"  # "lowest" attention fraction | "saliency"
    bg_fraction: float = 0.1
    storage: str = "float16"  # "float16" | "uint8"
    batch_size: int = 8
    # attention layer: "last" | "inner" | a module name (docs/method.md §1; inner = ResNet layer3 / VGG-19 conv4_4). At a
    # ResNet's last layer (GAP + linear head) g^c = W[c]/Z everywhere: Grad-CAM = CAM and Grad-CAM++ = channel-
    # weighted up to a per-channel scale; the mechanisms differ only at an inner layer or on VGG-19's conv5_4.
    layer: str = "last"
    classes: str = "gt"  # maps for the image's ground-truth classes ("gt") or all classes ("all")
    scale_base: str = "image"  # scales multiply the original image size ("image") or classify.image_size ("classify")
    scale_average: str = "normalized"  # average per-pass max-normalised maps ("normalized") or raw ones ("raw")
    grid: int = 41  # SEC cue grid (the segmenter's output size, 41 for 321 px input); 0 = image size
    saliency_dir: str = ""  # folder of <id>.png saliency maps (grey, high = salient), for bg_rule = "saliency"


@dataclass
class SegmentConfig:
    """[segment]: SEC training of the segmenter, CRF and prediction (docs/method.md §4-5)."""

    model: str = "deeplab-largefov"  # "deeplab-largefov" | "deeplabv3plus"
    encoder: str = "resnet50"  # for deeplabv3plus
    weights: str = "none"  # "none" | "imagenet" | "builtin" (the encoder from the built-in pretrained start) | a file
    crop_size: int = 321  # training input side: the whole image is resized to crop_size x crop_size (as SEC)
    batch_size: int = 15
    iterations: int = 8000
    optimizer: str = "sgd"  # "sgd" (SEC's) | "adamw" (sharpen_core/optim.py)
    lr: float = 1e-3
    momentum: float = 0.9
    nesterov: bool = False  # SGD only
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # AdamW only
    weight_decay: float = 5e-4
    schedule: str = "step"  # "step" (x gamma every lr_step) | "poly" | "cosine" | "onecycle"
    lr_step: int = 2000
    gamma: float = 0.1
    poly_power: float = 0.9
    warmup_steps: int = 0  # linear warm-up iterations from warmup_factor x lr (onecycle: its rise; 0 = 30 %)
    warmup_factor: float = 0.1
    last_layer_lr_mult: float = 10.0
    decay_fg: float = 0.996
    decay_bg: float = 0.999
    crf_bilateral_weight: float = 10.0
    crf_bilateral_sxy: float = 80.0
    crf_bilateral_srgb: float = 13.0
    crf_gaussian_weight: float = 3.0
    crf_gaussian_sxy: float = 3.0
    crf_iterations: int = 10
    crf_processes: int = 2
    # test-time CRF shrink factor s (docs/method.md §5.1): a number (1.0 = DeepLab's VOC values) | "image" (500 / long side)
    crf_predict_scale: float | str = 1.0
    predict_scales: list[float] = field(default_factory=lambda: [1.0])
    predict_flip: bool = True
    predict_crf: str = "both"  # "on" | "off" | "both": write CRF-refined predictions, plain ones, or both
    amp: bool = True
    supervision: str = "sec"  # "sec" (from cues) | "full" (cross-entropy on ground-truth masks, the upper bound)
    seed_weight: float = 1.0  # SEC loss weights (docs/method.md §4: unit weights)
    expand_weight: float = 1.0
    constrain_weight: float = 1.0
    # s of docs/method.md §5.1 for the constrain loss's CRF: a number (12: SEC's, 41x41 grid) | "grid" (12 * 41 / grid side)
    crf_train_scale: float | str = 12.0
    crf_train_labels: str = "all"  # constrain loss's CRF over "all" labels, floored at 1e-4 (SEC) | "present" ones
    checkpoint_every: int = 200  # iterations between atomic checkpoints (and one at the end)
    flip: bool = True  # random horizontal flip in training


@dataclass
class EvalConfig:
    """[eval]: metric settings (docs/method.md §6)."""

    tau_min: float = 0.0  # the τ sweep covers the maps' whole range [0, 1] (docs/method.md §6.2)
    tau_max: float = 1.0
    tau_step: float = 0.01
    cue_split: str = ""  # split on which `sharpen run` scores the cues ("" = data.train_split; VOC: "train")


@dataclass
class PretrainConfig:
    """[pretrain]: the built-in "ImageNet" (docs/method.md §8). With ``classify.weights`` and/or
    ``segment.weights = "builtin"``, every network of the comparison starts from one classifier trained
    once on a separate, larger built-in set (images from streams of their own: never a train, val or
    test image), kept in a per-machine cache keyed by these settings (sharpen_core/pretrained.py)."""

    size: str = "pretrain"  # the built-in size of the pretraining set (data/builtin: BUILTIN_SIZES)
    seed: int = 0  # its generator seed
    train_seed: int = 0  # the training's seed
    arch: str = ""  # "" = classify.arch
    image_size: int = 64
    output_stride: int = 32
    batch_size: int = 32
    epochs: int = 6
    max_batches_per_epoch: int = 0
    optimizer: str = "adamw"
    lr: float = 2e-3
    weight_decay: float = 0.05
    schedule: str = "onecycle"
    crop_scale: list[float] = field(default_factory=lambda: [0.5, 1.0])


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    classify: ClassifyConfig = field(default_factory=ClassifyConfig)
    cues: CuesConfig = field(default_factory=CuesConfig)
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    source: str = field(default="<defaults>", compare=False)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("source")
        return d


# Keys that existed once: a config naming one gets this message instead of "unknown key".
REMOVED_KEYS: dict[str, str] = {
    "cues.mechanisms": "it was never read; the mechanisms compared are those of run.cue_sets "
                       "(\"<classifier variant>:<mechanism>\" entries)",
}

# Keys whose value must be >= 0.
NON_NEGATIVE: frozenset[str] = frozenset({"classify.weight_as_inner", "classify.weight_as_last", "classify.weight_ac",
                                          "classify.attention_rampup_steps"})

# The [classify] keys a variant "<base>@<label>" may set in classify.variant_overrides: ICASC's loss (docs/method.md §2).
VARIANT_OVERRIDE_KEYS: tuple[str, ...] = ("sigma", "omega", "theta", "weight_as_inner", "weight_as_last", "weight_ac",
                                          "ac_hinge", "attention_rampup_steps", "target_region_grad",
                                          "attention_weight_grad")
VARIANT_NAME = re.compile(r"[A-Za-z0-9_-]+@[A-Za-z0-9_.-]+")

_SECTION_TYPES: dict[str, type] = {
    "run": RunConfig, "data": DataConfig, "classify": ClassifyConfig,
    "cues": CuesConfig, "segment": SegmentConfig, "eval": EvalConfig, "pretrain": PretrainConfig,
}


def _check_value(value: Any, annotation: Any, where: str) -> Any:
    """Return ``value`` converted to the field's type, or raise ConfigError naming ``where``."""
    if annotation is Any:
        return value
    origin = typing.get_origin(annotation)
    if origin is dict:
        key_type, item_type = typing.get_args(annotation)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return {_check_value(k, key_type, f"{where}"): _check_value(v, item_type, f"{where}.{k}")
                for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            try:
                return _check_value(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: value {value!r} has the wrong type; expected {annotation}")
    if origin is list:
        (item_type,) = typing.get_args(annotation)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_check_value(v, item_type, f"{where}[{i}]") for i, v in enumerate(value)]
    if annotation is type(None):
        if value is not None:
            raise ConfigError(f"{where}: expected nothing, got {value!r}")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported field type {annotation}")  # pragma: no cover


def _section_from_dict(section: str, values: dict[str, Any], source: str) -> Any:
    cls = _SECTION_TYPES[section]
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        _refuse_removed(f"{section}.{key}", source)
        if key not in known:
            raise ConfigError(
                f"{source}: unknown key '{section}.{key}'; valid keys of [{section}]: {', '.join(sorted(known))}"
            )
        kwargs[key] = _check_value(value, hints[key], f"{source}: {section}.{key}")
        _check_range(f"{section}.{key}", kwargs[key], f"{source}: {section}.{key}")
    if section == "classify" and "variant_overrides" in kwargs:
        kwargs["variant_overrides"] = _check_variant_overrides(kwargs["variant_overrides"], hints, source)
    return cls(**kwargs)


def _check_range(key: str, value: Any, where: str) -> None:
    if key in NON_NEGATIVE and value < 0:
        raise ConfigError(f"{where}: expected a value >= 0, got {value!r}")


def _check_variant_overrides(tables: dict[str, dict[str, Any]], hints: dict[str, Any],
                             source: str) -> dict[str, dict[str, Any]]:
    """classify.variant_overrides: names "<variant>@<label>", keys of VARIANT_OVERRIDE_KEYS with their types."""
    out = {}
    for name, table in tables.items():
        where = f"{source}: classify.variant_overrides.{name}"
        if not VARIANT_NAME.fullmatch(name):
            raise ConfigError(f"{where}: a variant with overrides is named '<variant>@<label>' (letters, digits, "
                              f"'_', '-', and '.' in the label), e.g. 'icasc@val'; got {name!r}")
        out[name] = {}
        for key, value in table.items():
            if key not in VARIANT_OVERRIDE_KEYS:
                raise ConfigError(f"{where}.{key}: not settable per variant; settable keys: "
                                  f"{', '.join(VARIANT_OVERRIDE_KEYS)}")
            out[name][key] = _check_value(value, hints[key], f"{where}.{key}")
            _check_range(f"classify.{key}", out[name][key], f"{where}.{key}")
    return out


def _refuse_removed(key: str, where: str) -> None:
    if key in REMOVED_KEYS:
        raise ConfigError(f"{where}: config key '{key}' was removed: {REMOVED_KEYS[key]}; delete it")


def config_from_dict(raw: dict[str, Any], source: str = "<dict>") -> Config:
    """Build a Config from a nested dict (as TOML gives), rejecting unknown sections and keys."""
    sections = {}
    for name, values in raw.items():
        if name not in _SECTION_TYPES:
            raise ConfigError(
                f"{source}: unknown section [{name}]; valid sections: {', '.join(_SECTION_TYPES)}"
            )
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: '{name}' must be a [{name}] table, got {values!r}")
        sections[name] = _section_from_dict(name, values, source)
    if "segment" in sections:
        _check_crf_scales(sections["segment"], source)
    return Config(**sections, source=source)


# segment.<key>: the word it takes besides a positive number (docs/method.md §5.1)
CRF_SCALE_RULES = {"crf_predict_scale": "image", "crf_train_scale": "grid"}


def _check_crf_scales(seg: SegmentConfig, source: str) -> None:
    for key, rule in CRF_SCALE_RULES.items():
        value = getattr(seg, key)
        if value == rule or (isinstance(value, float) and math.isfinite(value) and value > 0):
            continue
        raise ConfigError(f"{source}: segment.{key} = {value!r}; expected a positive number or {rule!r}")


def parse_override(text: str) -> tuple[str, str, Any]:
    """Parse ``section.key=value``; the value is read as TOML, else taken as a plain string."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected section.key=value")
    dotted, raw_value = text.split("=", 1)
    parts = dotted.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"--set {text!r}: expected section.key=value, e.g. classify.lr=0.02")
    try:
        value = tomllib.loads(f"v = {raw_value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw_value.strip()
    return parts[0], parts[1], value


def apply_overrides(raw: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    raw = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    for text in overrides or []:
        section, key, value = parse_override(text)
        if section not in _SECTION_TYPES:
            raise ConfigError(f"--set {text!r}: unknown section [{section}]; valid sections: {', '.join(_SECTION_TYPES)}")
        known = {f.name for f in dataclasses.fields(_SECTION_TYPES[section])}
        _refuse_removed(f"{section}.{key}", f"--set {text!r}")
        if key not in known:
            raise ConfigError(
                f"--set {text!r}: unknown key '{section}.{key}'; valid keys of [{section}]: {', '.join(sorted(known))}"
            )
        raw.setdefault(section, {})[key] = value
    return raw


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a TOML config (defaults when ``path`` is None) and apply ``--set`` overrides."""
    raw: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            raw = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML ({e})") from None
    # Validate the file before the overrides, so an error names the file, not --set.
    config_from_dict(raw, source)
    merged = apply_overrides(raw, overrides)
    cfg = config_from_dict(merged, source + (" with --set overrides" if overrides else ""))
    cfg.source = source
    return cfg


def dump_toml(cfg: Config) -> str:
    """The config as TOML text (what a stage saves next to its outputs)."""
    lines: list[str] = []
    for section, values in cfg.to_dict().items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {value!r} as TOML")
