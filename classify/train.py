"""Stage 1: train a classifier, plain (``baseline``) or with ICASC (``icasc-gradcam``, ``icasc``, and
``<one of those>@<label>`` with its own ICASC loss settings from ``classify.variant_overrides``).

One epoch loop, readable top to bottom: seed, data, model, optimiser and schedule, then per
batch the classification loss plus, for ICASC variants, the attention separation losses on the
inner and last layers and the attention consistency loss, weighted and optionally ramped up
(docs/method.md §2, Eq. 6). A checkpoint is
written atomically after every epoch; ``resume`` continues from the last one with the same RNG
state, so an interrupted run ends with the same weights as an uninterrupted one. Under
``torchrun`` the model is wrapped in DistributedDataParallel and each process takes its share
of every global batch.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from sharpen_core.io import write_bytes_atomic
from sharpen_attention.attention import AttentionExtractor
from sharpen_attention.classifiers import build_classifier, check_checkpoint
from sharpen_core.checkpoints import (load_checkpoint, restore_training_state, save_checkpoint, training_state,
                                      unwrap)
from sharpen_core.config import VARIANT_NAME, ClassifyConfig, Config, ConfigError, dump_toml
from sharpen_core.errors import CheckpointMismatch, DatasetError, UsageError
from sharpen_core.device import DistInfo, barrier, seed_everything, training_device
from sharpen_core.records import config_part, fingerprint
from sharpen_core.optim import Schedule, optimizer_from_config
from sharpen_core.optim import make_scheduler as make_lr_scheduler
from sharpen_core.threads import apply_plan
from sharpen_core.layout import CHECKPOINT_NAME
from sharpen_core.stage_records import MetricsHistory

from .augment import crop_boxes, random_resized_crop
from .data import DecodedImages, SeededDataset, build_dataset, classification_transform, collate, collate_decoded
from .icasc import attention_consistency_loss, attention_ramp, attention_separation_loss, target_region

VARIANTS: dict[str, str | None] = {"baseline": None, "icasc-gradcam": "gradcam", "icasc": "channel"}
"""Variant name -> attention mechanism its ICASC losses use (None: classification loss only)."""

CHECKPOINT = CHECKPOINT_NAME
METRICS = MetricsHistory.FILE


def check_variant(variant: str) -> str | None:
    """The attention mechanism of ``variant``'s ICASC losses (None: the baseline); ``<base>@<label>`` is ``base``'s."""
    base = variant.split("@", 1)[0]
    if base not in VARIANTS or ("@" in variant and not VARIANT_NAME.fullmatch(variant)):
        raise ConfigError(f"unknown variant {variant!r}; expected one of: {', '.join(VARIANTS)}, or an ICASC one "
                          "+ '@<label>' (e.g. 'icasc@val') with a classify.variant_overrides table")
    if "@" in variant and VARIANTS[base] is None:
        raise ConfigError(f"variant {variant!r}: {base!r} has no ICASC losses to set per variant; use {base!r}")
    return VARIANTS[base]


def variant_config(cfg: Config, variant: str) -> Config:
    """The config ``variant`` trains with (docs/method.md §2.6): for ``<base>@<label>``, ``[classify]`` with
    ``classify.variant_overrides[variant]`` applied. The overrides table itself is emptied in every variant's
    config, so a checkpoint's config hash depends on the settings it was trained with only."""
    try:
        check_variant(variant)
    except ConfigError as e:
        raise ConfigError(f"{cfg.source}: {e}") from None
    overrides = cfg.classify.variant_overrides
    if "@" in variant and variant not in overrides:
        raise ConfigError(f"{cfg.source}: variant {variant!r} needs a [classify.variant_overrides.\"{variant}\"] "
                          f"table (its ICASC loss settings); tables given: {', '.join(overrides) or 'none'}")
    classify = dataclasses.replace(cfg.classify, **overrides.get(variant, {}), variant_overrides={})
    out = dataclasses.replace(cfg, classify=classify)
    out.source = cfg.source
    return out


