"""Batched augmentation of classifier inputs in the training process: random-resized crop and
horizontal flip of a whole uint8 batch in one ``grid_sample`` call (no loader processes needed).

Each image's crop box and flip are a pure function of (seed, epoch, dataset index), drawn from a
generator seeded by their hash (as :class:`classify.data.SeededDataset` does), so a batch's
augmentation depends neither on the batch it falls in, nor on loader workers, DDP processes or a
resume. A box is ``(cx, cy, w, h, flip)`` in fractions of the image: area fraction ``a`` uniform
in ``crop_scale``, aspect ratio ``r`` log-uniform in ``crop_ratio``, ``w = sqrt(a·r)``,
``h = sqrt(a/r)`` (both shrunk by the same factor when one exceeds 1), the centre uniform where
the box fits. ``crop_scale = crop_ratio = (1, 1)`` gives the whole image: the output is then the
input exactly (flipped or not), normalised.
"""

from __future__ import annotations

import hashlib
import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from sharpen_core.errors import ConfigError


def _generator(seed: int, epoch: int, index: int) -> torch.Generator:
    digest = hashlib.blake2b(f"{seed}/{epoch}/{index}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))


def crop_boxes(seed: int, epoch: int, indices: Sequence[int] | Tensor, crop_scale: Sequence[float] = (1.0, 1.0),
               crop_ratio: Sequence[float] = (1.0, 1.0), hflip: bool = True) -> Tensor:
    """(B, 5) float64 boxes ``(cx, cy, w, h, flip)`` of the images ``indices`` in ``epoch`` (see the module doc)."""
    lo, hi = (float(v) for v in crop_scale)
    rlo, rhi = (float(v) for v in crop_ratio)
    if not (0 < lo <= hi <= 1) or not (0 < rlo <= rhi):
        raise ConfigError(f"classify.crop_scale/crop_ratio: crop scale {list(crop_scale)} and ratio "
                          f"{list(crop_ratio)}: expected 0 < scale_min <= scale_max <= 1 and 0 < ratio_min <= ratio_max")
    rows = []
    for index in (indices.tolist() if isinstance(indices, Tensor) else indices):
        u = torch.rand(5, generator=_generator(seed, epoch, int(index)), dtype=torch.float64).tolist()
        area = lo + (hi - lo) * u[0]
        ratio = math.exp(math.log(rlo) + (math.log(rhi) - math.log(rlo)) * u[1])
        w, h = math.sqrt(area * ratio), math.sqrt(area / ratio)
        shrink = max(w, h, 1.0)
        w, h = w / shrink, h / shrink
        cx, cy = w / 2 + (1 - w) * u[2], h / 2 + (1 - h) * u[3]
        rows.append([cx, cy, w, h, 1.0 if hflip and u[4] < 0.5 else 0.0])
    return torch.tensor(rows, dtype=torch.float64).reshape(-1, 5)


def random_resized_crop(images: Tensor, boxes: Tensor, size: int, mean: Sequence[float], std: Sequence[float]
                        ) -> Tensor:
    """Crop ``boxes`` out of uint8 ``images`` (B, 3, H, W), resize each to ``size``² (bilinear), flip
    where the box says so, and normalise with ``mean``/``std``: float32 (B, 3, size, size), on the
    images' device."""
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"expected uint8 images (B, 3, H, W), got {images.dtype} {tuple(images.shape)}")
    b = images.shape[0]
    if tuple(boxes.shape) != (b, 5):
        raise ValueError(f"expected ({b}, 5) boxes for {b} images, got {tuple(boxes.shape)}")
    boxes = boxes.to(device=images.device, dtype=torch.float32)
    cx, cy, w, h, flip = boxes.unbind(1)
    theta = torch.zeros(b, 2, 3, device=images.device)
    theta[:, 0, 0] = w * (1 - 2 * flip)
    theta[:, 0, 2] = 2 * cx - 1
    theta[:, 1, 1] = h
    theta[:, 1, 2] = 2 * cy - 1
    x = images.float()
    if tuple(images.shape[-2:]) == (size, size) and bool(((w == 1) & (h == 1)).all()):
        out = torch.where(flip.bool()[:, None, None, None], x.flip(-1), x)  # whole image: exact, no resampling
    else:
        grid = F.affine_grid(theta, [b, 3, size, size], align_corners=False)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    m = torch.tensor(mean, device=images.device).view(1, 3, 1, 1) * 255
    s = torch.tensor(std, device=images.device).view(1, 3, 1, 1) * 255
    return (out - m) / s
