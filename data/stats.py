"""``sharpen data stats``: the statistics of a VOC-layout dataset that matter for WSSS.

For one split with masks: images, objects and classes per image, the foreground fraction (of
non-void pixels), the distribution of object areas (as fractions of their image), class
frequency and the most frequent class co-occurrences. Works for real VOC 2012 and for the
built-in dataset alike (the VOC layout of docs/method.md §7; 255 is void).

Objects are the instances of ``SegmentationObject/<id>.png`` (VOC's instance masks: 0
background, 1..n objects, 255 void), each with the class most of its pixels have in the class
mask. Where an image has no instance mask, each 8-connected component of a class counts as one
object (which merges touching instances and splits occluded ones); the result says which
source was used and for how many images.

Pure functions over arrays (``image_stats``, ``summarise``) and one reader at the edge
(``dataset_stats``); no torch.
"""

from __future__ import annotations

from collections import Counter
from itertools import combinations
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from tqdm import tqdm

from .classes import IGNORE_INDEX, NUM_CLASSES, VOC_CLASSES
from sharpen_core.errors import DatasetError
from .io import read_mask
from .voc import read_split_ids, resolve_voc_root, split_list_path

AREA_BINS: tuple[tuple[str, float, float], ...] = (
    ("small", 0.0, 0.05),
    ("medium", 0.05, 0.25),
    ("large", 0.25, 1.01),
)
"""Object size bins, as a fraction of the image's pixels: [lo, hi)."""

AREA_QUANTILES: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 0.9)
TOP_PAIRS = 10
_EIGHT_NEIGHBOURS = np.ones((3, 3), dtype=bool)


def connected_objects(mask: np.ndarray) -> list[tuple[int, int]]:
    """(class id, pixel count) of every 8-connected component of each class in a class mask."""
    from scipy.ndimage import label  # scipy comes with scikit-learn

    objects = []
    for c in np.unique(mask):
        c = int(c)
        if c in (0, IGNORE_INDEX):
            continue
        components, n = label(mask == c, structure=_EIGHT_NEIGHBOURS)
        sizes = np.bincount(components.ravel(), minlength=n + 1)[1:]
        objects.extend((c, int(s)) for s in sizes)
    return objects


def instance_objects(mask: np.ndarray, instances: np.ndarray) -> list[tuple[int, int]]:
    """(class id, pixel count) of every instance of an instance mask; the class is the one most of
    the instance's pixels have in ``mask`` (void and background excluded)."""
    if instances.shape != mask.shape:
        raise ValueError(f"instance mask {instances.shape} and class mask {mask.shape} differ in size")
    objects = []
    for k in np.unique(instances):
        k = int(k)
        if k in (0, IGNORE_INDEX):
            continue
        classes = mask[instances == k]
        counts = np.bincount(classes[(classes != 0) & (classes != IGNORE_INDEX)], minlength=NUM_CLASSES)
        if counts.sum() == 0:
            continue  # an instance with no labelled pixel (all void): not an object of any class
        objects.append((int(np.argmax(counts)), int((instances == k).sum())))
    return objects


def image_stats(mask: np.ndarray, instances: np.ndarray | None = None) -> dict[str, Any]:
    """Statistics of one image from its class mask (and instance mask, if any).

    Returns pixel counts (``pixels``, ``void``, ``foreground`` and per class), the sorted classes
    present and the objects as (class id, area fraction of the image).
    """
    pixels = int(mask.size)
    counts = np.bincount(mask.ravel(), minlength=256)
    objects = instance_objects(mask, instances) if instances is not None else connected_objects(mask)
    return {
        "pixels": pixels,
        "void": int(counts[IGNORE_INDEX]),
        "foreground": int(counts[1:NUM_CLASSES].sum()),
        "class_pixels": {c: int(counts[c]) for c in range(1, NUM_CLASSES) if counts[c]},
        "classes": [c for c in range(1, NUM_CLASSES) if counts[c]],
        "objects": [(c, n / pixels) for c, n in objects],
    }


def _histogram(values: Iterable[int]) -> dict[str, int]:
    counts = Counter(values)
    return {str(k): counts[k] for k in sorted(counts)}