# --------------------------------------------------------------------------- losses of one batch
def classification_loss(logits: Tensor, batch: dict[str, Any], multilabel: bool) -> Tensor:
    """Multi-label soft-margin loss on multi-hot labels, or cross-entropy on class indices."""
    if multilabel:
        return F.multilabel_soft_margin_loss(logits.float(), batch["label"].to(logits.device))
    return F.cross_entropy(logits.float(), batch["target"].to(logits.device))


def icasc_classes(logits: Tensor, batch: dict[str, Any], multilabel: bool) -> Tensor:
    """(B, 1 + G): column 0 the most confusing class, then the targets (padded with -1).

    Multi-label: every ground-truth class is a target; the most confusing class is the
    highest-scoring class that is not in the ground truth. Single-label: the label and the
    highest-scoring other class.
    """
    if multilabel:
        truth = batch["label"].to(logits.device) > 0.5
    else:
        truth = F.one_hot(batch["target"].to(logits.device), logits.shape[1]).bool()
    confusing = logits.detach().float().masked_fill(truth, float("-inf")).argmax(1)
    width = max(int(truth.sum(1).max()), 1)
    targets = torch.full((logits.shape[0], width), -1, dtype=torch.long, device=logits.device)
    for b in range(logits.shape[0]):
        cls = truth[b].nonzero().flatten()
        targets[b, :cls.numel()] = cls
    return torch.cat([confusing[:, None], targets], 1)


@dataclass
class IcascTerms:
    as_inner: Tensor
    as_last: Tensor
    ac: Tensor


def icasc_terms(maps_last: Tensor, maps_inner: Tensor, classes: Tensor, cfg: ClassifyConfig) -> IcascTerms:
    """L_AS^inner, L_AS^last and L_AC (Eq. 3-5) of a batch from max-normalised maps (B, 1 + G, h, w).

    Per image the terms are averaged over its target classes, then over the images that have one.
    """
    valid = classes[:, 1:] >= 0  # (B, G)
    b_idx, g_idx = valid.nonzero(as_tuple=True)
    t_last = maps_last[b_idx, g_idx + 1]
    c_last = maps_last[b_idx, 0]
    t_inner = maps_inner[b_idx, g_idx + 1]
    c_inner = maps_inner[b_idx, 0]
    region_last = target_region(t_last, cfg.sigma, cfg.omega, grad=cfg.target_region_grad)
    region_inner = target_region(t_last, cfg.sigma, cfg.omega, size=tuple(t_inner.shape[-2:]),
                                 grad=cfg.target_region_grad)
    per_pair = {
        "as_inner": attention_separation_loss(t_inner.float(), c_inner.float(), region_inner.float()),
        "as_last": attention_separation_loss(t_last.float(), c_last.float(), region_last.float()),
        "ac": attention_consistency_loss(t_inner.float(), region_inner.float(), cfg.theta, hinge=cfg.ac_hinge),
    }
    counts = valid.sum(1).clamp(min=1).float()
    has_target = valid.any(1)
    out = {}
    for name, values in per_pair.items():
        per_image = torch.zeros(classes.shape[0], device=values.device).index_add(0, b_idx, values) / counts
        out[name] = per_image[has_target].mean() if bool(has_target.any()) else values.sum() * 0.0
    return IcascTerms(**out)


def icasc_total(loss_cls: Tensor, terms: IcascTerms, c: ClassifyConfig, ramp: float = 1.0) -> Tensor:
    """Eq. 6 with §2.5's weights and ramp: ``L_cls + r·w1·L_AS^inner + r·w2·L_AS^last + r·w3·L_AC``.

    The products ``r·w`` are taken first (Python floats), so ``r = 1`` gives exactly the unramped sum.
    """
    return (loss_cls + (ramp * c.weight_as_inner) * terms.as_inner + (ramp * c.weight_as_last) * terms.as_last
            + (ramp * c.weight_ac) * terms.ac)


