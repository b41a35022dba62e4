"""SEC cue files, the hand-over from stage 2 (``cues sec`` writes them) to stage 3 (``segment
train`` reads them): one compressed ``<id>.npz`` per image and a ``sec.json`` record per folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sharpen_core.errors import DatasetError
from sharpen_core.io import atomic_path

CUES_RECORD = "sec.json"


def save_cues(path: str | Path, image_id: str, cues: np.ndarray, image_size: tuple[int, int], grid: int) -> None:
    """One compressed ``.npz``: ``cues`` (21, h, w) bool, ``id``, ``image_size`` (H, W), ``grid``; atomic."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, cues=np.asarray(cues, dtype=bool), id=np.array(image_id),
                            image_size=np.asarray(image_size, dtype=np.int64), grid=np.int64(grid))


def load_cues(path: str | Path) -> dict[str, Any]:
    """Read a cue file written by :func:`save_cues`."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {"cues": z["cues"], "id": str(z["id"]), "image_size": tuple(int(v) for v in z["image_size"]),
                    "grid": int(z["grid"])}
    except (OSError, ValueError, KeyError, EOFError) as e:
        raise DatasetError(path, f"unreadable cue file ({e}); expected an .npz written by `sharpen cues sec`") from None
