"""Training samples of the segmenter: the whole image resized to S×S (as SEC: no crop), with its
SEC localization cues (``supervision="sec"``) or its ground-truth mask (``"full"``).

A sample is a dict:

- ``image``: (3, S, S) float32, normalised with the ImageNet mean/std;
- ``cues``: (L, g, g) bool, the image's cue file as written by ``sharpen cues sec`` (sec), or
  ``mask``: (S, S) int64, the mask resized with nearest neighbours, 255 void (full);
- ``labels``: (L,) float32 multi-hot, column 0 (background) always 1, then the image-level labels;
- ``small_image``: (g, g, 3) uint8, the image resized to the cue grid, for the CRF of the
  constrain loss (sec only);
- ``id``, and ``flipped`` (bool).

The unflipped uint8 arrays of every sample are decoded once and kept in memory when the split
fits under ``cache_mib`` (:class:`data.cache.DecodedCache`). A horizontal flip (probability 1/2) flips image, cues or mask, and small image together; it is a
pure function of (seed, epoch, index), so a resumed run sees the same samples. Keys may be an
index or an ``(epoch, index)`` pair (what :class:`segment.train.IterationBatchSampler` yields).

Cue folders are checked when the dataset is built, every file of the split, with errors naming
the file: folder or ``sec.json`` missing, an image without a cue file, a cue file made for another
image (id) or another dataset (image size), another class count (planes) or another grid.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from data.cache import DecodedCache
from sharpen_core.errors import DatasetError, UsageError
from data.transforms import IMAGENET_MEAN, IMAGENET_STD
from data.voc import VOCSegmentation
from sharpen_core.cue_files import CUES_RECORD, load_cues

SUPERVISIONS = ("sec", "full")


def check_supervision(supervision: str) -> str:
    if supervision not in SUPERVISIONS:
        raise UsageError(f"unknown supervision {supervision!r}; expected one of: {', '.join(SUPERVISIONS)}")
    return supervision


def read_cue_record(cues_dir: str | Path) -> dict[str, Any]:
    """The ``sec.json`` of a cue folder, with clear errors when the folder or the record is missing."""
    cues_dir = Path(cues_dir)
    if not cues_dir.is_dir():
        raise DatasetError(cues_dir, "cue folder not found; expected a folder written by `sharpen cues sec`")
    record_path = cues_dir / CUES_RECORD
    if not record_path.is_file():
        raise DatasetError(record_path, f"no {CUES_RECORD} in the cue folder; expected a folder written by "
                                        "`sharpen cues sec` (it writes <id>.npz per image and sec.json)")
    try:
        record = json.loads(record_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DatasetError(record_path, f"unreadable cue record ({e}); expected the JSON written by "
                                        "`sharpen cues sec`") from None
    if not isinstance(record, dict) or not isinstance(record.get("params"), dict) or "grid" not in record["params"]:
        raise DatasetError(record_path, "cue record without params.grid; expected the JSON written by "
                                        "`sharpen cues sec`")
    return record


def cue_header(path: Path) -> tuple[str, tuple[int, ...], tuple[int, ...]]:
    """(id, image_size, shape of the cue array) of a cue file, without decompressing the cues."""
    try:
        with zipfile.ZipFile(path) as z:
            with z.open("id.npy") as f:
                image_id = str(np.lib.format.read_array(f, allow_pickle=False))
            with z.open("image_size.npy") as f:
                image_size = tuple(int(v) for v in np.lib.format.read_array(f, allow_pickle=False))
            with z.open("cues.npy") as f:
                version = np.lib.format.read_magic(f)
                read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) \
                    else np.lib.format.read_array_header_2_0
                shape = read_header(f)[0]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DatasetError(path, f"unreadable cue file ({e}); expected an .npz written by `sharpen cues sec`") from None
    return image_id, image_size, tuple(int(s) for s in shape)


def image_size_of(path: Path) -> tuple[int, int]:
    """(H, W) of an image file from its header."""
    try:
        with Image.open(path) as im:
            w, h = im.size
    except OSError as e:
        raise DatasetError(path, f"unreadable image ({e})") from None
    return h, w


def _resize(array: np.ndarray, size: tuple[int, int], resample: int) -> np.ndarray:
    if array.shape[:2] == tuple(size):
        return np.ascontiguousarray(array)
    return np.asarray(Image.fromarray(array).resize((size[1], size[0]), resample))


class SegTrainDataset(torch.utils.data.Dataset):
    """Segmenter training samples of a VOC-layout split (see the module docstring).

    ``size``: the side S of the network input; ``cues_dir``: the SEC cue folder (sec only);
    ``flip``: random horizontal flips seeded by (``seed``, epoch, index).
    """

    def __init__(self, voc: VOCSegmentation, size: int, cues_dir: str | Path | None = None,
                 supervision: str = "sec", flip: bool = True, seed: int = 0,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 progress: bool = False, cache_mib: int = 0):
        check_supervision(supervision)
        if size < 1:
            raise ValueError(f"input size must be positive, got {size}")
        self.voc, self.size, self.supervision, self.flip, self.seed = voc, int(size), supervision, flip, seed
        self.num_classes = voc.num_classes
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        self._mean_np, self._std_np = self.mean.numpy(), self.std.numpy()
        self.epoch = 0
        self.cues_dir: Path | None = None
        self.cue_record: dict[str, Any] | None = None
        self.grid: int | None = None
        self.cache = DecodedCache(self._decode, len(voc), 0, 0)
        if supervision == "full":
            if not voc.masks:
                raise DatasetError(voc.mask_dir, f"split {voc.split!r} has no ground-truth masks; full supervision "
                                                 "needs them (use supervision 'sec' with cues)")
            self.cache = DecodedCache(self._decode, len(voc), 4 * self.size ** 2, cache_mib, "segmenter samples")
            return
        if not voc.has_labels:
            raise DatasetError(voc.list_path, f"split {voc.split!r} has no image-level labels; SEC training needs them")
        if cues_dir is None:
            raise UsageError("supervision 'sec' needs a cue folder (cues_dir), written by `sharpen cues sec`")
        self.cues_dir = Path(cues_dir)
        self.cue_record = read_cue_record(self.cues_dir)
        grid = int(self.cue_record["params"]["grid"])
        if grid <= 0:
            raise DatasetError(self.cues_dir / CUES_RECORD,
                               f"cues on grid {grid} (the image's own size) differ in size from image to image and "
                               "cannot be batched; make them with cues.grid > 0 (41 for a 321 px input)")
        self.grid = grid
        self._check_cue_files(progress)
        per_item = 3 * self.size ** 2 + (3 + self.num_classes) * grid ** 2
        self.cache = DecodedCache(self._decode, len(voc), per_item, cache_mib, "segmenter samples")

    # ------------------------------------------------------------------ checks
    def cue_path(self, image_id: str) -> Path:
        assert self.cues_dir is not None
        return self.cues_dir / f"{image_id}.npz"

    def _check_cue_files(self, progress: bool) -> None:
        """Every image of the split has a cue file made for it: same id, image size, class count, grid."""
        from tqdm import tqdm

        assert self.cues_dir is not None and self.grid is not None
        present = {p.stem for p in self.cues_dir.glob("*.npz")}
        for image_id in self.voc.ids:
            if image_id not in present:
                raise DatasetError(self.cue_path(image_id),
                                   f"no cue file for image {image_id!r} of split {self.voc.split!r}; expected "
                                   f"{self.cue_path(image_id)} (run `sharpen cues sec` on maps of this split)")
        for image_id in tqdm(self.voc.ids, desc="checking cues", unit="file", disable=not progress, leave=False):
            path = self.cue_path(image_id)
            file_id, file_size, shape = cue_header(path)
            self._check_cue(path, image_id, file_id, file_size, shape, image_size_of(self.voc.image_path(image_id)))

    def _check_cue(self, path: Path, image_id: str, file_id: str, file_size: tuple[int, ...],
                   shape: tuple[int, ...], image_size: tuple[int, int]) -> None:
        if file_id != image_id:
            raise DatasetError(path, f"cue file is for image {file_id!r}, not {image_id!r}; expected the cues "
                                     "of this dataset's image (cues made for another dataset?)")
        if tuple(file_size) != tuple(image_size):
            raise DatasetError(path, f"cue file was made for an image of {file_size[0]}x{file_size[1]} (HxW) but "
                                     f"{self.voc.image_path(image_id)} is {image_size[0]}x{image_size[1]}; "
                                     "expected cues made for this dataset")
        if len(shape) != 3 or shape[0] != self.num_classes:
            raise DatasetError(path, f"cue file has {shape[0] if shape else 0} label planes (shape {shape}) but the "
                                     f"dataset has {self.num_classes} classes; expected cues made for this class set")
        if tuple(shape[1:]) != (self.grid, self.grid):
            raise DatasetError(path, f"cues are {shape[1]}x{shape[2]} but {CUES_RECORD} says grid {self.grid}; "
                                     "expected one grid for the whole folder")

    # ------------------------------------------------------------------ samples
    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.voc)

    def flipped(self, epoch: int, index: int) -> bool:
        """Whether sample ``index`` is flipped in ``epoch``: a hash of (seed, epoch, index)."""
        if not self.flip:
            return False
        digest = hashlib.blake2b(f"{self.seed}/{epoch}/{index}".encode(), digest_size=8).digest()
        return bool(digest[0] & 1)

    def _decode(self, index: int) -> dict[str, Any]:
        """The unflipped uint8 arrays of sample ``index`` (kept by ``self.cache`` when the split fits)."""
        raw = self.voc.load(index)
        image = raw["image"]
        label = np.asarray(raw.get("label", np.zeros(self.num_classes - 1, np.float32)), dtype=np.float32)
        out: dict[str, Any] = {"id": raw["id"], "big": _resize(image, (self.size, self.size), Image.BILINEAR),
                               "labels": np.concatenate([[1.0], label]).astype(np.float32)}
        if self.supervision == "full":
            out["mask"] = _resize(raw["mask"], (self.size, self.size), Image.NEAREST)
            return out
        path = self.cue_path(raw["id"])
        cue = load_cues(path)
        self._check_cue(path, raw["id"], cue["id"], cue["image_size"], tuple(cue["cues"].shape), image.shape[:2])
        out["cues"] = np.ascontiguousarray(cue["cues"], dtype=bool)
        out["small"] = _resize(image, (self.grid, self.grid), Image.BILINEAR)
        return out

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        epoch, index = (int(key[0]), int(key[1])) if isinstance(key, (tuple, list)) else (self.epoch, int(key))
        item = self.cache.get(index)
        flip = self.flipped(epoch, index)
        big = item["big"][:, ::-1] if flip else item["big"]
        # normalised in numpy (single-threaded): per-sample torch ops each start a parallel region,
        # which costs more than the arithmetic on a busy machine; same float32 operations, same values
        image = (big.transpose(2, 0, 1).astype(np.float32) / np.float32(255) - self._mean_np) / self._std_np
        sample: dict[str, Any] = {
            "id": item["id"], "flipped": flip,
            "image": torch.from_numpy(np.ascontiguousarray(image)),
            "labels": torch.from_numpy(item["labels"].copy()),
        }
        if self.supervision == "full":
            mask = item["mask"][:, ::-1] if flip else item["mask"]
            sample["mask"] = torch.from_numpy(np.ascontiguousarray(mask).astype(np.int64))
            return sample
        cues = item["cues"][:, :, ::-1] if flip else item["cues"]
        small = item["small"][:, ::-1] if flip else item["small"]
        sample["cues"] = torch.from_numpy(np.ascontiguousarray(cues, dtype=bool))
        sample["small_image"] = torch.from_numpy(np.array(small, dtype=np.uint8))
        return sample


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the tensors of a list of samples; ``id`` and ``flipped`` become lists."""
    batch: dict[str, Any] = {"id": [s["id"] for s in samples], "flipped": [s["flipped"] for s in samples]}
    for key in ("image", "labels", "cues", "small_image", "mask"):
        if key in samples[0]:
            batch[key] = torch.stack([s[key] for s in samples])
    return batch
