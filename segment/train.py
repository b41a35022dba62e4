"""Stage 3: train a segmenter from SEC cues (seed, expand, constrain; docs/method.md §4) or from ground-truth
masks (``supervision="full"``, the fully-supervised reference).

Iteration-based, readable top to bottom: the run's identity (config hash) and any checkpoint in
``out_dir``, the data (the whole image resized to ``crop_size``², its cues or mask), the model,
SGD or AdamW with the last layer at ``last_layer_lr_mult``× the learning rate, the schedule,
then per iteration one batch and one optimizer step. The batches are a pure function of (seed,
iteration) (:class:`IterationBatchSampler`), flips a pure function of (seed, epoch, image), and
the checkpoint holds the RNG state, so ``resume`` continues bit-exactly (on CPU) from the last
checkpoint. Under ``torchrun`` every process takes its slice of each global batch, DDP averages
the gradients, and rank 0 writes.

SEC step (per batch): logits, bilinearly resized to the cue grid when the network's output grid
differs, ``p = sec_probabilities(logits)``, then ``L = w_s·L_seed(p, cues) + w_e·L_expand(p, labels)
+ w_c·L_constrain(p, Q)`` with ``Q`` the dense CRF of the image shrunk to the grid and ``p``
(detached), over all labels floored at 1e-4 as SEC (or the labels present in the image), computed by a CRF process pool while the seeding
and expansion losses are formed.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from data.classes import IGNORE_INDEX
from sharpen_core.io import write_bytes_atomic, write_json_atomic
from data.voc import VOCSegmentation
from sharpen_core.config import Config, SegmentConfig, dump_toml
from sharpen_core.errors import ConfigError, UsageError
from sharpen_core.checkpoints import restore_training_state, training_state
from sharpen_core.device import DistInfo, barrier, seed_everything, training_device
from sharpen_core.records import config_part, fingerprint
from sharpen_core.optim import Schedule, optimizer_from_config
from sharpen_core.optim import make_scheduler as make_lr_scheduler
from sharpen_core.threads import apply_plan
from sharpen_core.layout import CHECKPOINT_NAME
from sharpen_core.stage_records import MetricsHistory

from .crf import CRFParams, CRFPool, train_scale
from .data import SegTrainDataset, check_supervision, collate, read_cue_record
from .losses import constrain_loss, expansion_loss, floor_crf_probs, rescaled_decay, sec_probabilities, seeding_loss
from .models import CheckpointMismatch, build_segmenter, check_segmenter_meta, param_groups, read_checkpoint, \
    save_segmenter

CHECKPOINT = CHECKPOINT_NAME
METRICS = MetricsHistory.FILE
RECORD = "train.json"
TERMS = ("seed", "expand", "constrain")



# --------------------------------------------------------------------------- run identity
def run_hash(cfg: Config, supervision: str, cue_record: dict[str, Any] | None) -> str:
    """A short hash of what decides the trained weights: the config keys a segmenter depends on
    (``sharpen_core.records.DEPENDS["segmenter"]``), the supervision and the cue folder's parameters."""
    payload = config_part(cfg, "segmenter")
    payload.update(supervision=supervision,
                   cues=None if cue_record is None else {"params": cue_record.get("params"),
                                                         "extract": cue_record.get("extract")})
    return fingerprint(payload)