def summarise(per_image: list[dict[str, Any]], top_pairs: int = TOP_PAIRS) -> dict[str, Any]:
    """Dataset statistics from the ``image_stats`` of every image of a split."""
    n = len(per_image)
    if n == 0:
        raise ValueError("no images to summarise")
    pixels = sum(s["pixels"] for s in per_image)
    void = sum(s["void"] for s in per_image)
    fg = sum(s["foreground"] for s in per_image)
    objects_per_image = [len(s["objects"]) for s in per_image]
    classes_per_image = [len(s["classes"]) for s in per_image]
    areas = np.asarray([a for s in per_image for _, a in s["objects"]], dtype=np.float64)
    class_images: Counter[int] = Counter(c for s in per_image for c in s["classes"])
    class_objects: Counter[int] = Counter(c for s in per_image for c, _ in s["objects"])
    class_pixels: Counter[int] = Counter()
    for s in per_image:
        class_pixels.update(s["class_pixels"])
    pairs: Counter[tuple[int, int]] = Counter(p for s in per_image for p in combinations(s["classes"], 2))
    n_obj = int(areas.size)
    return {
        "images": n,
        "objects": n_obj,
        "objects_per_image": {"mean": sum(objects_per_image) / n, "histogram": _histogram(objects_per_image)},
        "classes_per_image": {"mean": sum(classes_per_image) / n, "histogram": _histogram(classes_per_image)},
        "images_with_2plus_classes": sum(k >= 2 for k in classes_per_image) / n,
        "foreground_fraction": fg / max(pixels - void, 1),
        "foreground_fraction_of_all_pixels": fg / pixels,
        "void_fraction": void / pixels,
        "object_area": {
            "mean": float(areas.mean()) if n_obj else None,
            "quantiles": {f"{q:g}": float(np.quantile(areas, q)) for q in AREA_QUANTILES} if n_obj else {},
            "bins": {name: {"range": [lo, min(hi, 1.0)], "fraction": float(np.mean((areas >= lo) & (areas < hi)))
                            if n_obj else 0.0} for name, lo, hi in AREA_BINS},
        },
        "classes": {
            VOC_CLASSES[c]: {"images": class_images[c], "objects": class_objects[c],
                             "pixel_fraction": class_pixels[c] / pixels}
            for c in sorted(class_images)
        },
        "co_occurrence": [
            {"classes": [VOC_CLASSES[a], VOC_CLASSES[b]], "images": k}
            for (a, b), k in sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[:top_pairs]
        ],
    }


def dataset_stats(root: str | Path, split: str = "train", progress: bool = True,
                  top_pairs: int = TOP_PAIRS) -> dict[str, Any]:
    """Read every class mask (and instance mask, where present) of ``split`` and summarise them."""
    voc_root = resolve_voc_root(root)
    ids = read_split_ids(split_list_path(voc_root, split))
    class_dir, object_dir = voc_root / "SegmentationClass", voc_root / "SegmentationObject"
    if not class_dir.is_dir() or not (class_dir / f"{ids[0]}.png").is_file():
        raise DatasetError(class_dir / f"{ids[0]}.png",
                           f"no class mask for split {split!r}; statistics need SegmentationClass/<id>.png "
                           "(the test split of VOC has none)")
    per_image = []
    from_instances = 0
    for image_id in tqdm(ids, desc=f"stats {split}", disable=not progress, leave=False, unit="img"):
        mask = read_mask(class_dir / f"{image_id}.png")
        instance_path = object_dir / f"{image_id}.png"
        instances = None
        if instance_path.is_file():
            instances = read_mask(instance_path, num_classes=256)
            if instances.shape != mask.shape:
                raise DatasetError(instance_path, f"instance mask is {instances.shape[1]}x{instances.shape[0]} but "
                                                  f"the class mask is {mask.shape[1]}x{mask.shape[0]}")
            from_instances += 1
        per_image.append(image_stats(mask, instances))
    summary = summarise(per_image, top_pairs)
    source = ("SegmentationObject" if from_instances == len(ids) else
              "connected components" if from_instances == 0 else "mixed")
    return {"root": str(voc_root), "split": split, "object_source": source,
            "images_with_instance_masks": from_instances, **summary}


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def format_stats(stats: dict[str, Any]) -> str:
    """The statistics as a printed table."""
    source = {
        "SegmentationObject": "instance masks (SegmentationObject)",
        "connected components": "8-connected components of each class (no SegmentationObject masks)",
        "mixed": f"instance masks for {stats['images_with_instance_masks']} images, connected components for "
                 "the rest",
    }[stats["object_source"]]
    area = stats["object_area"]
    hist = lambda h: " ".join(f"{k}:{v}" for k, v in h.items())  # noqa: E731
    rows = [
        ("images", str(stats["images"])),
        ("objects", str(stats["objects"])),
        *[(f"{key.replace('_', ' ')}", f"{stats[key]['mean']:.2f}  ({hist(stats[key]['histogram'])})")
          for key in ("objects_per_image", "classes_per_image")],
        ("images with 2+ classes", _pct(stats["images_with_2plus_classes"])),
        ("foreground (of non-void)", _pct(stats["foreground_fraction"])),
        ("foreground (of all)", _pct(stats["foreground_fraction_of_all_pixels"])),
        ("void", _pct(stats["void_fraction"])),
        ("object area: mean", _pct(area["mean"])),
        ("object area: quantiles", "  ".join(f"q{k}={_pct(v)}" for k, v in area["quantiles"].items())),
    ]
    rows += [(f"objects {name} ({_pct(b['range'][0])}-{_pct(b['range'][1])})", _pct(b["fraction"]))
             for name, b in area["bins"].items()]
    width = max(len(k) for k, _ in rows)
    lines = [f"dataset: {stats['root']}  split: {stats['split']}", f"objects from: {source}", ""]
    lines += [f"{k:<{width}}  {v}" for k, v in rows]
    lines += ["", f"{'class':<12} {'images':>7} {'objects':>8} {'pixels':>8}"]
    for name, c in stats["classes"].items():
        lines.append(f"{name:<12} {c['images']:>7} {c['objects']:>8} {_pct(c['pixel_fraction']):>8}")
    if stats["co_occurrence"]:
        lines += ["", "top co-occurrences (images)"]
        lines += [f"  {' + '.join(p['classes']):<24} {p['images']:>6}" for p in stats["co_occurrence"]]
    return "\n".join(lines)


