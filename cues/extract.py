"""Stage 2: class attention maps of a trained classifier for every image of a split (docs/method.md §1, §4).

For each image, the maps of its ground-truth classes (or of all classes) from one layer (default
the last), averaged over scales and horizontal flip, at image resolution, as IRN/SEC do:

1. the image is resized to each scale of its original size (``cues.scale_base = "image"``, the
   WSSS pipelines' choice; ``"classify"`` uses ``classify.image_size`` squared instead) and
   normalised; the flipped copy joins the same batch;
2. one extractor call per scale gives the un-normalised maps of every requested class from one
   forward pass (:class:`sharpen_attention.attention.AttentionExtractor`); the flipped pass's maps are flipped
   back; each is resized bilinearly to image resolution;
3. the passes are averaged, then each class map is max-normalised to [0, 1] (docs/method.md §1). With
   ``cues.scale_average = "normalized"`` (default) each pass is max-normalised before averaging:
   Grad-CAM and channel-weighted maps carry a factor ``1/Z`` (``Z`` = feature pixels), so raw maps
   of a larger scale would count 4× less per doubling; ``"raw"`` averages them as they come.

Storage: ``OUT/maps/<id>.npz`` (``np.savez_compressed``) per image, written atomically (temp
file then rename), with ``maps`` (C, H, W) float16 (or uint8, ``round(255·m)``, for
``cues.storage = "uint8"``), ``classes`` (C,) the segmentation labels (1..20) of the maps,
``labels`` the image's ground-truth classes (empty without labels), ``id`` and ``storage``.
``OUT/extract.json`` holds the parameters (checkpoint and its SHA-256, mechanism, layer, scales,
flip, split, ...): a rerun with other parameters is refused. A rerun skips images whose file
exists and loads, and redoes the rest (a killed run leaves at most a temp file, removed here).
``--shard I/N`` takes images ``I, I+N, I+2N, ...`` of the split (a cluster job array); each run
writes its record (counts, timings, images/s) to ``extract_run[.shard-I-of-N].json``.
"""

from __future__ import annotations

import json
import time
import zipfile
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from tqdm import tqdm

from sharpen_core.errors import ConfigError, DatasetError, UsageError
from sharpen_core.io import atomic_path, file_sha256, write_json_atomic
from data.voc import VOCSegmentation
from sharpen_attention.attention import AttentionExtractor, max_normalize
from sharpen_attention.classifiers import load_classifier
from sharpen_attention.mechanisms import check_mechanism
from sharpen_core.output_folder import claim_folder, remove_partial, sample_loader

MAPS_SUBDIR = "maps"
PARAMS_FILE = "extract.json"
STORAGES = ("float16", "uint8")
CLASS_MODES = ("gt", "all")
SCALE_BASES = ("image", "classify")
AVERAGES = ("normalized", "raw")


# --------------------------------------------------------------------------- small checks

def parse_shard(text: str | Sequence[int] | None) -> tuple[int, int]:
    """``"I/N"`` (0 <= I < N) -> (I, N); None -> (0, 1)."""
    if text is None:
        return 0, 1
    if isinstance(text, str):
        try:
            i, n = (int(v) for v in text.split("/"))
        except ValueError:
            raise UsageError(f"--shard {text!r}: expected I/N with integers, e.g. 0/4") from None
    else:
        i, n = (int(v) for v in text)
    if not (n >= 1 and 0 <= i < n):
        raise UsageError(f"--shard {i}/{n}: expected I/N with 0 <= I < N, e.g. 0/4")
    return i, n


def shard_indices(count: int, index: int, shards: int) -> list[int]:
    """Positions ``index, index + shards, ...`` below ``count``: the shards cover 0..count-1 exactly once."""
    return list(range(index, count, shards))


def _check_cues_config(c: Any) -> None:
    choices = (("storage", c.storage, STORAGES), ("classes", c.classes, CLASS_MODES),
               ("scale_base", c.scale_base, SCALE_BASES), ("scale_average", c.scale_average, AVERAGES))
    for key, value, allowed in choices:
        if value not in allowed:
            raise ConfigError(f"unknown cues.{key} {value!r}; expected one of: {', '.join(allowed)}")
    if not c.scales or any(s <= 0 for s in c.scales):
        raise ConfigError(f"cues.scales must be a non-empty list of positive numbers, got {c.scales}")
    if c.batch_size < 1:
        raise ConfigError(f"cues.batch_size must be positive, got {c.batch_size}")