# --------------------------------------------------------------------------- batches
class IterationBatchSampler(torch.utils.data.Sampler):
    """The (epoch, index) keys of each iteration's batch, for iterations ``start .. iterations - 1``.

    The global batch of iteration ``t`` is the ``t mod E``-th run of ``batch_size`` indices of a
    permutation of the dataset seeded by (seed, epoch = ``t div E``), with ``E = n div batch_size``
    batches per epoch (the last incomplete batch of an epoch is dropped). Process ``rank`` of
    ``world_size`` takes the ``rank``-th contiguous slice of it. So the batches depend on neither
    the number of loader workers nor the point a run was resumed from.
    """

    def __init__(self, n: int, batch_size: int, iterations: int, start: int = 0, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        if batch_size % world_size:
            raise ConfigError(f"segment.batch_size {batch_size} is not divisible by {world_size} processes")
        if n < batch_size:
            raise ConfigError(f"segment.batch_size {batch_size}: the split has {n} images, fewer than one batch of {batch_size}")
        self.n, self.batch_size, self.iterations, self.start, self.seed = n, batch_size, iterations, start, seed
        self.rank, self.world_size = rank, world_size
        self.per_epoch = n // batch_size
        self.local = batch_size // world_size

    def permutation(self, epoch: int) -> list[int]:
        digest = hashlib.blake2b(f"{self.seed}/perm/{epoch}".encode(), digest_size=8).digest()
        g = torch.Generator().manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))
        return torch.randperm(self.n, generator=g).tolist()

    def global_batch(self, iteration: int) -> tuple[int, list[int]]:
        epoch, pos = divmod(iteration, self.per_epoch)
        return epoch, self.permutation(epoch)[pos * self.batch_size:(pos + 1) * self.batch_size]

    def __len__(self) -> int:
        return max(0, self.iterations - self.start)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        cached: tuple[int, list[int]] | None = None
        for it in range(self.start, self.iterations):
            epoch, pos = divmod(it, self.per_epoch)
            if cached is None or cached[0] != epoch:
                cached = (epoch, self.permutation(epoch))
            batch = cached[1][pos * self.batch_size:(pos + 1) * self.batch_size]
            yield [(epoch, i) for i in batch[self.rank * self.local:(self.rank + 1) * self.local]]


# --------------------------------------------------------------------------- schedule
def segment_schedule(cfg: SegmentConfig) -> Schedule:
    """``segment.schedule`` over ``iterations`` (step: ×gamma every ``lr_step``), with its warm-up
    (sharpen_core/optim.py)."""
    milestones = tuple(range(cfg.lr_step, cfg.iterations + 1, cfg.lr_step)) if cfg.lr_step > 0 else ()
    try:
        return Schedule(cfg.schedule, cfg.iterations, cfg.warmup_steps, cfg.warmup_factor, milestones, cfg.gamma,
                        cfg.poly_power)
    except ValueError as e:
        raise ConfigError(f"segment.schedule: {e}") from None


def lr_factor(iteration: int, cfg: SegmentConfig) -> float:
    """Learning-rate multiplier at ``iteration``: e.g. ``gamma^(it div lr_step)`` (step), ``(1 - it/iters)^power`` (poly)."""
    return segment_schedule(cfg).factor(iteration)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: SegmentConfig) -> torch.optim.lr_scheduler.LambdaLR:
    return make_lr_scheduler(optimizer, segment_schedule(cfg))


# --------------------------------------------------------------------------- losses of one batch
def present_labels(labels: Tensor) -> list[list[int]]:
    """Per image the labels present (background 0 and the image's classes), from (B, L) multi-hot."""
    return [torch.nonzero(row > 0.5).flatten().tolist() for row in labels.cpu()]


CRF_TRAIN_LABELS = ("all", "present")


def crf_train_labels(labels: Tensor, mode: str) -> list[list[int] | None]:
    """Per image the labels the constrain loss's CRF runs over (docs/method.md §5): every label
    (``"all"``, SEC's reference code: None = all planes) or the present ones (``"present"``)."""
    if mode == "all":
        return [None] * labels.shape[0]
    if mode == "present":
        return present_labels(labels)
    raise ConfigError(f"unknown segment.crf_train_labels {mode!r}; expected one of: {', '.join(CRF_TRAIN_LABELS)}")


