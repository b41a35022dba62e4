"""Joint image/mask transforms on sample dicts ``{"image": HxWx3 uint8, "mask": HxW uint8, ...}``.

Geometry is applied to the image (bilinear) and the mask (nearest) together; crops pad the
image with the mean colour (zero after normalisation) and the mask with 255 (void), as
DeepLab/SEC training does. Randomness comes from torch's global generator, which a
``DataLoader`` seeds per worker, so runs are reproducible from the run's seed.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image

from sharpen_core.errors import ConfigError

from .classes import IGNORE_INDEX

Sample = dict[str, Any]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Compose:
    def __init__(self, transforms: Sequence[Callable[[Sample], Sample]]):
        self.transforms = list(transforms)

    def __call__(self, sample: Sample) -> Sample:
        for t in self.transforms:
            sample = t(sample)
        return sample

    def __repr__(self) -> str:
        return "Compose(" + ", ".join(repr(t) for t in self.transforms) + ")"


def _resize(sample: Sample, height: int, width: int) -> Sample:
    out = dict(sample)
    image = Image.fromarray(sample["image"])
    out["image"] = np.asarray(image.resize((width, height), Image.BILINEAR))
    if "mask" in sample:
        mask = Image.fromarray(sample["mask"])
        out["mask"] = np.asarray(mask.resize((width, height), Image.NEAREST))
    return out


class RandomScale:
    """Rescale image and mask by a factor drawn uniformly from ``[low, high]``."""

    def __init__(self, low: float, high: float):
        if not 0 < low <= high:
            raise ConfigError(f"scale range (data.scale_range) must satisfy 0 < low <= high, got [{low}, {high}]")
        self.low, self.high = low, high

    def __call__(self, sample: Sample) -> Sample:
        s = self.low + (self.high - self.low) * torch.rand(()).item()
        h, w = sample["image"].shape[:2]
        return _resize(sample, max(1, round(h * s)), max(1, round(w * s)))

    def __repr__(self) -> str:
        return f"RandomScale({self.low}, {self.high})"


class Resize:
    """Resize to a fixed (height, width), or the shorter side to ``size`` when ``keep_ratio``."""

    def __init__(self, size: int | tuple[int, int], keep_ratio: bool = False):
        self.size, self.keep_ratio = size, keep_ratio

    def __call__(self, sample: Sample) -> Sample:
        h, w = sample["image"].shape[:2]
        if isinstance(self.size, int) and self.keep_ratio:
            s = self.size / min(h, w)
            return _resize(sample, max(1, round(h * s)), max(1, round(w * s)))
        th, tw = (self.size, self.size) if isinstance(self.size, int) else self.size
        return _resize(sample, th, tw)

    def __repr__(self) -> str:
        return f"Resize({self.size}, keep_ratio={self.keep_ratio})"


class RandomCrop:
    """Crop ``size`` x ``size`` at a random place, padding first where the image is smaller.

    The image is padded with ``fill`` (the mean colour, as uint8 RGB) and the mask with 255.
    """

    def __init__(self, size: int, fill: Sequence[int] = (124, 116, 104)):
        self.size = size
        self.fill = np.asarray(fill, dtype=np.uint8)

    def __call__(self, sample: Sample) -> Sample:
        out = dict(sample)
        image = sample["image"]
        h, w = image.shape[:2]
        ph, pw = max(self.size - h, 0), max(self.size - w, 0)
        if ph or pw:
            padded = np.empty((h + ph, w + pw, 3), dtype=np.uint8)
            padded[:] = self.fill
            padded[:h, :w] = image
            image = padded
            if "mask" in sample:
                mask = np.full((h + ph, w + pw), IGNORE_INDEX, dtype=np.uint8)
                mask[:h, :w] = sample["mask"]
                out["mask"] = mask
        H, W = image.shape[:2]
        top = int(torch.randint(0, H - self.size + 1, ()).item())
        left = int(torch.randint(0, W - self.size + 1, ()).item())
        out["image"] = image[top:top + self.size, left:left + self.size]
        if "mask" in out:
            out["mask"] = out["mask"][top:top + self.size, left:left + self.size]
        return out

    def __repr__(self) -> str:
        return f"RandomCrop({self.size})"


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, sample: Sample) -> Sample:
        if torch.rand(()).item() >= self.p:
            return sample
        out = dict(sample)
        out["image"] = sample["image"][:, ::-1]
        if "mask" in sample:
            out["mask"] = sample["mask"][:, ::-1]
        return out

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip({self.p})"


class Normalize:
    """To tensors: image (3, H, W) float32 normalised by mean/std, mask (H, W) int64, label float32."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def __call__(self, sample: Sample) -> Sample:
        out = dict(sample)
        image = torch.from_numpy(np.array(sample["image"], dtype=np.uint8, copy=True)).permute(2, 0, 1).float().div_(255)
        out["image"] = (image - self.mean) / self.std
        if "mask" in sample:
            out["mask"] = torch.from_numpy(np.array(sample["mask"], dtype=np.int64, copy=True))
        if "label" in sample:
            out["label"] = torch.as_tensor(sample["label"], dtype=torch.float32)
        return out

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()})"


def denormalize(image: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN,
                std: Sequence[float] = IMAGENET_STD) -> np.ndarray:
    """Invert :class:`Normalize` for one (3, H, W) tensor: an (H, W, 3) uint8 array."""
    m = torch.tensor(mean).view(3, 1, 1)
    s = torch.tensor(std).view(3, 1, 1)
    x = (image.detach().cpu().float() * s + m).clamp(0, 1).mul(255).round().byte()
    return x.permute(1, 2, 0).numpy()


def train_transform(crop_size: int, scale_range: Sequence[float] = (0.7, 1.3), hflip: bool = True,
                    mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> Compose:
    """Random rescale, pad-and-crop (mask padded with 255), flip, normalise."""
    fill = tuple(int(round(255 * m)) for m in mean)
    steps: list[Callable[[Sample], Sample]] = [RandomScale(*scale_range), RandomCrop(crop_size, fill)]
    if hflip:
        steps.append(RandomHorizontalFlip())
    steps.append(Normalize(mean, std))
    return Compose(steps)


def eval_transform(size: int | None = None, mean: Sequence[float] = IMAGENET_MEAN,
                   std: Sequence[float] = IMAGENET_STD) -> Compose:
    """Optionally resize to ``size`` x ``size``, then normalise (masks keep their geometry only if no resize)."""
    steps: list[Callable[[Sample], Sample]] = []
    if size is not None:
        steps.append(Resize(size))
    steps.append(Normalize(mean, std))
    return Compose(steps)
