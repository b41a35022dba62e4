"""The built-in "ImageNet": one classifier trained once on a separate, larger built-in set, whose
weights start every network of the comparison (docs/method.md §8).

The paper's classifiers and SEC's DeepLab start from ImageNet weights; the built-in data has no
ImageNet. :func:`ensure_pretrained` makes its stand-in: it renders the pretraining set (the
built-in generator's ``pretrain`` size, whose images come from random streams of their own, so no
train, val or test image of any built-in dataset is among them), trains a plain classifier on it and
keeps the weights in the per-machine cache under a key of everything that made them
(sharpen_core/pretrained.py). A second run, another seed or the tests find them there.
:func:`resolve_builtin` turns ``weights = "builtin"`` into ``"builtin:<key>"`` for the stages.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch

from data.builtin import GENERATOR_VERSION, build_builtin_dataset
from sharpen_core.checkpoints import read_state_dict, save_checkpoint
from sharpen_core.config import ClassifyConfig, Config, DataConfig, RunConfig
from sharpen_core.io import write_json_atomic
from sharpen_core.lock import folder_lock
from sharpen_core.pretrained import (BUILTIN, PREFIX, RECORD_NAME, WEIGHTS_NAME, cache_root, is_builtin,
                                     pretrained_folder)

__all__ = ["PRETRAIN_VERSION", "ensure_pretrained", "pretrain_config", "pretrain_data_root", "pretrain_key",
           "pretrained_folder", "resolve_builtin"]
from sharpen_core.records import fingerprint

#: Bumped when the pretraining recipe changes in a way its settings do not show.
PRETRAIN_VERSION = 1


def pretrain_config(cfg: Config) -> Config:
    """The config the pretraining runs with: ``[pretrain]`` over the defaults, the run's device and
    image statistics; nothing of the run's own data, classifier or seed."""
    p = cfg.pretrain
    data = DataConfig(root=str(pretrain_data_root(cfg)), builtin=True, builtin_size=p.size, builtin_seed=p.seed,
                      mean=list(cfg.data.mean), std=list(cfg.data.std), hflip=cfg.data.hflip,
                      num_workers=cfg.data.num_workers, cache_mib=cfg.data.cache_mib,
                      train_workers=cfg.data.train_workers, torch_threads=cfg.data.torch_threads)
    classify = ClassifyConfig(arch=p.arch or cfg.classify.arch, output_stride=p.output_stride, weights="none",
                              variants=["baseline"], image_size=p.image_size, batch_size=p.batch_size,
                              epochs=p.epochs, max_batches_per_epoch=p.max_batches_per_epoch,
                              optimizer=p.optimizer, lr=p.lr, weight_decay=p.weight_decay, schedule=p.schedule,
                              crop_scale=list(p.crop_scale), amp=cfg.classify.amp,
                              channels_last=cfg.classify.channels_last)
    return Config(run=RunConfig(name="pretrain", seed=p.train_seed, device=cfg.run.device), data=data,
                  classify=classify, pretrain=dataclasses.replace(p), source=cfg.source)


def pretrain_data_root(cfg: Config) -> Path:
    """Where the pretraining set is rendered (in the cache: shared by every run of this machine)."""
    p = cfg.pretrain
    return cache_root() / "data" / f"builtin-v{GENERATOR_VERSION}-{p.size}-seed{p.seed}"


def pretrain_key(cfg: Config) -> str:
    """A hash of everything that makes the pretrained weights (never a path of this machine)."""
    pcfg = pretrain_config(cfg).to_dict()
    for section, keys in (("data", ("root", "num_workers", "cache_mib", "train_workers", "torch_threads")),):
        for k in keys:
            pcfg[section].pop(k)
    pcfg["run"].pop("device")
    pcfg["run"].pop("run_dir")
    return fingerprint({"version": PRETRAIN_VERSION, "generator": GENERATOR_VERSION, "config": pcfg,
                        "device_kind": _device_kind(cfg.run.device)})


def _device_kind(device: str) -> str:
    """"cuda" or "cpu": AMP and channels-last change the weights on CUDA only."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cuda" if device.startswith("cuda") else "cpu"


def ensure_pretrained(cfg: Config, progress: bool = True) -> dict[str, Any]:
    """The pretrained weights of ``cfg.pretrain``, made now if this machine's cache lacks them.

    Returns the record (``pretrain.json``: key, how they were made, how long it took) with
    ``cache_hit`` set. Holds the cache folder's lock while it trains, so two runs never make the same
    weights at once (the second waits for nothing: it is refused with the holder named).
    """
    from .evaluate import evaluate_classifier
    from .train import CHECKPOINT, train_classifier

    key = pretrain_key(cfg)
    folder = pretrained_folder(key)
    record_path, weights = folder / RECORD_NAME, folder / WEIGHTS_NAME
    if weights.is_file() and record_path.is_file():
        return {**_read_record(record_path), "cache_hit": True}
    pcfg = pretrain_config(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    with folder_lock(folder, hint="SHARPEN_CACHE (or wait)"):
        if weights.is_file() and record_path.is_file():
            return {**_read_record(record_path), "cache_hit": True}
        if progress:
            print(f"  pretrain: the built-in pretrained start {key} is not cached; making it in {folder}")
        t0 = time.perf_counter()
        data = build_builtin_dataset(pcfg.data.root, seed=pcfg.data.builtin_seed, size=pcfg.data.builtin_size,
                                     progress=progress)
        t1 = time.perf_counter()
        train_classifier(pcfg, "baseline", folder / "train", resume=True, progress=progress)
        t2 = time.perf_counter()
        state = read_state_dict(folder / "train" / CHECKPOINT)
        evaluation = evaluate_classifier(pcfg, folder / "train" / CHECKPOINT, mechanisms=[], progress=progress)
        save_checkpoint(weights, state)
        record = {"key": key, "version": PRETRAIN_VERSION, "generator_version": GENERATOR_VERSION,
                  "pretrain": dataclasses.asdict(pcfg.pretrain), "arch": pcfg.classify.arch,
                  "images": {"train": data.get("splits", {}).get("train"), "val": data.get("splits", {}).get("val")},
                  "val_map": evaluation.get("map"), "data_seconds": t1 - t0, "train_seconds": t2 - t1,
                  "device": str(pcfg.run.device), "torch": torch.__version__}
        write_json_atomic(record_path, record)
    return {**record, "cache_hit": False}


def _read_record(path: Path) -> dict[str, Any]:
    import json

    return json.loads(path.read_text())


def resolve_builtin(cfg: Config, progress: bool = True) -> tuple[Config, dict[str, Any] | None]:
    """``cfg`` with ``classify.weights`` / ``segment.weights = "builtin"`` replaced by ``"builtin:<key>"``
    (making the weights when the cache lacks them), and the pretraining record (None when unused)."""
    uses = [s for s in (cfg.classify, cfg.segment) if s.weights == BUILTIN]
    stale = [s.weights for s in (cfg.classify, cfg.segment) if is_builtin(s.weights) and s.weights != BUILTIN]
    if not uses and not stale:
        return cfg, None
    record = ensure_pretrained(cfg, progress)
    resolved = PREFIX + record["key"]
    out = dataclasses.replace(cfg, classify=dataclasses.replace(cfg.classify),
                              segment=dataclasses.replace(cfg.segment))
    for section in (out.classify, out.segment):
        if is_builtin(section.weights):
            section.weights = resolved
    return out, record