def compute_losses(model: nn.Module, extractor: AttentionExtractor | None, images: Tensor, batch: dict[str, Any],
                   c: ClassifyConfig, multilabel: bool, ramp: float = 1.0) -> tuple[Tensor, Tensor, IcascTerms | None]:
    """Eq. 6 for one batch: :func:`icasc_total` (ICASC) or ``L_cls`` (baseline).

    ICASC variants take the logits and the differentiable maps of the target and most confusing
    classes from the same forward pass. ``ramp``: the factor r of §2.5 (:func:`classify.icasc.attention_ramp`).
    """
    if extractor is None:
        logits = model(images)
        loss_cls = classification_loss(logits, batch, multilabel)
        return loss_cls, loss_cls, None
    result = extractor(images, classes=lambda lg: icasc_classes(lg, batch, multilabel), create_graph=True,
                       normalize=True, weight_grad=c.attention_weight_grad)
    terms = icasc_terms(result.maps["last"], result.maps["inner"], result.classes, c)
    loss_cls = classification_loss(result.logits, batch, multilabel)
    return icasc_total(loss_cls, terms, c, ramp), loss_cls, terms


# --------------------------------------------------------------------------- schedule
def make_scheduler(optimizer: torch.optim.Optimizer, cfg: ClassifyConfig, steps_per_epoch: int):
    """``classify.schedule`` over ``epochs × steps_per_epoch`` steps (step milestones in epochs), with
    its warm-up (sharpen_core/optim.py)."""
    try:
        schedule = Schedule(cfg.schedule, cfg.epochs * steps_per_epoch, cfg.warmup_steps, cfg.warmup_factor,
                            tuple(m * steps_per_epoch for m in cfg.milestones), cfg.gamma, cfg.poly_power)
    except ValueError as e:
        raise ConfigError(f"classify.schedule: {e}") from None
    return make_lr_scheduler(optimizer, schedule)


# --------------------------------------------------------------------------- training
def _dataset_args(cfg: Config) -> tuple[str, str, str, str]:
    c = cfg.classify
    root = c.dataset_root or cfg.data.root
    return c.dataset, root, c.train_split or cfg.data.train_split, c.val_split or cfg.data.val_split


@dataclass
class ClassifierTraining:
    """What one classifier run holds while it trains (from :func:`set_up_training`)."""

    cfg: Config
    variant: str
    out_dir: Path
    device: torch.device
    dist_info: DistInfo
    dataset: Any  # SeededDataset (classify.augment = "loader") or DecodedImages ("batch")
    sampler: torch.utils.data.DistributedSampler
    loader: torch.utils.data.DataLoader
    steps_per_epoch: int
    num_classes: int
    multilabel: bool
    class_names: Any
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    use_amp: bool
    extractor: AttentionExtractor | None
    start_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


AUGMENTS = ("batch", "loader")


def _training_data(cfg: Config, raw: Any, progress: bool) -> tuple[torch.utils.data.Dataset, Any, int]:
    """(dataset, collate, loader workers) of the training split, and torch's threads set.

    ``classify.augment = "batch"``: images decoded once to uint8 at ``image_size`` (kept in memory
    under ``data.cache_mib``), cropped and flipped per batch in this process (classify/augment.py);
    ``"loader"``: the per-sample transform (random rescale, resize, flip) in the loader.
    """
    c = cfg.classify
    if c.augment == "loader":
        transform = classification_transform(c.image_size, True, cfg.data.mean, cfg.data.std,
                                             cfg.data.scale_range, cfg.data.hflip)
        workers, _ = apply_plan(cfg.data.train_workers, cfg.data.num_workers, cfg.data.torch_threads, False)
        return SeededDataset(raw, transform, cfg.run.seed), collate, workers
    if c.augment != "batch":
        raise ConfigError(f"unknown classify.augment {c.augment!r}; expected one of: {', '.join(AUGMENTS)}")
    crop_boxes(0, 0, [0], c.crop_scale, c.crop_ratio)  # validates the ranges before any work
    dataset = DecodedImages(raw, c.image_size, cfg.data.cache_mib)
    if progress:
        dataset.cache.report()
    workers, _ = apply_plan(cfg.data.train_workers, cfg.data.num_workers, cfg.data.torch_threads,
                            dataset.cache.enabled)
    return dataset, collate_decoded, workers


