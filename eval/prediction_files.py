"""One predicted label map: decode a PNG (file or archive member) and check it against the image
(size, values 0..20, no void), with errors naming the file and member."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from data.classes import IGNORE_INDEX, NUM_CLASSES
from sharpen_core.errors import DatasetError


def _error(path: str | Path, member: str | None, problem: str) -> DatasetError:
    """A DatasetError naming ``path`` and, inside an archive, the ``member``."""
    return DatasetError(path, problem if member is None else f"member {member}: {problem}")


def decode_label_png(data: bytes | Path, path: str | Path, member: str | None = None) -> np.ndarray:
    """An (H, W) uint8 label array from a PNG file or its bytes; must be a palette or grey image."""
    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as im:
            im.load()
            if im.format != "PNG":
                raise _error(path, member, f"is a {im.format} image; expected a palette PNG")
            if im.mode not in ("P", "L"):
                raise _error(path, member, f"prediction has PIL mode {im.mode!r}; expected a palette or grey PNG")
            return np.array(im, dtype=np.uint8)
    except DatasetError:
        raise
    except (OSError, SyntaxError, ValueError) as e:
        raise _error(path, member, f"corrupt prediction PNG ({e})") from None


def check_prediction(pred: np.ndarray, shape: tuple[int, int], num_classes: int, path: str | Path,
                     member: str | None = None) -> np.ndarray:
    """``pred`` if it has the image's ``shape`` and only values ``0..num_classes-1`` (no void 255)."""
    if pred.shape != tuple(shape):
        raise _error(path, member, f"prediction is {pred.shape[1]}x{pred.shape[0]} (WxH); expected the image "
                                   f"size {shape[1]}x{shape[0]}")
    if pred.max(initial=0) >= num_classes:
        if (pred == IGNORE_INDEX).any():
            raise _error(path, member, f"prediction has void ({IGNORE_INDEX}) pixels; expected values "
                                       f"0-{num_classes - 1} only (every pixel gets a class)")
        bad = np.unique(pred[pred >= num_classes])
        raise _error(path, member, f"prediction values {bad[:10].tolist()} out of range; expected "
                                   f"0-{num_classes - 1}")
    return pred


def read_prediction(path: Path, shape: tuple[int, int], num_classes: int = NUM_CLASSES) -> np.ndarray:
    """A predicted label PNG, checked: present, readable, single channel, the image's size, values < num_classes."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(path, "prediction missing; expected one <id>.png per image of the split")
    return check_prediction(decode_label_png(path, path), shape, num_classes, path)
