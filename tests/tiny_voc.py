"""The tiny hand-made dataset in VOC layout, with known classes per image (a test helper, not a test)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from data.io import write_image, write_mask

# id -> (split, classes drawn as rectangles); sizes vary so size checks mean something.
TINY = {
    "2007_000001": ("train", [15]),
    "2007_000002": ("train", [1, 7]),
    "2007_000003": ("train", [12, 8, 15]),
    "2007_000004": ("val", [4]),
    "2007_000005": ("val", [13, 15]),
    "2008_000001": ("test", [10]),
    "2008_000002": ("test", [17, 3]),
}


def tiny_ids(*splits: str) -> list[str]:
    """The ids of TINY in ``splits``, in the order its split lists hold them (``trainval``: train, then val)."""
    wanted = {s for split in splits for s in (("train", "val") if split == "trainval" else (split,))}
    return [image_id for image_id, (split, _) in TINY.items() if split in wanted]


def make_tiny_voc(root: Path, with_masks: bool = True, with_annotations: bool = False,
                  devkit: bool = True) -> Path:
    """Write TINY in VOC layout under ``root`` (as ``root/VOCdevkit/VOC2012`` when ``devkit``)."""
    voc = root / "VOCdevkit" / "VOC2012" if devkit else root
    rng = np.random.default_rng(0)
    lists: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for k, (image_id, (split, classes)) in enumerate(TINY.items()):
        h, w = 40 + 4 * k, 56 - 2 * k
        image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        mask = np.zeros((h, w), dtype=np.uint8)
        for j, c in enumerate(classes):
            top, left = 2 + 6 * j, 3 + 8 * j
            mask[top:top + 14, left:left + 16] = c
            mask[top + 14, left:left + 16] = 255  # a void border row
        write_image(voc / "JPEGImages" / f"{image_id}.jpg", image)
        if with_masks and split != "test":
            write_mask(voc / "SegmentationClass" / f"{image_id}.png", mask)
        if with_annotations:
            from data.classes import VOC_CLASSES

            objs = "".join(f"<object><name>{VOC_CLASSES[c]}</name><difficult>0</difficult></object>"
                           for c in classes)
            (voc / "Annotations").mkdir(parents=True, exist_ok=True)
            (voc / "Annotations" / f"{image_id}.xml").write_text(
                f"<annotation><filename>{image_id}.jpg</filename>{objs}</annotation>")
        lists[split].append(image_id)
    lists["trainval"] = lists["train"] + lists["val"]
    sets = voc / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True, exist_ok=True)
    for split, ids in lists.items():
        (sets / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return voc