def resume_state(cfg: Config, variant: str, ckpt_path: Path) -> dict[str, Any] | None:
    """The checkpoint in the output folder (None: none yet), refused when made for another variant or config."""
    if not ckpt_path.is_file():
        return None
    state = load_checkpoint(ckpt_path, "a checkpoint.pt written by `sharpen classify train`")
    if state.get("variant") != variant:
        raise CheckpointMismatch(f"{ckpt_path}: checkpoint is for variant {state.get('variant')!r}, not {variant!r}; "
                                 "use another output folder")
    if state.get("config_hash") != fingerprint(config_part(cfg, "classifier")):
        raise CheckpointMismatch(f"{ckpt_path}: checkpoint was made with another [classify]/[data] config or seed; "
                                 "use another output folder or delete it to start fresh")
    return state


def set_up_training(cfg: Config, variant: str, out_dir: Path, device: torch.device, dist_info: DistInfo,
                    state: dict[str, Any] | None, max_batches: int | None,
                    progress: bool = True) -> ClassifierTraining:
    """Seed, data, model, optimiser and schedule, restored from ``state`` when resuming; DDP under torchrun."""
    c = cfg.classify
    kind, root, train_split, _ = _dataset_args(cfg)
    seed_everything(cfg.run.seed)
    raw, num_classes, multilabel, class_names = build_dataset(kind, root, train_split)
    dataset, collate_fn, workers = _training_data(cfg, raw, progress and dist_info.is_main)
    if c.batch_size % dist_info.world_size:
        raise ConfigError(f"classify.batch_size {c.batch_size} is not divisible by {dist_info.world_size} processes")
    local_batch = c.batch_size // dist_info.world_size
    sampler = torch.utils.data.DistributedSampler(dataset, num_replicas=dist_info.world_size, rank=dist_info.rank,
                                                  shuffle=True, seed=cfg.run.seed, drop_last=True)
    loader = torch.utils.data.DataLoader(dataset, batch_size=local_batch, sampler=sampler, drop_last=True,
                                         num_workers=workers, collate_fn=collate_fn,
                                         pin_memory=device.type == "cuda")
    if max_batches is None and c.max_batches_per_epoch > 0:
        max_batches = c.max_batches_per_epoch
    steps_per_epoch = len(loader) if max_batches is None else min(len(loader), max_batches)
    if steps_per_epoch == 0:
        raise DatasetError(root, f"split {train_split!r} has {len(raw)} images, fewer than one batch of "
                           f"{c.batch_size}")

    torch.manual_seed(cfg.run.seed)
    model = build_classifier(c.arch, num_classes, c.weights, c.output_stride).to(device)
    use_amp = c.amp and device.type == "cuda"
    if c.channels_last and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = optimizer_from_config(c, model.parameters(), "classify")
    scheduler = make_scheduler(optimizer, c, steps_per_epoch)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    start_epoch = 0
    history: list[dict[str, Any]] = []
    if state is not None:
        check_checkpoint(state, c.arch, num_classes, out_dir / CHECKPOINT, c.output_stride)
        restore_training_state(state, model, optimizer, scheduler, scaler, device)
        start_epoch = state["epoch"]
        history = state["history"]
    if dist_info.distributed and device.type == "cuda" and c.sync_bn and not c.freeze_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if dist_info.distributed:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    if dist_info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(out_dir / "config.toml", dump_toml(cfg).encode())
    mechanism = check_variant(variant)
    extractor = AttentionExtractor(unwrap(model), layers=("last", "inner"), mechanism=mechanism) \
        if mechanism is not None else None
    return ClassifierTraining(cfg, variant, out_dir, device, dist_info, dataset, sampler, loader, steps_per_epoch,
                              num_classes, multilabel, class_names, model, optimizer, scheduler, scaler, use_amp,
                              extractor, start_epoch, history)


