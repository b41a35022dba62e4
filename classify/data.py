"""Classification datasets: multi-label VOC layout (VOC 2012, built-in) and single-label sets
(any ImageFolder tree, CIFAR-100 from its standard local files, CUB-200-2011's standard layout).

Every sample is a dict: ``image`` (3, S, S) float tensor, ``id``, and ``label`` (multi-hot
float, multi-label) or ``target`` (int, single-label). Augmentation is a pure function of
(seed, epoch, sample index) through :class:`SeededDataset`, so a run gives the same batches
whatever the number of loader workers or DDP processes, and a resumed run repeats them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from sharpen_core.errors import ConfigError, DatasetError
from data.io import read_image
from data.transforms import Compose, Normalize, RandomHorizontalFlip, RandomScale, Resize
from data.voc import VOCSegmentation

DATASET_KINDS = ("voc", "imagefolder", "cifar100", "cub200")


def classification_transform(image_size: int, train: bool, mean, std, scale_range=(1.0, 1.0),
                             hflip: bool = True) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Resize to ``image_size`` squared (after a random rescale when training), flip, normalise; drop masks."""
    steps: list[Callable[[dict[str, Any]], dict[str, Any]]] = [lambda s: {k: v for k, v in s.items() if k != "mask"}]
    if train and tuple(scale_range) != (1.0, 1.0):
        steps.append(RandomScale(*scale_range))
    steps.append(Resize(image_size))
    if train and hflip:
        steps.append(RandomHorizontalFlip())
    steps.append(Normalize(mean, std))
    return Compose(steps)


class SeededDataset(torch.utils.data.Dataset):
    """Applies ``transform`` to ``base[i]`` under a torch seed derived from (seed, epoch, i)."""

    def __init__(self, base: Any, transform: Callable[[dict[str, Any]], dict[str, Any]], seed: int = 0):
        self.base, self.transform, self.seed, self.epoch = base, transform, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.base[index]
        digest = hashlib.blake2b(f"{self.seed}/{self.epoch}/{index}".encode(), digest_size=8).digest()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))
            return self.transform(sample)


class _SingleLabel(torch.utils.data.Dataset):
    """(path, target) pairs read as RGB arrays into sample dicts."""

    def __init__(self, items: list[tuple[Path, int]], classes: list[str], root: Path):
        if not items:
            raise DatasetError(root, "no images found")
        self.items, self.classes, self.root = items, classes, root

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path, target = self.items[index]
        return {"id": path.stem, "image": read_image(path), "target": target}