def sec_losses(logits: Tensor, batch: dict[str, Any], cfg: SegmentConfig, pool: CRFPool) -> dict[str, Tensor]:
    """The three SEC terms of a batch (docs/method.md §4) and their weighted sum ``loss``.

    ``logits`` (B, L, h, w) are resized bilinearly to the cue grid (g, g) when (h, w) differs.
    The constrain term's ``Q`` is the CRF (docs/method.md §5, shrink factor ``crf_train_scale``: a number or
    "grid", :func:`segment.crf.train_scale`) of
    ``batch["small_image"]`` with the detached probabilities, over all labels (floored at 1e-4 and
    renormalised, as SEC) or the labels present in each image (``crf_train_labels``); it runs in
    ``pool`` while the other two terms are formed.
    """
    cues = batch["cues"].to(logits.device, non_blocking=True)
    grid = tuple(cues.shape[-2:])
    logits = logits.float()
    if tuple(logits.shape[-2:]) != grid:
        logits = F.interpolate(logits, size=grid, mode="bilinear", align_corners=False)
    probs = sec_probabilities(logits)
    labels = batch["labels"]
    pending = pool.map_async(list(batch["small_image"].numpy()), list(probs.detach().cpu().numpy()),
                             crf_train_labels(labels, cfg.crf_train_labels), train_scale(cfg.crf_train_scale, grid))
    labels = labels.to(logits.device, non_blocking=True)
    terms = {
        "seed": seeding_loss(probs, cues),
        "expand": expansion_loss(probs, labels, rescaled_decay(cfg.decay_fg, grid), rescaled_decay(cfg.decay_bg, grid)),
    }
    q = torch.from_numpy(np.stack(pending.get())).to(logits.device)
    if cfg.crf_train_labels == "all":
        q = floor_crf_probs(q)
    terms["constrain"] = constrain_loss(probs, q)
    terms["loss"] = cfg.seed_weight * terms["seed"] + cfg.expand_weight * terms["expand"] + \
        cfg.constrain_weight * terms["constrain"]
    return terms


def full_loss(logits: Tensor, batch: dict[str, Any]) -> dict[str, Tensor]:
    """Cross-entropy on the logits upsampled (bilinear) to the mask size, void (255) ignored."""
    mask = batch["mask"].to(logits.device, non_blocking=True)
    logits = logits.float()
    if tuple(logits.shape[-2:]) != tuple(mask.shape[-2:]):
        logits = F.interpolate(logits, size=tuple(mask.shape[-2:]), mode="bilinear", align_corners=False)
    return {"loss": F.cross_entropy(logits, mask, ignore_index=IGNORE_INDEX)}


# --------------------------------------------------------------------------- training
def _record_of(out_dir: Path, state: dict[str, Any]) -> dict[str, Any]:
    path = out_dir / RECORD
    if path.is_file():
        return json.loads(path.read_text())
    return {"iterations": state.get("iteration"), "history": state.get("history", [])[-1:]}


def _mean_of_last(history: list[dict[str, Any]], keys: tuple[str, ...], n: int = 20) -> dict[str, float]:
    tail = history[-n:]
    return {k: float(np.mean([h[k] for h in tail])) for k in keys if tail and k in tail[0]}


@dataclass
class SegmenterTraining:
    """What one segmenter run holds while it trains (from :func:`set_up_training`)."""

    cfg: Config
    supervision: str
    device: torch.device
    dist_info: DistInfo
    pool: CRFPool | None
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    use_amp: bool
    channels_last: bool
    meta: dict[str, Any]
    config_hash: str
    keys: tuple[str, ...]
    history: list[dict[str, Any]] = field(default_factory=list)


def resume_state(cfg: Config, ckpt_path: Path, supervision: str, config_hash: str, encoder: str,
                 num_classes: int) -> dict[str, Any] | None:
    """The checkpoint in the output folder (None: none yet), refused when made for another model,
    supervision, config or cues."""
    if not ckpt_path.is_file():
        return None
    c = cfg.segment
    state = read_checkpoint(ckpt_path)
    check_segmenter_meta(state["meta"], ckpt_path, c.model, encoder, num_classes)
    if state["meta"].get("supervision") != supervision:
        raise CheckpointMismatch(f"{ckpt_path}: checkpoint was trained with supervision "
                                 f"{state['meta'].get('supervision')!r}, not {supervision!r}; use another "
                                 "output folder")
    if state.get("config_hash") != config_hash:
        raise CheckpointMismatch(f"{ckpt_path}: checkpoint was made with another [segment]/[data] config or other cues; "
                                 "use another output folder or delete it to start fresh")
    return state


