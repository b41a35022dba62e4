"""Image and palette-PNG input/output, with validation and atomic writes.

Every reader raises :class:`data.errors.DatasetError` naming the file on a missing, corrupt or
malformed input, so that no stage fails with a bare PIL or numpy traceback.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from .classes import IGNORE_INDEX, NUM_CLASSES, VOC_PALETTE
from .errors import DatasetError

_PIL_ERRORS = (OSError, UnidentifiedImageError, SyntaxError, ValueError)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    A crash (or a full disk) leaves the old file, or no file, never a half-written one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str | Path, payload: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n").encode())


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


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


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