# --------------------------------------------------------------------------- inputs

def scaled_inputs(image: np.ndarray, scales: Sequence[float], base: int | None, mean: Sequence[float],
                  std: Sequence[float]) -> list[Tensor]:
    """The image resized to each scale (of its own size, or of ``base`` squared) and normalised: (3, h, w) each."""
    h, w = image.shape[:2]
    pil = Image.fromarray(image)
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    out = []
    for scale in scales:
        th, tw = (h, w) if base is None else (base, base)
        th, tw = max(1, round(th * scale)), max(1, round(tw * scale))
        arr = image if (th, tw) == (h, w) else np.asarray(pil.resize((tw, th), Image.BILINEAR))
        x = torch.from_numpy(np.array(arr, dtype=np.uint8, copy=True)).permute(2, 0, 1).float().div_(255)
        out.append((x - m) / s)
    return out


def image_labels(sample: dict[str, Any]) -> list[int]:
    """The image's ground-truth classes as segmentation labels (1..20); [] without labels."""
    if "label" not in sample:
        return []
    return [int(i) + 1 for i in np.flatnonzero(np.asarray(sample["label"]) > 0.5)]


class ExtractItems(torch.utils.data.Dataset):
    """Samples for extraction: id, image size, labels, classes to map, and the scaled inputs."""

    def __init__(self, dataset: VOCSegmentation, indices: Sequence[int], scales: Sequence[float],
                 base: int | None, mean: Sequence[float], std: Sequence[float], all_classes: bool):
        self.dataset, self.indices = dataset, list(indices)
        self.scales, self.base, self.mean, self.std = list(scales), base, list(mean), list(std)
        self.all_classes = all_classes

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        sample = self.dataset.load(self.indices[i])
        labels = image_labels(sample)
        classes = list(range(1, self.dataset.num_classes)) if self.all_classes else labels
        return {"id": sample["id"], "size": sample["image"].shape[:2], "labels": labels, "classes": classes,
                "scaled": scaled_inputs(sample["image"], self.scales, self.base, self.mean, self.std)}


# --------------------------------------------------------------------------- the maps

def multiscale_maps(extractor: AttentionExtractor, layer: str, samples: Sequence[dict[str, Any]], flip: bool = True,
                    average: str = "normalized", device: torch.device | str = "cpu") -> list[np.ndarray]:
    """Maps (C_i, H_i, W_i) float32 in [0, 1] of each sample's ``classes``, averaged over its scales and flip.

    Images whose scaled inputs have the same size share one batch (with their flipped copies);
    the classifier's class ``c - 1`` gives the map of segmentation label ``c``.
    """
    if average not in AVERAGES:
        raise ValueError(f"unknown average {average!r}; expected one of {AVERAGES}")
    device = torch.device(device)
    sums = [torch.zeros((len(s["classes"]), *s["size"]), device=device) for s in samples]
    num_scales = len(samples[0]["scaled"]) if samples else 0
    for k in range(num_scales):
        groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, s in enumerate(samples):
            if s["classes"]:
                groups[tuple(s["scaled"][k].shape)].append(i)
        for members in groups.values():
            x = torch.stack([samples[i]["scaled"][k] for i in members]).to(device)
            classes = [[c - 1 for c in samples[i]["classes"]] for i in members]
            if flip:
                x = torch.cat([x, x.flip(-1)])
                classes = classes + classes
            maps = extractor(x, classes=classes, normalize=False, size=None).maps[layer].float()
            passes = [maps[:len(members)]]
            if flip:
                passes.append(maps[len(members):].flip(-1))
            for m in passes:
                for j, i in enumerate(members):
                    one = m[j, :len(samples[i]["classes"])]
                    one = F.interpolate(one[None], size=tuple(samples[i]["size"]), mode="bilinear",
                                        align_corners=False)[0].clamp_(min=0)
                    sums[i] += max_normalize(one) if average == "normalized" else one
    return [max_normalize(s).cpu().numpy() for s in sums]


