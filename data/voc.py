"""PASCAL VOC 2012 (+ SBD ``train_aug``) reader; the built-in dataset uses the same layout.

Layout (docs/method.md §7)::

    <root>/JPEGImages/<id>.jpg
    <root>/SegmentationClass/<id>.png          palette PNG, 0..20, 255 void
    <root>/SegmentationClassAug/<id>.png       SBD masks, for the train_aug split
    <root>/Annotations/<id>.xml                object boxes, used for labels when no mask exists
    <root>/ImageSets/Segmentation/<split>.txt  one id per line

``root`` may be the devkit folder (holding ``VOC2012``), ``VOCdevkit``'s parent, or the
``VOC2012`` folder itself. Each sample is a dict with ``image`` (H, W, 3 uint8), ``mask``
(H, W uint8, where the split has masks), ``label`` (20 float32 image-level labels, except for
``test``) and ``id``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .classes import IGNORE_INDEX, NUM_CLASSES, VOC_CLASSES
from sharpen_core.errors import DatasetError, UsageError
from .io import read_image, read_mask

SPLITS: tuple[str, ...] = ("train", "val", "trainval", "test", "train_aug")

# Where each split's id list may live, relative to the VOC2012 folder (first found wins).
_LIST_CANDIDATES: dict[str, tuple[str, ...]] = {
    "train_aug": (
        "ImageSets/Segmentation/train_aug.txt",
        "ImageSets/SegmentationAug/train_aug.txt",
        "train_aug.txt",
    ),
}


def resolve_voc_root(root: str | Path) -> Path:
    """Find the folder that holds ``JPEGImages``: ``root``, ``root/VOC2012`` or ``root/VOCdevkit/VOC2012``."""
    root = Path(root).expanduser()
    if not root.exists():
        raise DatasetError(root, "dataset folder not found; expected a VOC2012 folder or a VOCdevkit holding one "
                                 "(build the built-in dataset with `sharpen data build --out DIR`)")
    if not root.is_dir():
        raise DatasetError(root, "not a folder; expected a VOC2012 dataset folder")
    for cand in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (cand / "JPEGImages").is_dir():
            return cand
    raise DatasetError(root, "incomplete dataset: no JPEGImages folder here, in VOC2012/ or in VOCdevkit/VOC2012/")


def split_list_path(voc_root: Path, split: str) -> Path:
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}; expected one of: {', '.join(SPLITS)}")
    candidates = _LIST_CANDIDATES.get(split, (f"ImageSets/Segmentation/{split}.txt",))
    for rel in candidates:
        if (voc_root / rel).is_file():
            return voc_root / rel
    raise DatasetError(voc_root / candidates[0], f"split list for {split!r} not found; expected one image id per line")


def read_split_ids(list_path: Path) -> list[str]:
    """Image ids of a split list; a line may hold ``<id>`` or ``<image path> <mask path>`` (SBD style)."""
    ids: list[str] = []
    seen: set[str] = set()
    for n, line in enumerate(list_path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        first = line.split()[0]
        image_id = Path(first).stem if "/" in first or first.endswith((".jpg", ".png")) else first
        if image_id in seen:
            raise DatasetError(list_path, f"line {n}: image id {image_id!r} listed twice")
        seen.add(image_id)
        ids.append(image_id)
    if not ids:
        raise DatasetError(list_path, "split list is empty; expected one image id per line")
    return ids


def labels_from_mask(mask: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Image-level multi-hot labels (num_classes - 1,) from a mask: classes 1.. present, void ignored."""
    present = np.unique(mask)
    present = present[(present > 0) & (present != IGNORE_INDEX) & (present < num_classes)]
    label = np.zeros(num_classes - 1, dtype=np.float32)
    label[present.astype(np.int64) - 1] = 1.0
    return label