def image_folder(root: str | Path) -> _SingleLabel:
    """An ImageFolder tree: ``root/<class>/<image>``, classes in sorted order."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(root, "image folder not found; expected root/<class name>/<images>")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise DatasetError(root, "no class folders; expected root/<class name>/<images>")
    exts = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
    items = [(p, c) for c, name in enumerate(classes) for p in sorted((root / name).rglob("*"))
             if p.suffix.lower() in exts]
    return _SingleLabel(items, classes, root)


class Cifar100(torch.utils.data.Dataset):
    """CIFAR-100 from its standard python files (``cifar-100-python/{train,test,meta}``); never downloads."""

    def __init__(self, root: str | Path, train: bool):
        import pickle

        root = Path(root)
        folder = root / "cifar-100-python" if (root / "cifar-100-python").is_dir() else root
        path = folder / ("train" if train else "test")
        if not path.is_file():
            raise DatasetError(path, "CIFAR-100 file not found; expected the extracted cifar-100-python folder")
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
        self.images = entry["data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        self.targets = [int(t) for t in entry["fine_labels"]]
        meta = folder / "meta"
        self.classes = pickle.load(open(meta, "rb"), encoding="latin1")["fine_label_names"] if meta.is_file() \
            else [str(i) for i in range(100)]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"id": str(index), "image": np.ascontiguousarray(self.images[index]), "target": self.targets[index]}


def cub200(root: str | Path, train: bool) -> _SingleLabel:
    """CUB-200-2011 from ``images.txt``, ``image_class_labels.txt``, ``train_test_split.txt``, ``images/``."""
    root = Path(root)
    if (root / "CUB_200_2011").is_dir():
        root = root / "CUB_200_2011"
    files = {name: root / name for name in ("images.txt", "image_class_labels.txt", "train_test_split.txt",
                                            "classes.txt")}
    for path in files.values():
        if not path.is_file():
            raise DatasetError(path, "CUB-200-2011 file not found; expected the standard CUB_200_2011 layout")

    def table(path: Path) -> dict[str, str]:
        return dict(line.split(maxsplit=1) for line in path.read_text().splitlines() if line.strip())

    images, labels, split = table(files["images.txt"]), table(files["image_class_labels.txt"]), \
        table(files["train_test_split.txt"])
    classes = [v.strip() for _, v in sorted(table(files["classes.txt"]).items(), key=lambda kv: int(kv[0]))]
    want = "1" if train else "0"
    items = [(root / "images" / images[i].strip(), int(labels[i]) - 1) for i in sorted(images, key=int)
             if split[i].strip() == want]
    return _SingleLabel(items, classes, root)


def build_dataset(kind: str, root: str | Path, split: str) -> tuple[Any, int, bool, list[str]]:
    """(raw dataset, number of classes, multi-label?, class names) for a dataset kind and split."""
    if kind == "voc":
        ds = VOCSegmentation(root, split)
        if not ds.has_labels:
            raise DatasetError(ds.list_path, f"split {split!r} has no image-level labels to train or evaluate on")
        return ds, ds.num_classes - 1, True, list(ds.class_names[1:])
    train = split in ("train", "trainval", "train_aug")
    if kind == "imagefolder":
        ds = image_folder(Path(root) / split if (Path(root) / split).is_dir() else root)
        return ds, len(ds.classes), False, ds.classes
    if kind == "cifar100":
        ds = Cifar100(root, train)
        return ds, 100, False, ds.classes
    if kind == "cub200":
        ds = cub200(root, train)
        return ds, len(ds.classes), False, ds.classes
    raise ConfigError(f"unknown dataset kind {kind!r}; expected one of: {', '.join(DATASET_KINDS)}")


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    batch: dict[str, Any] = {"id": [s["id"] for s in samples], "image": torch.stack([s["image"] for s in samples])}
    if "label" in samples[0]:
        batch["label"] = torch.stack([torch.as_tensor(s["label"], dtype=torch.float32) for s in samples])
    if "target" in samples[0]:
        batch["target"] = torch.tensor([int(s["target"]) for s in samples], dtype=torch.int64)
    return batch


class DecodedImages(torch.utils.data.Dataset):
    """The images of ``base`` resized to ``size``² as uint8 (3, S, S) tensors, with ``index`` and the
    label, for batched augmentation in the training process (:mod:`classify.augment`); decoded once
    and kept when the split fits under ``cache_mib`` (:class:`data.cache.DecodedCache`)."""

    def __init__(self, base: Any, size: int, cache_mib: int = 0):
        from data.cache import DecodedCache

        self.base, self.size = base, int(size)
        self.cache = DecodedCache(self._prepare, len(base), 3 * self.size * self.size, cache_mib, "classifier images")

    def _prepare(self, index: int) -> dict[str, Any]:
        from PIL import Image

        sample = self.base[index]
        image = np.asarray(sample["image"], dtype=np.uint8)
        if image.shape[:2] != (self.size, self.size):
            image = np.asarray(Image.fromarray(image).resize((self.size, self.size), Image.BILINEAR))
        out = {k: v for k, v in sample.items() if k not in ("image", "mask")}
        out["image"] = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).contiguous()
        out["index"] = index
        return out

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.cache.get(index)


def collate_decoded(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """:func:`collate` of :class:`DecodedImages` samples: uint8 images and their dataset indices."""
    batch = collate(samples)
    batch["index"] = torch.tensor([int(s["index"]) for s in samples], dtype=torch.int64)
    return batch
