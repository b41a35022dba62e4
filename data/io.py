"""Image and palette-PNG input/output, with validation and atomic writes.

Every reader raises :class:`sharpen_core.errors.DatasetError` naming the file on a missing, corrupt or
malformed input, so that no stage fails with a bare PIL or numpy traceback.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .classes import IGNORE_INDEX, NUM_CLASSES, VOC_PALETTE
from sharpen_core.errors import DatasetError
from sharpen_core.io import write_bytes_atomic

_PIL_ERRORS = (OSError, UnidentifiedImageError, SyntaxError, ValueError)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as an (H, W, 3) uint8 RGB array."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(path, "image file not found")
    try:
        with Image.open(path) as im:
            im.load()
            arr = np.asarray(im.convert("RGB"))
    except _PIL_ERRORS as e:
        raise DatasetError(path, f"corrupt or unreadable image ({e}); expected a JPEG/PNG RGB image") from None
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DatasetError(path, "empty image (0 pixels)")
    return arr


def read_mask(path: str | Path, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Read a segmentation mask (palette or grey PNG) as an (H, W) uint8 label array.

    Values must lie in ``0..num_classes-1`` or be 255 (void); anything else is an error
    naming the file and the offending values.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(path, "mask file not found")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode not in ("P", "L"):
                raise DatasetError(
                    path, f"mask has PIL mode {im.mode!r}; expected a single-channel palette ('P') or grey ('L') PNG"
                )
            arr = np.array(im, dtype=np.uint8)
    except DatasetError:
        raise
    except _PIL_ERRORS as e:
        raise DatasetError(path, f"corrupt or unreadable mask ({e}); expected a palette PNG") from None
    bad = np.unique(arr[(arr >= num_classes) & (arr != IGNORE_INDEX)])
    if bad.size:
        shown = ", ".join(str(int(v)) for v in bad[:10])
        raise DatasetError(
            path, f"mask values {shown} out of range; expected 0-{num_classes - 1} or {IGNORE_INDEX} (void)"
        )
    return arr


def encode_palette_png(mask: np.ndarray) -> bytes:
    """Encode an (H, W) uint8 label array as a VOC palette PNG."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a mask must be 2-D (H, W), got shape {mask.shape}")
    if mask.dtype != np.uint8:
        if mask.min() < 0 or mask.max() > 255:
            raise ValueError("mask values must lie in 0..255")
        mask = mask.astype(np.uint8)
    mask = np.ascontiguousarray(mask)
    im = Image.frombytes("P", (mask.shape[1], mask.shape[0]), mask.tobytes())
    im.putpalette(VOC_PALETTE.reshape(-1).tolist())
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def write_mask(path: str | Path, mask: np.ndarray) -> None:
    """Write a label array as a palette PNG, atomically."""
    write_bytes_atomic(path, encode_palette_png(mask))


def write_image(path: str | Path, image: np.ndarray, quality: int = 92) -> None:
    """Write an (H, W, 3) uint8 RGB array as JPEG (by suffix: .jpg/.jpeg) or PNG, atomically."""
    path = Path(path)
    im = Image.fromarray(np.asarray(image, dtype=np.uint8))
    buf = io.BytesIO()
    if path.suffix.lower() in (".jpg", ".jpeg"):
        im.save(buf, format="JPEG", quality=quality)
    else:
        im.save(buf, format="PNG")
    write_bytes_atomic(path, buf.getvalue())
