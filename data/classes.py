"""PASCAL VOC 2012 class names and the standard bit-interleaved colour palette (docs/method.md §7)."""

from __future__ import annotations

import numpy as np

VOC_CLASSES: tuple[str, ...] = (
    "background",
    "aeroplane", "bicycle", "bird", "boat", "bottle",
    "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person",
    "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
"""The 21 segmentation labels: index 0 is background, 1..20 the object classes."""

NUM_CLASSES: int = len(VOC_CLASSES)  # 21, background included
NUM_FG_CLASSES: int = NUM_CLASSES - 1  # 20, the image-level label length
IGNORE_INDEX: int = 255
"""Mask value for void pixels (object borders, "difficult" regions): ignored by losses and metrics."""


def voc_palette(n: int = 256) -> np.ndarray:
    """The standard VOC colour map as an (n, 3) uint8 array.

    Colour of label ``i``: the bits of ``i`` are spread over the three channels, most
    significant first (0 -> black, 1 -> (128, 0, 0), 2 -> (0, 128, 0), 255 -> (224, 224, 192)).
    """
    cmap = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap


VOC_PALETTE: np.ndarray = voc_palette()


def class_index(name: str) -> int:
    """Index (0..20) of a VOC class name; a clear error for an unknown one."""
    try:
        return VOC_CLASSES.index(name)
    except ValueError:
        raise KeyError(f"unknown class {name!r}; expected one of: {', '.join(VOC_CLASSES)}") from None
