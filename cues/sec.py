"""SEC localization cues and pseudo-labels from class attention maps: pure functions (docs/method.md §4, §6).

Conventions: ``maps`` is a (C, h, w) float array of attention maps, one per entry of ``classes``
(segmentation labels 1..20; 0 is background), each max-normalised to [0, 1]. Cues are multi-hot
(num_labels, h, w) bool arrays: a pixel may carry several labels, or none.

- Foreground cue of class ``c`` (docs/method.md §4): where its map exceeds ``fg_threshold`` (0.2) times its
  maximum. A map that is zero everywhere gives no cue.
- Background cue: the ``bg_fraction`` (10 %) of pixels with the lowest attention (the maximum
  over the image's class maps), or with the lowest saliency when a saliency map is given (SEC
  used a saliency map; low attention is the usual substitute). Exactly ``round(fraction · n)``
  pixels: all pixels strictly below the cut value, then, among the pixels tied at the cut value,
  as many as needed, spread evenly over them in raster order (so a large flat zero region does not
  hand the background cue to its first rows).
- Pseudo-label (docs/method.md §6): argmax over a constant background plane ``τ`` and the class maps; a
  pixel whose best map equals ``τ`` is background (the plane comes first), ties between classes
  go to the earlier entry of ``classes``. Comparisons are in float32, the precision of the maps.
- The SEC grid: cues live on the segmenter's output grid (41×41 for a 321 px input), a square
  grid the whole image is resized onto, as SEC resizes images to 321×321. ``grid = 0`` keeps the
  image's own size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from data.classes import NUM_CLASSES
from sharpen_core.cue_files import CUES_RECORD, save_cues
from sharpen_core.records import refuse_changed
from sharpen_core.errors import ConfigError, DatasetError

NORM_EPS = 1e-7


def max_normalize(maps: np.ndarray, eps: float = NORM_EPS) -> np.ndarray:
    """``M / (max M + ε)`` per class (docs/method.md §1): (C, h, w) -> float32 in [0, 1]."""
    maps = np.asarray(maps, dtype=np.float32)
    if maps.shape[0] == 0:
        return maps
    return maps / (maps.reshape(maps.shape[0], -1).max(1)[:, None, None] + np.float32(eps))


def _check(maps: np.ndarray, classes: Sequence[int], num_labels: int) -> tuple[np.ndarray, np.ndarray]:
    maps = np.asarray(maps)
    classes = np.asarray(classes, dtype=np.int64).reshape(-1)
    if maps.ndim != 3:
        raise ValueError(f"maps must be (C, h, w), got shape {maps.shape}")
    if maps.shape[0] != classes.size:
        raise ValueError(f"{maps.shape[0]} maps for {classes.size} classes; expected one map per class")
    if classes.size and (classes.min() < 1 or classes.max() >= num_labels):
        raise ValueError(f"classes {classes.tolist()} outside 1..{num_labels - 1} (0 is background)")
    return maps, classes


def foreground_cues(maps: np.ndarray, classes: Sequence[int], fg_threshold: float = 0.2,
                    num_labels: int = NUM_CLASSES) -> np.ndarray:
    """(num_labels, h, w) bool: plane ``c`` true where the map of class ``c`` exceeds ``fg_threshold``·its max."""
    maps, classes = _check(maps, classes, num_labels)
    out = np.zeros((num_labels, *maps.shape[1:]), dtype=bool)
    for m, c in zip(maps.astype(np.float32), classes):
        peak = m.max() if m.size else 0.0
        if peak > 0:
            out[c] |= m > np.float32(fg_threshold) * peak
    return out


def lowest_fraction(score: np.ndarray, fraction: float) -> np.ndarray:
    """(h, w) bool: exactly ``round(fraction · n)`` pixels with the lowest ``score``; ties spread evenly."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"background fraction must lie in [0, 1], got {fraction}")
    score = np.asarray(score, dtype=np.float32)
    flat = score.ravel()
    k = int(round(fraction * flat.size))
    out = np.zeros(flat.size, dtype=bool)
    if k == 0:
        return out.reshape(score.shape)
    cut = np.partition(flat, k - 1)[k - 1]
    below = flat < cut
    out[below] = True
    need = k - int(below.sum())
    tied = np.flatnonzero(flat == cut)  # raster order
    out[tied[((np.arange(need) + 0.5) * tied.size / need).astype(np.int64)]] = True
    return out.reshape(score.shape)