# --------------------------------------------------------------------------- files

def map_path(out_dir: str | Path, image_id: str) -> Path:
    return Path(out_dir) / MAPS_SUBDIR / f"{image_id}.npz"


def save_maps(path: str | Path, image_id: str, maps: np.ndarray, classes: Sequence[int], labels: Sequence[int],
              storage: str = "float16") -> None:
    """Write one image's maps as a compressed ``.npz``, atomically (see the module docstring)."""
    maps = np.asarray(maps, dtype=np.float32)
    if storage == "float16":
        stored = maps.astype(np.float16)
    elif storage == "uint8":
        stored = np.round(np.clip(maps, 0.0, 1.0) * 255.0).astype(np.uint8)
    else:
        raise ValueError(f"unknown storage {storage!r}; expected one of: {', '.join(STORAGES)}")
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, maps=stored, classes=np.asarray(classes, dtype=np.int16),
                            labels=np.asarray(labels, dtype=np.int16), id=np.array(image_id), storage=np.array(storage))


def load_maps(path: str | Path) -> dict[str, Any]:
    """Read a map file: ``maps`` float32 (C, H, W) in [0, 1], ``classes``, ``labels`` (int64), ``id``, ``storage``."""
    try:
        with np.load(path, allow_pickle=False) as z:
            storage = str(z["storage"])
            maps = z["maps"].astype(np.float32)
            if storage == "uint8":
                maps /= 255.0
            return {"maps": maps, "classes": z["classes"].astype(np.int64), "labels": z["labels"].astype(np.int64),
                    "id": str(z["id"]), "storage": storage}
    except FileNotFoundError:
        raise DatasetError(path, "map file not found; run `sharpen cues extract` for this split (it resumes)") from None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise DatasetError(path, f"unreadable map file ({e}); expected an .npz written by `sharpen cues extract` "
                                 "(delete it and rerun extract)") from None


def is_complete(path: Path, image_id: str) -> bool:
    """True when ``path`` is a readable map file of ``image_id`` (an interrupted write never is)."""
    if not path.is_file():
        return False
    try:
        with np.load(path, allow_pickle=False) as z:
            return {"maps", "classes", "labels", "id", "storage"} <= set(z.files) and str(z["id"]) == image_id
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return False


def gt_maps(m: dict[str, Any], source: str | Path = "") -> tuple[np.ndarray, np.ndarray]:
    """The maps of the image's ground-truth classes only (a file made with ``cues.classes = "all"`` has more)."""
    classes, labels = m["classes"], m["labels"]
    if np.array_equal(classes, labels):
        return m["maps"], classes
    rows = []
    for c in labels:
        where = np.flatnonzero(classes == c)
        if where.size == 0:
            raise DatasetError(source, f"no map for ground-truth class {int(c)} (maps hold classes "
                                       f"{classes.tolist()}); extract with cues.classes = 'gt' or 'all'")
        rows.append(int(where[0]))
    return m["maps"][rows], labels


def read_extract_params(out_dir: str | Path) -> dict[str, Any]:
    """The parameters an extraction folder was made with (``extract.json``)."""
    path = Path(out_dir) / PARAMS_FILE
    if not path.is_file():
        raise DatasetError(path, "not found; expected a folder written by `sharpen cues extract`")
    try:
        return json.loads(path.read_text())["params"]
    except (ValueError, KeyError) as e:
        raise DatasetError(path, f"unreadable extraction record ({e})") from None


def run_record_name(shard: tuple[int, int]) -> str:
    return "extract_run.json" if shard == (0, 1) else f"extract_run.shard-{shard[0]}-of-{shard[1]}.json"


# --------------------------------------------------------------------------- the stage