def labels_from_annotation(xml_path: Path, class_names: tuple[str, ...] = VOC_CLASSES) -> np.ndarray:
    """Image-level labels from a VOC ``Annotations/<id>.xml`` (every ``object/name``)."""
    if not xml_path.is_file():
        raise DatasetError(xml_path, "annotation file not found")
    try:
        tree = ET.parse(xml_path)
    except ET.ParseError as e:
        raise DatasetError(xml_path, f"corrupt annotation XML ({e})") from None
    label = np.zeros(len(class_names) - 1, dtype=np.float32)
    for obj in tree.getroot().iter("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in class_names or name == class_names[0]:
            raise DatasetError(xml_path, f"unknown class {name!r}; expected one of: {', '.join(class_names[1:])}")
        label[class_names.index(name) - 1] = 1.0
    return label


class VOCSegmentation:
    """A split of a VOC-layout dataset (PASCAL VOC 2012, SBD ``train_aug`` or the built-in one).

    Indexing returns a sample dict (see module docstring), passed through ``transform`` when
    given. Errors name the offending file. ``masks`` tells whether the split has ground truth.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        class_names: tuple[str, ...] = VOC_CLASSES,
        check_files: bool = True,
    ):
        self.root = resolve_voc_root(root)
        self.split = split
        self.transform = transform
        self.class_names = class_names
        self.num_classes = len(class_names)
        self.list_path = split_list_path(self.root, split)
        self.ids = read_split_ids(self.list_path)
        self.image_dir = self.root / "JPEGImages"
        mask_folder = "SegmentationClassAug" if split == "train_aug" else "SegmentationClass"
        self.mask_dir = self.root / mask_folder
        self.annotation_dir = self.root / "Annotations"
        # The test split never has masks or labels (VOC keeps them on its server; the built-in
        # dataset keeps them in SegmentationClassTest, which no reader uses).
        self.masks = split != "test" and self.mask_dir.is_dir()
        self.has_labels = split != "test" and (self.masks or self.annotation_dir.is_dir())
        if split != "test" and not self.has_labels:
            raise DatasetError(self.root, f"split {split!r} has neither {mask_folder}/ nor Annotations/; "
                                          "expected one of them for ground truth")
        if (self.root / "builtin.json").is_file():  # a built-in dataset: made by this generator version?
            from .builtin import check_builtin_version

            check_builtin_version(self.root)
        if check_files:
            self._check_files_exist()

    def _check_files_exist(self) -> None:
        """Fail at construction (not mid-epoch) when a listed id has no image or mask file."""
        images = {p.stem for p in self.image_dir.glob("*.jpg")}
        for image_id in self.ids:
            if image_id not in images:
                raise DatasetError(self.image_path(image_id), f"image of id {image_id!r} listed in "
                                                              f"{self.list_path.name} is missing")
        if self.masks:
            masks = {p.stem for p in self.mask_dir.glob("*.png")}
            for image_id in self.ids:
                if image_id not in masks:
                    raise DatasetError(self.mask_path(image_id), f"mask of id {image_id!r} listed in "
                                                                 f"{self.list_path.name} is missing")

    def image_path(self, image_id: str) -> Path:
        return self.image_dir / f"{image_id}.jpg"

    def mask_path(self, image_id: str) -> Path:
        return self.mask_dir / f"{image_id}.png"

    def __len__(self) -> int:
        return len(self.ids)

    def load(self, index: int) -> dict[str, Any]:
        """The raw sample (no transform), validated: mask size equals image size."""
        image_id = self.ids[index]
        image = read_image(self.image_path(image_id))
        sample: dict[str, Any] = {"id": image_id, "image": image}
        if self.masks:
            mask = read_mask(self.mask_path(image_id), self.num_classes)
            if mask.shape != image.shape[:2]:
                raise DatasetError(
                    self.mask_path(image_id),
                    f"mask is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image is "
                    f"{image.shape[1]}x{image.shape[0]}; expected the same size",
                )
            sample["mask"] = mask
            sample["label"] = labels_from_mask(mask, self.num_classes)
        elif self.has_labels:
            sample["label"] = labels_from_annotation(self.annotation_dir / f"{image_id}.xml", self.class_names)
        return sample

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        sample = self.load(index)
        return self.transform(sample) if self.transform is not None else sample