def background_cue(maps: np.ndarray, fraction: float = 0.1, saliency: np.ndarray | None = None) -> np.ndarray:
    """(h, w) bool: the ``fraction`` of pixels with the lowest attention (max over classes) or saliency."""
    maps = np.asarray(maps, dtype=np.float32)
    if saliency is not None:
        saliency = np.asarray(saliency, dtype=np.float32)
        if saliency.shape != maps.shape[1:]:
            raise ValueError(f"saliency map is {saliency.shape}, the attention maps {maps.shape[1:]}; "
                             "expected the same size")
        return lowest_fraction(saliency, fraction)
    attention = maps.max(0) if maps.shape[0] else np.zeros(maps.shape[1:], dtype=np.float32)
    return lowest_fraction(attention, fraction)


def localization_cues(maps: np.ndarray, classes: Sequence[int], fg_threshold: float = 0.2,
                      bg_fraction: float = 0.1, saliency: np.ndarray | None = None,
                      num_labels: int = NUM_CLASSES) -> np.ndarray:
    """SEC's multi-hot cues (num_labels, h, w) bool: foreground planes 1.., background plane 0 (docs/method.md §4)."""
    cues = foreground_cues(maps, classes, fg_threshold, num_labels)
    cues[0] = background_cue(maps, bg_fraction, saliency)
    return cues


def pseudo_label(maps: np.ndarray, classes: Sequence[int], tau: float,
                 num_labels: int = NUM_CLASSES) -> np.ndarray:
    """(h, w) int64 label map: argmax over [τ plane, class maps] (docs/method.md §6); background wins a tie with τ."""
    maps, classes = _check(maps, classes, num_labels)
    scores = np.concatenate([np.full((1, *maps.shape[1:]), tau, dtype=np.float32), maps.astype(np.float32)])
    lut = np.concatenate([[0], classes]).astype(np.int64)
    return lut[scores.argmax(0)]


def best_class(maps: np.ndarray, classes: Sequence[int], num_labels: int = NUM_CLASSES
               ) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel the highest map value (float32) and its class label (0 where there is no class).

    ``pseudo_label(maps, classes, τ) == where(value > τ, label, 0)`` for every τ.
    """
    maps, classes = _check(maps, classes, num_labels)
    if classes.size == 0:
        return np.zeros(maps.shape[1:], np.float32), np.zeros(maps.shape[1:], np.int64)
    maps = maps.astype(np.float32)
    return maps.max(0), classes[maps.argmax(0)]


# --------------------------------------------------------------------------- grids

def grid_size(grid: int, image_size: tuple[int, int]) -> tuple[int, int]:
    """(h, w) of the cue grid: ``grid``×``grid``, or the image's size for ``grid = 0``."""
    if grid < 0:
        raise ConfigError(f"cues.grid must be 0 (image size) or positive, got {grid}")
    return (int(image_size[0]), int(image_size[1])) if grid == 0 else (grid, grid)


def resize_maps(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of (C, h, w) maps to ``size`` (antialiased when shrinking), float32."""
    maps = np.asarray(maps, dtype=np.float32)
    if tuple(maps.shape[1:]) == tuple(size) or maps.shape[0] == 0:
        return maps if maps.shape[0] else np.zeros((0, *size), np.float32)
    shrink = size[0] < maps.shape[1] or size[1] < maps.shape[2]
    out = F.interpolate(torch.from_numpy(np.ascontiguousarray(maps))[None], size=tuple(size), mode="bilinear",
                        align_corners=False, antialias=shrink)[0]
    return out.clamp_(min=0).numpy()


def nearest_resize(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of the last two axes (pixel centres), any dtype."""
    h, w = labels.shape[-2:]
    rows = np.minimum(((np.arange(size[0]) + 0.5) * h / size[0]).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(size[1]) + 0.5) * w / size[1]).astype(np.int64), w - 1)
    return labels[..., rows[:, None], cols[None, :]]


def cues_on_grid(maps: np.ndarray, classes: Sequence[int], grid: int, fg_threshold: float = 0.2,
                 bg_fraction: float = 0.1, saliency: np.ndarray | None = None,
                 num_labels: int = NUM_CLASSES) -> np.ndarray:
    """Localization cues of image-resolution maps on the SEC grid: resize, re-normalise, threshold."""
    size = grid_size(grid, maps.shape[1:])
    small = max_normalize(resize_maps(maps, size))
    sal = None if saliency is None else resize_maps(np.asarray(saliency, np.float32)[None], size)[0]
    return localization_cues(small, classes, fg_threshold, bg_fraction, sal, num_labels)


# --------------------------------------------------------------------------- files (side effects)