def extract_maps(cfg: Any, checkpoint: str | Path, mechanism: str, out_dir: str | Path, split: str | None = None,
                 shard: str | tuple[int, int] | None = None, progress: bool = True,
                 on_image: Callable[[str, int], None] | None = None, limit: int | None = None) -> dict[str, Any]:
    """Extract the maps of ``split`` (default ``data.train_split``) into ``out_dir``; return the run record.

    ``on_image(id, n)`` is called after each written file (``n`` written so far in this run);
    ``limit`` stops after that many new files (benchmarks).
    """
    from sharpen_core.device import resolve_device

    c = cfg.cues
    check_mechanism(mechanism)
    _check_cues_config(c)
    shard = parse_shard(shard)
    split = split or cfg.data.train_split
    out_dir = Path(out_dir)
    dataset = VOCSegmentation(cfg.data.root, split)
    all_classes = c.classes == "all"
    if not all_classes and not dataset.has_labels:
        raise DatasetError(dataset.list_path, f"split {split!r} has no image-level labels; cues.classes = 'gt' "
                                              "needs them (use --set cues.classes=all for all classes)")
    device = resolve_device(cfg.run.device)
    model, state = load_classifier(checkpoint, dataset.num_classes - 1, dataset.class_names[1:], device)
    base = cfg.classify.image_size if c.scale_base == "classify" else None
    params = {
        "checkpoint": str(Path(checkpoint).resolve()), "checkpoint_sha256": file_sha256(checkpoint),
        "arch": state["arch"], "variant": state.get("variant"), "mechanism": mechanism, "layer": c.layer,
        "scales": list(c.scales), "flip": c.flip, "scale_base": c.scale_base, "base_size": base,
        "scale_average": c.scale_average, "classes": c.classes, "storage": c.storage,
        "dataset": str(dataset.root.resolve()), "split": split, "images": len(dataset),
        "mean": list(cfg.data.mean), "std": list(cfg.data.std),
    }
    with AttentionExtractor(model, layers=(c.layer,), mechanism=mechanism) as extractor:
        out_dir.mkdir(parents=True, exist_ok=True)
        if claim_folder(out_dir, out_dir / PARAMS_FILE, params, lambda record: read_extract_params(record.parent),
                        "maps", [out_dir / MAPS_SUBDIR], "*.npz", ignore=("checkpoint",)):
            write_json_atomic(out_dir / PARAMS_FILE, {"stage": "cues extract", "params": params})
        mine = shard_indices(len(dataset), *shard)
        todo = []
        for i in mine:
            image_id = dataset.ids[i]
            if not is_complete(map_path(out_dir, image_id), image_id):
                remove_partial(map_path(out_dir, image_id))
                todo.append(i)
        already_done = len(mine) - len(todo)
        if limit is not None:
            todo = todo[:limit]
        items = ExtractItems(dataset, todo, c.scales, base, cfg.data.mean, cfg.data.std, all_classes)
        loader, workers = sample_loader(items, c.batch_size, cfg.data.num_workers)
        t0 = time.perf_counter()
        written = 0
        bar = tqdm(total=len(todo), desc=f"{mechanism} maps {split}" + (f" shard {shard[0]}/{shard[1]}"
                   if shard != (0, 1) else ""), unit="img", disable=not progress, leave=False)
        try:
            for batch in loader:
                maps = multiscale_maps(extractor, c.layer, batch, c.flip, c.scale_average, device)
                for sample, m in zip(batch, maps):
                    save_maps(map_path(out_dir, sample["id"]), sample["id"], m, sample["classes"], sample["labels"],
                              c.storage)
                    written += 1
                    bar.update(1)
                    if on_image is not None:
                        on_image(sample["id"], written)
        finally:
            bar.close()
        seconds = time.perf_counter() - t0
    record = {
        "stage": "cues extract", "params": params, "shard": list(shard), "images_in_shard": len(mine),
        "already_done": already_done, "extracted": written,
        "seconds": seconds, "images_per_second": written / seconds if seconds > 0 and written else None,
        "device": str(device), "torch_threads": torch.get_num_threads(), "loader_workers": workers,
        "config": cfg.to_dict(),
    }
    write_json_atomic(out_dir / run_record_name(shard), record)
    if progress:
        rate = f", {record['images_per_second']:.1f} images/s" if record["images_per_second"] else ""
        print(f"[cues extract] {mechanism} on {split}: {written} images extracted, "
              f"{already_done} already done{rate} -> {out_dir}")
    return record


def missing_maps(out_dir: str | Path, ids: Sequence[str]) -> list[str]:
    """Ids of ``ids`` without a map file in ``out_dir``."""
    return [i for i in ids if not map_path(out_dir, i).is_file()]