def training_data(cfg: Config, voc: VOCSegmentation, cues_dir: str | Path | None, supervision: str, start: int,
                  device: torch.device, dist_info: DistInfo, progress: bool
                  ) -> tuple[SegTrainDataset, torch.utils.data.DataLoader]:
    """The training images with their cues (or masks), and the loader of iterations ``start ..``."""
    c = cfg.segment
    dataset = SegTrainDataset(voc, c.crop_size, cues_dir if supervision == "sec" else None, supervision, c.flip,
                              cfg.run.seed, cfg.data.mean, cfg.data.std, progress=progress and dist_info.is_main,
                              cache_mib=cfg.data.cache_mib)
    if progress and dist_info.is_main:
        dataset.cache.report()
    workers, _ = apply_plan(cfg.data.train_workers, cfg.data.num_workers, cfg.data.torch_threads,
                            dataset.cache.enabled)
    sampler = IterationBatchSampler(len(dataset), c.batch_size, c.iterations, start, cfg.run.seed,
                                    dist_info.rank, dist_info.world_size)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, num_workers=workers, collate_fn=collate,
        pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(cfg.run.seed),
        persistent_workers=False)
    return dataset, loader


def final_record(t: SegmenterTraining, ckpt_path: Path, start: int, run_here: int, seconds: float) -> dict[str, Any]:
    """The run record (``train.json``): model, supervision, cues, iterations, speed, final losses, config."""
    c, meta = t.cfg.segment, t.meta
    return {
        "stage": "segment train", "model": c.model, "encoder": meta["encoder"], "supervision": t.supervision,
        "cues_dir": meta["cues_dir"], "cue_params": meta["cue_params"], "iterations": c.iterations,
        "resumed_from": start, "world_size": t.dist_info.world_size, "device": str(t.device), "seconds": seconds,
        "images_per_second": run_here * c.batch_size / seconds if seconds > 0 else None,
        "final": t.history[-1] if t.history else {}, "final_mean_last_20": _mean_of_last(t.history, t.keys),
        "checkpoint": str(ckpt_path), "config_hash": t.config_hash, "config": t.cfg.to_dict(),
    }


def set_up_training(cfg: Config, out_dir: Path, supervision: str, device: torch.device, dist_info: DistInfo,
                    pool: CRFPool | None, state: dict[str, Any] | None, meta: dict[str, Any],
                    config_hash: str) -> SegmenterTraining:
    """Model, optimiser (last layer at lr × ``last_layer_lr_mult``), schedule, AMP scaler, restored from
    ``state`` when resuming; DDP under torchrun; ``config.toml`` written."""
    c = cfg.segment
    torch.manual_seed(cfg.run.seed)
    model = build_segmenter(c.model, c.encoder, meta["num_classes"], c.weights).to(device)
    use_amp = c.amp and device.type == "cuda"
    channels_last = getattr(c, "channels_last", True) and device.type == "cuda"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = optimizer_from_config(c, param_groups(model, c.lr, c.weight_decay, c.last_layer_lr_mult), "segment")
    scheduler = make_scheduler(optimizer, c)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    history: list[dict[str, Any]] = []
    if state is not None:
        restore_training_state(state, model, optimizer, scheduler, scaler, device)
        history = list(state["history"])
    if dist_info.distributed and device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if dist_info.distributed:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if dist_info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(out_dir / "config.toml", dump_toml(cfg).encode())
    keys = ("loss", *TERMS) if supervision == "sec" else ("loss",)
    return SegmenterTraining(cfg, supervision, device, dist_info, pool, model, optimizer, scheduler, scaler, use_amp,
                             channels_last, meta, config_hash, keys, history)