def train_step(t: ClassifierTraining, batch: dict[str, Any], epoch: int,
               ramp: float = 1.0) -> tuple[Tensor, Tensor, IcascTerms | None, int]:
    """One optimiser step on one batch: (loss, L_cls, ICASC terms or None, images); ``ramp`` as in
    :func:`compute_losses`.

    With ``classify.augment = "batch"`` the uint8 batch is cropped, flipped and normalised here, as a
    function of (seed, epoch, image) (classify/augment.py)."""
    c = t.cfg.classify
    images = batch["image"].to(t.device, non_blocking=True)
    if c.augment == "batch":
        boxes = crop_boxes(t.cfg.run.seed, epoch, batch["index"], c.crop_scale, c.crop_ratio, t.cfg.data.hflip)
        images = random_resized_crop(images, boxes, c.image_size, t.cfg.data.mean, t.cfg.data.std)
    if c.channels_last and t.device.type == "cuda":
        images = images.contiguous(memory_format=torch.channels_last)
    with torch.autocast(t.device.type, enabled=t.use_amp):
        loss, loss_cls, terms = compute_losses(t.model, t.extractor, images, batch, c, t.multilabel, ramp)
    t.optimizer.zero_grad(set_to_none=True)
    t.scaler.scale(loss).backward()
    if t.dist_info.distributed and t.extractor is not None:
        _allreduce_grads(t.model)
    t.scaler.step(t.optimizer)
    t.scaler.update()
    t.scheduler.step()
    return loss, loss_cls, terms, images.shape[0]


def train_epoch(t: ClassifierTraining, epoch: int, progress: bool, batches_run: int,
                stop_after_batches: int | None) -> tuple[dict[str, Any] | None, int]:
    """One epoch of :func:`train_step`: (its metrics record, batches run so far); record None when stopped.

    The record holds the mean total loss and the unweighted terms; with ``classify.attention_rampup_steps > 0``
    also ``attention_ramp``, the mean factor r (§2.5) over the epoch's steps (the terms' effective weight
    is r times the term's weight)."""
    c = t.cfg.classify
    t.model.train()
    if c.freeze_bn:
        for m in t.model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
    t.sampler.set_epoch(epoch)
    if isinstance(t.dataset, SeededDataset):
        t.dataset.set_epoch(epoch)
    sums = {"loss": 0.0, "cls": 0.0, "as_inner": 0.0, "as_last": 0.0, "ac": 0.0}
    ramp_sum, steps_run = 0.0, 0
    seen = 0
    t0 = time.perf_counter()
    bar = tqdm(total=t.steps_per_epoch, desc=f"{t.variant} epoch {epoch + 1}/{c.epochs}",
               disable=not (progress and t.dist_info.is_main), leave=False)
    for step, batch in enumerate(t.loader):
        if step >= t.steps_per_epoch:
            break
        if stop_after_batches is not None and batches_run >= stop_after_batches:
            bar.close()
            return None, batches_run
        ramp = attention_ramp(epoch * t.steps_per_epoch + step, c.attention_rampup_steps)  # global step: resume-safe
        loss, loss_cls, terms, n = train_step(t, batch, epoch, ramp)
        ramp_sum, steps_run = ramp_sum + ramp, steps_run + 1
        seen += n
        sums["loss"] += loss.item() * n
        sums["cls"] += loss_cls.item() * n
        if terms is not None:
            sums["as_inner"] += terms.as_inner.item() * n
            sums["as_last"] += terms.as_last.item() * n
            sums["ac"] += terms.ac.item() * n
        batches_run += 1
        bar.set_postfix({k: f"{v / seen:.3f}" for k, v in sums.items() if terms is not None or k in ("loss",)})
        bar.update(1)
    bar.close()
    record = {"epoch": epoch + 1, "lr": t.optimizer.param_groups[0]["lr"],
              "seconds": time.perf_counter() - t0, "images": seen * t.dist_info.world_size,
              **{f"train_{k}": v / max(seen, 1) for k, v in sums.items()}}
    if c.attention_rampup_steps > 0 and t.extractor is not None:
        record["attention_ramp"] = ramp_sum / max(steps_run, 1)
    return record, batches_run