def read_saliency(saliency_dir: str | Path, image_id: str) -> np.ndarray:
    """A grey saliency PNG ``<saliency_dir>/<id>.png`` as float32 in [0, 1] (high = salient)."""
    from PIL import Image

    from sharpen_core.errors import DatasetError

    path = Path(saliency_dir) / f"{image_id}.png"
    if not path.is_file():
        raise DatasetError(path, "saliency map not found; expected a grey PNG per image for cues.bg_rule = "
                                 "'saliency' (or use cues.bg_rule = 'lowest')")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("L"), dtype=np.float32) / 255.0
    except OSError as e:
        raise DatasetError(path, f"unreadable saliency map ({e}); expected a grey PNG") from None


def cue_params(cues_cfg: Any) -> dict[str, Any]:
    """The [cues] keys that decide the SEC cues (saved with them)."""
    if cues_cfg.bg_rule not in ("lowest", "saliency"):
        raise ConfigError(f"unknown cues.bg_rule {cues_cfg.bg_rule!r}; expected 'lowest' or 'saliency'")
    if cues_cfg.bg_rule == "saliency" and not cues_cfg.saliency_dir:
        raise ConfigError("cues.bg_rule = 'saliency' needs cues.saliency_dir (a folder of <id>.png saliency maps)")
    if not 0.0 <= cues_cfg.fg_threshold <= 1.0:
        raise ConfigError(f"cues.fg_threshold must lie in [0, 1], got {cues_cfg.fg_threshold}")
    if not 0.0 <= cues_cfg.bg_fraction <= 1.0:
        raise ConfigError(f"cues.bg_fraction must lie in [0, 1], got {cues_cfg.bg_fraction}")
    grid_size(cues_cfg.grid, (1, 1))
    return {"fg_threshold": cues_cfg.fg_threshold, "bg_rule": cues_cfg.bg_rule, "bg_fraction": cues_cfg.bg_fraction,
            "saliency_dir": cues_cfg.saliency_dir if cues_cfg.bg_rule == "saliency" else "", "grid": cues_cfg.grid}


def image_cues(maps: np.ndarray, classes: Sequence[int], image_id: str, params: dict[str, Any]) -> np.ndarray:
    """The cues of one image per ``params`` (from :func:`cue_params`)."""
    saliency = read_saliency(params["saliency_dir"], image_id) if params["bg_rule"] == "saliency" else None
    if saliency is not None and saliency.shape != maps.shape[1:]:
        saliency = resize_maps(saliency[None], maps.shape[1:])[0]
    return cues_on_grid(maps, classes, params["grid"], params["fg_threshold"], params["bg_fraction"], saliency)


def write_sec_cues(maps_dir: str | Path, cues_cfg: Any, out_dir: str | Path | None = None,
                   progress: bool = True) -> dict[str, Any]:
    """SEC cues for every map file of an extraction folder, into ``out_dir`` (default MAPS_DIR/sec).

    Writes ``<id>.npz`` per image and ``sec.json`` with the cue parameters, the extraction's
    parameters, counts and timings. Files already there with the same parameters are kept.
    """
    import json
    import time

    from tqdm import tqdm

    from sharpen_core.io import write_json_atomic

    from .extract import MAPS_SUBDIR, gt_maps, load_maps, read_extract_params

    maps_dir = Path(maps_dir)
    extract_params = read_extract_params(maps_dir)
    params = cue_params(cues_cfg)
    out_dir = Path(out_dir) if out_dir is not None else maps_dir / "sec"
    record_path = out_dir / CUES_RECORD
    if record_path.is_file():
        old = json.loads(record_path.read_text())
        refuse_changed(record_path, "cues", old, {"params": params, "extract": extract_params}, folder=out_dir)
    files = sorted((maps_dir / MAPS_SUBDIR).glob("*.npz"))
    if not files:
        raise DatasetError(maps_dir / MAPS_SUBDIR, "no map files; run `sharpen cues extract` first")
    t0 = time.perf_counter()
    written = 0
    fg_pixels = np.zeros(NUM_CLASSES, dtype=np.int64)
    for path in tqdm(files, desc="SEC cues", unit="img", disable=not progress, leave=False):
        target = out_dir / path.name
        if target.is_file():
            continue
        m = load_maps(path)
        maps, classes = gt_maps(m, path)
        cues = image_cues(maps, classes, m["id"], params)
        save_cues(target, m["id"], cues, m["maps"].shape[1:], params["grid"])
        fg_pixels += cues.reshape(NUM_CLASSES, -1).sum(1)
        written += 1
    record = {"stage": "cues sec", "params": params, "extract": extract_params, "maps_dir": str(maps_dir),
              "images": len(files), "written": written, "skipped": len(files) - written,
              "seconds": time.perf_counter() - t0}
    write_json_atomic(record_path, record)
    return record