def train_step(t: SegmenterTraining, batch: dict[str, Any], iteration: int) -> dict[str, float]:
    """One optimiser step; return the history entry of iteration ``iteration`` (losses averaged over processes)."""
    c = t.cfg.segment
    images = batch["image"].to(t.device, non_blocking=True)
    if t.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    lr = t.optimizer.param_groups[0]["lr"]
    with torch.autocast(t.device.type, enabled=t.use_amp):
        logits = t.model(images)
    terms = sec_losses(logits, batch, c, t.pool) if t.supervision == "sec" else full_loss(logits, batch)
    t.optimizer.zero_grad(set_to_none=True)
    t.scaler.scale(terms["loss"]).backward()
    t.scaler.step(t.optimizer)
    t.scaler.update()
    t.scheduler.step()
    values = torch.stack([terms[k].detach().float() for k in t.keys])
    if t.dist_info.distributed:
        torch.distributed.all_reduce(values)
        values /= t.dist_info.world_size
    entry = {"iteration": iteration, "lr": lr, **{k: float(v) for k, v in zip(t.keys, values.tolist())}}
    if not all(math.isfinite(entry[k]) for k in t.keys):
        raise FloatingPointError(f"non-finite loss at iteration {iteration}: {entry}; lower segment.lr "
                                 "or check the cues")
    return entry


def train_iterations(t: SegmenterTraining, loader: torch.utils.data.DataLoader, start: int, ckpt_path: Path,
                     progress: bool, stop_after_iterations: int | None) -> int | None:
    """:func:`train_step` over the loader's iterations, saving every ``segment.checkpoint_every``; return how
    many ran (None when stopped by ``stop_after_iterations``)."""
    c = t.cfg.segment
    recent: deque[dict[str, float]] = deque(maxlen=20)
    bar = tqdm(total=c.iterations, initial=start, desc=f"segment {c.model} ({t.supervision})", unit="it",
               disable=not (progress and t.dist_info.is_main), dynamic_ncols=True)
    t.model.train()
    iteration, run_here = start, 0
    for batch in loader:
        if stop_after_iterations is not None and run_here >= stop_after_iterations:
            bar.close()
            return None
        iteration += 1
        run_here += 1
        entry = train_step(t, batch, iteration)
        t.history.append(entry)
        recent.append(entry)
        bar.set_postfix({k: f"{np.mean([r[k] for r in recent]):.3f}" for k in t.keys})
        bar.update(1)
        if t.dist_info.is_main and (iteration % c.checkpoint_every == 0 or iteration == c.iterations):
            save_training(t, ckpt_path, iteration)
    bar.close()
    return run_here


def save_training(t: SegmenterTraining, ckpt_path: Path, iteration: int) -> None:
    """The checkpoint at ``iteration`` (atomic) and metrics.json. Until the last iteration it holds
    everything a bit-exact resume needs; the last one holds the weights, meta and history only
    (nothing is left to resume, and the optimiser state would double the file)."""
    t.meta["iteration"] = iteration
    resume = {} if iteration >= t.cfg.segment.iterations else \
        training_state(t.optimizer, t.scheduler, t.scaler, t.device)
    save_segmenter(ckpt_path, t.model, t.meta, extra={"config_hash": t.config_hash, **resume, "history": t.history})
    MetricsHistory(t.history).write(ckpt_path.parent / METRICS)


