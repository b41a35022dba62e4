"""``sharpen data check``: read every file of a VOC-layout dataset and summarise it.

The first problem found raises :class:`sharpen_core.errors.DatasetError` naming the file; the same
errors the readers raise, so a check predicts what training would hit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from .classes import VOC_CLASSES
from sharpen_core.errors import DatasetError
from .io import read_mask
from .voc import SPLITS, VOCSegmentation, resolve_voc_root, split_list_path

HELD_BACK_TEST_MASKS = "SegmentationClassTest"
REQUIRED_SPLITS = ("train", "val")  # every VOC-layout dataset has these lists


def available_splits(root: str | Path) -> list[str]:
    voc_root = resolve_voc_root(root)
    found = []
    for split in SPLITS:
        try:
            split_list_path(voc_root, split)
        except DatasetError:
            continue
        found.append(split)
    return found


def check_dataset(root: str | Path, splits: list[str] | None = None, progress: bool = True) -> dict[str, Any]:
    """Validate every image and mask of the given (default: all present) splits; return a summary."""
    voc_root = resolve_voc_root(root)
    if not splits:
        for required in REQUIRED_SPLITS:
            split_list_path(voc_root, required)  # raises, naming the missing list
        splits = available_splits(voc_root)
    summary: dict[str, Any] = {"root": str(voc_root), "splits": {}}
    checked: dict[tuple[str, str], np.ndarray | None] = {}  # (label source, id) -> label, files already read
    for split in splits:
        ds = VOCSegmentation(voc_root, split)
        per_class = np.zeros(ds.num_classes - 1, dtype=np.int64)
        multi = 0
        held_back = voc_root / HELD_BACK_TEST_MASKS
        held_back_count = 0
        label_source = str(ds.mask_dir) if ds.masks else ("Annotations" if ds.has_labels else "")
        for i in tqdm(range(len(ds)), desc=f"check {split}", disable=not progress, leave=False):
            key = (label_source, ds.ids[i])
            if key in checked and split != "test":  # e.g. trainval after train and val: read once
                label = checked[key]
            else:
                sample = ds.load(i)
                label = checked[key] = sample.get("label")
            if label is not None:
                per_class += label.astype(np.int64)
                multi += int(label.sum() >= 2)
            if split == "test" and held_back.is_dir():
                path = held_back / f"{sample['id']}.png"
                if path.is_file():
                    mask = read_mask(path, ds.num_classes)
                    if mask.shape != sample["image"].shape[:2]:
                        raise DatasetError(path, f"held-back mask is {mask.shape[1]}x{mask.shape[0]} but its image "
                                                 f"is {sample['image'].shape[1]}x{sample['image'].shape[0]}")
                    held_back_count += 1
        summary["splits"][split] = {
            "images": len(ds),
            "masks": len(ds) if ds.masks else 0,
            "labels": ds.has_labels,
            "images_per_class": {VOC_CLASSES[c + 1]: int(n) for c, n in enumerate(per_class)} if ds.has_labels else None,
            "images_with_2plus_classes": multi if ds.has_labels else None,
            **({"held_back_masks": held_back_count} if split == "test" else {}),
        }
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """A printed table: images, masks and 2+-class images per split, then images per class."""
    splits = summary["splits"]
    lines = [f"dataset: {summary['root']}", "",
             f"{'split':<10} {'images':>7} {'masks':>7} {'2+ classes':>11}"]
    for name, s in splits.items():
        multi = "-" if s["images_with_2plus_classes"] is None else str(s["images_with_2plus_classes"])
        lines.append(f"{name:<10} {s['images']:>7} {s['masks']:>7} {multi:>11}")
    labelled = [n for n, s in splits.items() if s["images_per_class"]]
    if labelled:
        lines += ["", f"{'images per class':<16} " + " ".join(f"{n:>9}" for n in labelled)]
        for cls in VOC_CLASSES[1:]:
            counts = [splits[n]["images_per_class"][cls] for n in labelled]
            lines.append(f"{cls:<16} " + " ".join(f"{c:>9}" for c in counts))
    return "\n".join(lines)