def save_training(t: ClassifierTraining, epoch: int) -> None:
    """The checkpoint after ``epoch`` epochs (atomic) and metrics.json. Until the last epoch it holds
    everything a bit-exact resume needs; the last one holds the weights and history only (nothing is
    left to resume, and the optimiser state would double the file)."""
    c = t.cfg.classify
    resume = {} if epoch >= c.epochs else training_state(t.optimizer, t.scheduler, t.scaler, t.device)
    save_checkpoint(t.out_dir / CHECKPOINT, {
        "arch": c.arch, "output_stride": c.output_stride, "num_classes": t.num_classes, "variant": t.variant, "multilabel": t.multilabel,
        "class_names": t.class_names, "epoch": epoch, "config_hash": fingerprint(config_part(t.cfg, "classifier")),
        "model": unwrap(t.model).state_dict(), **resume, "history": t.history,
    })
    MetricsHistory(t.history).write(t.out_dir / METRICS)


def train_classifier(cfg: Config, variant: str, out_dir: str | Path, *, resume: bool = False,
                     progress: bool = True, max_batches: int | None = None,
                     stop_after_batches: int | None = None) -> dict[str, Any]:
    """Train ``variant`` per ``cfg`` into ``out_dir``; return the final metrics record.

    ``max_batches`` caps the batches per epoch (quick runs); ``stop_after_batches`` stops the
    run abruptly after that many batches in total, without a checkpoint for the unfinished
    epoch (used to test resumption).
    """
    cfg = variant_config(cfg, variant)
    c = cfg.classify
    out_dir = Path(out_dir)
    device, dist_info = training_device(cfg.run.device)
    ckpt_path = out_dir / CHECKPOINT
    state = resume_state(cfg, variant, ckpt_path)
    if state is not None and state["epoch"] >= c.epochs:
        if dist_info.is_main and progress:
            print(f"[classify {variant}] already trained ({ckpt_path}), skipped")
        history = MetricsHistory.read(out_dir / METRICS)
        return history.entries[-1] if history and history.entries else {}
    if state is not None and not resume:
        raise UsageError(f"{ckpt_path}: an unfinished run is here (epoch {state['epoch']}/{c.epochs}); "
                         "pass --resume to continue it, or use another output folder")

    t = set_up_training(cfg, variant, out_dir, device, dist_info, state, max_batches, progress)
    batches_run = 0
    for epoch in range(t.start_epoch, c.epochs):
        record, batches_run = train_epoch(t, epoch, progress, batches_run, stop_after_batches)
        if record is None:
            return {"interrupted": True, "epoch": epoch, "batches": batches_run}
        t.history.append(record)
        if dist_info.is_main:
            save_training(t, epoch + 1)
            if progress:
                print(f"[classify {variant}] epoch {epoch + 1}/{c.epochs} " +
                      " ".join(f"{k}={v:.4f}" for k, v in record.items() if k.startswith("train_")
                               and (t.extractor is not None or k in ("train_loss",))) +
                      f" ({record['seconds']:.1f} s)")
        barrier(dist_info)
    return t.history[-1] if t.history else {}


def _allreduce_grads(model: nn.Module) -> None:
    """Average gradients over processes by hand where DDP's hooks did not run.

    The ICASC forward goes through the unwrapped module (the attention hooks need it), so DDP's
    reducer never saw that forward; averaging the gradients here gives the same update.
    """
    import torch.distributed as dist

    world = dist.get_world_size()
    for p in unwrap(model).parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad.div_(world)