def train_segmenter(cfg: Config, out_dir: str | Path, cues_dir: str | Path | None = None, supervision: str = "sec",
                    resume: bool = False, progress: bool = True, stop_after_iterations: int | None = None
                    ) -> dict[str, Any]:
    """Train the [segment] segmenter into ``out_dir``; return the run record (also ``out_dir/train.json``).

    ``supervision``: ``"sec"`` (from the cue folder ``cues_dir``) or ``"full"`` (ground-truth
    masks). A finished run with the same configuration is skipped. ``stop_after_iterations``
    stops abruptly after that many iterations of this call, without a checkpoint for them (used to
    test resumption).
    """
    check_supervision(supervision)
    c = cfg.segment
    out_dir = Path(out_dir)
    if c.iterations < 1:
        raise ConfigError(f"segment.iterations must be positive, got {c.iterations}")
    if c.checkpoint_every < 1:
        raise ConfigError(f"segment.checkpoint_every must be positive, got {c.checkpoint_every}")
    lr_factor(0, c)
    crf_train_labels(torch.zeros(0, 1), c.crf_train_labels)  # validates the name before any work
    device, dist_info = training_device(cfg.run.device)
    if supervision == "sec" and cues_dir is None:
        raise UsageError("supervision 'sec' needs a cue folder (--cues DIR, written by `sharpen cues sec`); "
                         "or use supervision 'full'")
    cue_record = read_cue_record(cues_dir) if supervision == "sec" else None
    config_hash = run_hash(cfg, supervision, cue_record)
    voc = VOCSegmentation(cfg.data.root, cfg.data.train_split)
    num_classes = voc.num_classes
    encoder = c.encoder if c.model == "deeplabv3plus" else "vgg16"
    ckpt_path = out_dir / CHECKPOINT

    state = resume_state(cfg, ckpt_path, supervision, config_hash, encoder, num_classes)
    if state is not None and state["meta"]["iteration"] >= c.iterations:
        if dist_info.is_main and progress:
            print(f"[segment {supervision}] already trained ({ckpt_path}), skipped")
        return _record_of(out_dir, state)
    if state is not None and not resume:
        raise UsageError(f"{ckpt_path}: an unfinished run is here (iteration {state['meta']['iteration']}/"
                         f"{c.iterations}); pass --resume to continue it, or use another output folder")

    if c.model == "deeplabv3plus" and c.batch_size // dist_info.world_size < 2 \
            and not (dist_info.distributed and device.type == "cuda"):
        raise ConfigError(f"segment.batch_size {c.batch_size} gives {c.batch_size // dist_info.world_size} image(s) per "
                          "process; DeepLabV3+ has BatchNorm after its global pooling branch, which needs at least "
                          "2 images per process (or SyncBatchNorm over CUDA processes)")
    seed_everything(cfg.run.seed)
    start = int(state["meta"]["iteration"]) if state is not None else 0
    dataset, loader = training_data(cfg, voc, cues_dir, supervision, start, device, dist_info, progress)
    # The CRF workers start before the model touches the GPU (they are forkserver/spawn anyway).
    pool = CRFPool(c.crf_processes, CRFParams.from_config(c)) if supervision == "sec" else None

    try:
        meta = {"model": c.model, "encoder": encoder, "num_classes": num_classes,
                "class_names": list(voc.class_names), "input_size": c.crop_size, "supervision": supervision,
                "cues_dir": str(cues_dir) if cues_dir is not None else None,
                "cue_params": None if cue_record is None else cue_record.get("params"),
                "grid": dataset.grid, "dataset_root": str(cfg.data.root), "train_split": cfg.data.train_split,
                "iteration": start}
        t = set_up_training(cfg, out_dir, supervision, device, dist_info, pool, state, meta, config_hash)
        t0 = time.perf_counter()
        run_here = train_iterations(t, loader, start, ckpt_path, progress, stop_after_iterations)
        if run_here is None:
            return {"interrupted": True, "iteration": start + stop_after_iterations}  # type: ignore[operator]
        record = final_record(t, ckpt_path, start, run_here, time.perf_counter() - t0)
        if dist_info.is_main:
            write_json_atomic(out_dir / RECORD, record)
            if progress:
                print(f"[segment {supervision}] {c.iterations} iterations, " +
                      " ".join(f"{k}={v:.4f}" for k, v in record["final_mean_last_20"].items()) +
                      f" ({record['seconds']:.1f} s, {record['images_per_second']:.1f} img/s)")
        barrier(dist_info)
        return record
    except BaseException:
        if pool is not None:
            pool.terminate()
        raise
    finally:
        if pool is not None:
            pool.close()  # no-op after terminate