# --------------------------------------------------------------------------- VOC 2012 reference

VOC2012_SOURCES: dict[str, str] = {
    "devkit": "PASCAL VOC 2012 development kit documentation (Everingham and Winn), section 2.2, Table 2, "
              "segmentation image sets: http://host.robots.ox.ac.uk/pascal/VOC/voc2012/htmldoc/devkit_doc.html",
    "ninja-balance": "computed from Dataset Ninja's statistics of the VOC 2012 segmentation trainval masks, "
                     "https://github.com/dataset-ninja/pascal-voc-2012 `stats/class_balance.json` (per class: "
                     "images, objects, mean area on image; it counts each of the 2,913 images twice, which cancels "
                     "in these ratios, and its 2.38 objects per image agree with the devkit's 6,929 / 2,913): "
                     "foreground = sum of images x mean area over classes / images = 25.2 % of all pixels (a mean over "
                     "images), with "
                     "5.5 % void ('neutral'), so 25.2 / 94.5 = 26.6 % of non-void pixels; classes per image = "
                     "sum of per-class image counts / images",
    "ninja-sizes": "computed from the same repository's `stats/class_sizes.json`: the mean over all 6,934 "
                   "objects of the per-class mean object area (as a fraction of the image)",
}
"""Where each VOC 2012 figure below comes from."""

VOC2012_REFERENCE: dict[str, tuple[str, str]] = {
    "images": ("1,464 train / 1,449 val", "devkit"),
    "objects_per_image": ("2.40 train / 2.36 val (3,507 / 3,422 objects)", "devkit"),
    "classes_per_image": ("1.48 trainval", "ninja-balance"),
    "foreground_fraction": ("26.6 % trainval", "ninja-balance"),
    "void_fraction": ("5.5 % trainval", "ninja-balance"),
    "object_area_mean": ("10.6 % trainval", "ninja-sizes"),
    "classes": ("20", "devkit"),
}
"""Published VOC 2012 segmentation figures: (text, key of VOC2012_SOURCES)."""


def readme_stats_table(by_split: dict[str, dict[str, Any]], class_count: int | None = None) -> str:
    """A Markdown table of ``dataset_stats`` results (one column per split) next to VOC 2012's
    published figures, with a numbered list of the sources."""
    splits = list(by_split)
    source_ids = {key: i + 1 for i, key in enumerate(VOC2012_SOURCES)}

    def row(name: str, values: list[str], ref: str | None) -> str:
        voc, cite = ("–", "") if ref is None else (VOC2012_REFERENCE[ref][0],
                                                    f"[{source_ids[VOC2012_REFERENCE[ref][1]]}]")
        return f"| {name} | " + " | ".join(values) + f" | {voc} {cite}".rstrip() + " |"

    col = lambda f: [f(by_split[s]) for s in splits]  # noqa: E731
    pct = lambda x: f"{100 * x:.1f} %"  # noqa: E731
    bins = lambda s: " / ".join(f"{100 * b['fraction']:.0f}" for b in s["object_area"]["bins"].values())  # noqa: E731
    lines = [
        "| statistic | " + " | ".join(f"built-in {s}" for s in splits) + " | VOC 2012 segmentation |",
        "|---|" + "---:|" * len(splits) + "---|",
        row("images", col(lambda s: str(s["images"])), "images"),
        row("classes", [str(class_count if class_count is not None else len(by_split[s]["classes"])) for s in splits],
            "classes"),
        row("objects per image", col(lambda s: f"{s['objects_per_image']['mean']:.2f}"), "objects_per_image"),
        row("classes per image", col(lambda s: f"{s['classes_per_image']['mean']:.2f}"), "classes_per_image"),
        row("images with 2+ classes", col(lambda s: pct(s["images_with_2plus_classes"])), None),
        row("foreground (of non-void pixels)", col(lambda s: pct(s["foreground_fraction"])), "foreground_fraction"),
        row("void (of all pixels)", col(lambda s: pct(s["void_fraction"])), "void_fraction"),
        row("object area, mean (of its image)", col(lambda s: pct(s["object_area"]["mean"])), "object_area_mean"),
        row("object area, median", col(lambda s: pct(s["object_area"]["quantiles"]["0.5"])), None),
        row("objects < 5 % / 5-25 % / > 25 % of the image (%)", col(bins), None),
        row("top co-occurrences (images)",
            col(lambda s: ", ".join(f"{'+'.join(p['classes'])} {p['images']}" for p in s["co_occurrence"][:3])), None),
    ]
    lines += [""] + [f"[{source_ids[k]}] {text}" + ("  " if i < len(VOC2012_SOURCES) - 1 else "")
                     for i, (k, text) in enumerate(VOC2012_SOURCES.items())]
    return "\n".join(lines)
