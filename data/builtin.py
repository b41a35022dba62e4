"""The built-in synthetic WSSS dataset, generated deterministically in PASCAL VOC 2012 layout.

It poses the real weakly-supervised problem rather than a toy one:

* 12 VOC classes (with their VOC indices, so masks are ordinary VOC masks), grouped in four
  *body families* of three classes that share the body shape, textures and colours and differ
  only by a SMALL discriminative part (tail, head, cab, ...; about 8-15 % of the object's
  area). A classifier can rely on the part, so its attention covers only part of the object.
* Class-correlated scenes (sky, water, road/rails, grass, indoor), used with probability 0.7,
  so attention also leaks onto context (boat -> water, train -> rails).
* Body textures, per-instance colour jitter, background clutter that is no class, occlusion
  (later objects drawn over earlier ones; masks follow visibility), scale changes, rotation and
  flips, mild noise and blur, and a VOC-like void band (255) along every object boundary.
* VOC 2012's statistics where they matter for WSSS (generator version 2; measure them with
  ``sharpen data stats``): about 2 objects and 1.6 classes per image (VOC: 2.4 and 1.5), about
  30 % foreground pixels (VOC: about a quarter), one main object of 14-48 % of the image
  and smaller ones of 4-18 % (each object is sized by a target area; elongated shapes come out
  smaller where they do not fit the frame). At 96 px and output stride 16 (a 6 x 6 map) a main
  object spans about 5-17 cells and its discriminative part (about 12 % of it) one or two.
  Version 1 had 8 % foreground and objects of about 4 % of the image.

Layout written under ``out``::

    JPEGImages/<id>.jpg                       all splits
    SegmentationClass/<id>.png                train and val (VOC palette PNG)
    SegmentationObject/<id>.png               train and val instance masks (as VOC has)
    SegmentationClassTest/<id>.png            test masks, held back: no reader uses this folder
    ImageSets/Segmentation/{train,val,trainval,test}.txt
    builtin.json                              written last: its presence marks a complete build

Every image is rendered from its own random stream seeded by ``(seed, split, index)``, so a
build is byte-identical for a seed and size whatever the number of workers.
"""

from __future__ import annotations

import functools
import json
import math
import multiprocessing as mp
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from .classes import IGNORE_INDEX, VOC_CLASSES
from sharpen_core.errors import DatasetError, UsageError
from .io import write_image, write_mask
from sharpen_core.io import write_bytes_atomic, write_json_atomic

GENERATOR_VERSION = 2
MANIFEST_NAME = "builtin.json"
ID_PREFIX = "bi_"

BUILTIN_SIZES: dict[str, dict[str, int]] = {
    "small": {"train": 160, "val": 48, "test": 48},
    "default": {"train": 1600, "val": 320, "test": 320},
}
"""Images per split for each ``size``."""

BUILTIN_CLASS_IDS: tuple[int, ...] = (1, 3, 4, 6, 7, 8, 10, 12, 13, 15, 17, 19)
"""VOC indices of the classes used: aeroplane bird boat bus car cat cow dog horse person sheep train."""
BUILTIN_CLASS_NAMES: tuple[str, ...] = tuple(VOC_CLASSES[c] for c in BUILTIN_CLASS_IDS)

SPLIT_CODES: dict[str, int] = {"train": 0, "val": 1, "test": 2}
SCENES: tuple[str, ...] = ("sky", "water", "road", "grass", "indoor")

# Preferred scene of each class, used with probability CONTEXT_PROB.
CLASS_SCENE: dict[int, str] = {
    1: "sky", 3: "sky", 4: "water",
    6: "road", 7: "road", 19: "road",
    10: "grass", 13: "grass", 17: "grass",
    8: "indoor", 12: "indoor", 15: "indoor",
}
CONTEXT_PROB = 0.7

# Body families: the classes of a family share the body; only the small part tells them apart.
CLASS_FAMILY: dict[int, str] = {
    1: "capsule", 3: "capsule", 4: "capsule",
    6: "box", 7: "box", 19: "box",
    10: "quadruped", 13: "quadruped", 17: "quadruped",
    8: "upright", 12: "upright", 15: "upright",
}

IMAGE_SIDE = (96, 160)  # inclusive range of W and H
OBJECT_COUNT_P = (0.36, 0.30, 0.20, 0.14)  # P(1), P(2), P(3), P(4) objects: 2.1 per image (VOC 2012: 2.4)
SAME_CLASS_P = 0.38  # a further object repeats the primary class (VOC: 1.5 classes but 2.4 objects per image)
SAME_SCENE_P = 0.3  # ... else is a class of the primary's scene with this probability, else any class
# Target area of each object as a fraction of the image (before occlusion and the fit to the frame):
# the first (rear) object is the main one, later ones are smaller, as in VOC photos.
MAIN_AREA = (0.14, 0.4)
MAIN_AREA_ALONE = (0.18, 0.48)
OTHER_AREA = (0.04, 0.18)
FRAME_SLACK = 0.12  # an object's box may stick out of the frame by this fraction of its half-size
MIN_VISIBLE = 0.3  # an object must keep this fraction of its pixels visible (else not drawn)
MIN_LABELLED = 0.12  # ... and this fraction outside the void band
MAX_ATTEMPTS = 8  # re-renders (new sub-seed) of an image that failed a check


# =============================================================================== shapes
# All shapes are boolean tests over coordinate arrays (u, v): object-local units for objects,
# pixels for scenes. v grows downwards, as image rows do.

def ellipse(u: np.ndarray, v: np.ndarray, cu: float, cv: float, a: float, b: float,
            angle: float = 0.0) -> np.ndarray:
    """Inside an ellipse centred at (cu, cv) with semi-axes (a, b), rotated by ``angle`` radians."""
    du, dv = u - cu, v - cv
    if angle:
        c, s = math.cos(angle), math.sin(angle)
        du, dv = du * c + dv * s, -du * s + dv * c
    return (du / a) ** 2 + (dv / b) ** 2 <= 1.0


def box(u: np.ndarray, v: np.ndarray, cu: float, cv: float, hu: float, hv: float,
        radius: float = 0.0, angle: float = 0.0) -> np.ndarray:
    """Inside a (rounded, rotated) rectangle centred at (cu, cv) with half-sizes (hu, hv)."""
    du, dv = u - cu, v - cv
    if angle:
        c, s = math.cos(angle), math.sin(angle)
        du, dv = du * c + dv * s, -du * s + dv * c
    qu = np.abs(du) - hu + radius
    qv = np.abs(dv) - hv + radius
    outside = np.hypot(np.maximum(qu, 0), np.maximum(qv, 0))
    inside = np.minimum(np.maximum(qu, qv), 0)
    return outside + inside <= radius


def polygon(u: np.ndarray, v: np.ndarray, points: Iterable[tuple[float, float]]) -> np.ndarray:
    """Inside a simple polygon (even-odd crossing test, vectorised over pixels)."""
    pts = list(points)
    inside = np.zeros(np.broadcast(u, v).shape, dtype=bool)
    for (u1, v1), (u2, v2) in zip(pts, pts[1:] + pts[:1]):
        if v1 == v2:
            continue
        crosses = (v1 > v) != (v2 > v)
        u_cross = u1 + (v - v1) * (u2 - u1) / (v2 - v1)
        inside ^= crosses & (u < u_cross)
    return inside


def segment(u: np.ndarray, v: np.ndarray, p: tuple[float, float], q: tuple[float, float],
            half_width: float) -> np.ndarray:
    """Within ``half_width`` of the line segment p-q (a capsule)."""
    pu, pv = p
    du, dv = q[0] - pu, q[1] - pv
    t = np.clip(((u - pu) * du + (v - pv) * dv) / (du * du + dv * dv + 1e-12), 0.0, 1.0)
    return np.hypot(u - pu - t * du, v - pv - t * dv) <= half_width


def mirror_v(points: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """A polygon reflected across the v = 0 axis."""
    return [(a, -b) for a, b in points]


def mirror_u(points: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """A polygon reflected across the u = 0 axis."""
    return [(-a, b) for a, b in points]


# =============================================================================== colour helpers

def jitter(rng: np.random.Generator, colour: Iterable[float], amount: float = 18.0,
           brightness: tuple[float, float] = (0.85, 1.15)) -> np.ndarray:
    """A colour with random brightness and per-channel offsets."""
    c = np.asarray(colour, dtype=np.float32) * rng.uniform(*brightness)
    return np.clip(c + rng.uniform(-amount, amount, 3), 0, 255).astype(np.float32)


def blend(base: np.ndarray, other: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Per-pixel mix of two colours (or colour fields) by ``t`` in [0, 1] (H, W)."""
    t = t[..., None].astype(np.float32)
    return base * (1.0 - t) + other * t


def smooth_noise(rng: np.random.Generator, h: int, w: int, cells: tuple[int, int]) -> np.ndarray:
    """Value noise in [0, 1]: a random (cy+1, cx+1) grid bilinearly upsampled to (h, w)."""
    cy, cx = cells
    grid = rng.random((cy + 1, cx + 1), dtype=np.float32)
    y = np.linspace(0, cy, h, endpoint=False, dtype=np.float32)
    x = np.linspace(0, cx, w, endpoint=False, dtype=np.float32)
    y0, x0 = y.astype(np.int64), x.astype(np.int64)
    fy, fx = (y - y0)[:, None], (x - x0)[None, :]
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x0 + 1] * fx
    bottom = grid[y0 + 1][:, x0] * (1 - fx) + grid[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def vertical_gradient(h: int, w: int, top: np.ndarray, bottom: np.ndarray,
                      start: int = 0, stop: int | None = None) -> np.ndarray:
    """An (h, w, 3) field fading from ``top`` at row ``start`` to ``bottom`` at row ``stop``."""
    stop = h if stop is None else stop
    t = np.clip((np.arange(h, dtype=np.float32) - start) / max(stop - start, 1), 0, 1)
    col = top[None, :] * (1 - t[:, None]) + bottom[None, :] * t[:, None]
    return np.broadcast_to(col[:, None, :], (h, w, 3)).astype(np.float32)


def pixel_grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (x, y) as float32 arrays of shape (1, w) and (h, 1)."""
    return (np.arange(w, dtype=np.float32)[None, :] + 0.5, np.arange(h, dtype=np.float32)[:, None] + 0.5)


# =============================================================================== textures
# A texture maps object-local coordinates to t in [0, 1], the mix between two body colours.
# ``freq`` is in cycles per object unit (chosen from a period in pixels, to avoid aliasing).

def texture_plain(rng, u, v, freq):
    """No pattern, only a faint large-scale shading."""
    return 0.15 * (0.5 + 0.5 * np.sin(2.3 * u + rng.uniform(0, 6.28)))


def texture_stripes(rng, u, v, freq):
    """Parallel stripes at a random angle (liveries, window rows, fur, clothes)."""
    a = rng.choice([0.0, math.pi / 2, rng.uniform(0, math.pi)])
    phase = np.cos(a) * u + np.sin(a) * v
    return (np.sin(2 * math.pi * freq * phase + rng.uniform(0, 6.28)) > rng.uniform(-0.3, 0.5)).astype(np.float32)


def texture_checker(rng, u, v, freq):
    """A checkerboard (tartan-like clothes, window grids)."""
    f = freq * 0.5
    return ((np.floor(u * f + rng.random()) + np.floor(v * f + rng.random())) % 2).astype(np.float32)


def texture_dots(rng, u, v, freq):
    """A regular grid of round dots (spots, fleece, polka dots)."""
    f = freq * 0.5
    fu, fv = (u * f + rng.random()) % 1.0 - 0.5, (v * f + rng.random()) % 1.0 - 0.5
    return (fu * fu + fv * fv < rng.uniform(0.04, 0.1)).astype(np.float32)


def texture_noise(rng, u, v, freq):
    """Fine random grain (feathers, fur)."""
    return rng.random(np.broadcast(u, v).shape, dtype=np.float32) * 0.8


def texture_patches(rng, u, v, freq):
    """A few irregular blotches (cow-like patches)."""
    t = np.zeros(np.broadcast(u, v).shape, dtype=np.float32)
    for _ in range(int(rng.integers(3, 7))):
        t[ellipse(u, v, rng.uniform(-0.4, 0.3), rng.uniform(-0.15, 0.15), rng.uniform(0.05, 0.14),
                  rng.uniform(0.04, 0.1), rng.uniform(0, math.pi))] = 1.0
    return t


TEXTURES: dict[str, Callable[..., np.ndarray]] = {
    "plain": texture_plain, "stripes": texture_stripes, "checker": texture_checker,
    "dots": texture_dots, "noise": texture_noise, "patches": texture_patches,
}


# =============================================================================== scenes
# A scene returns an (h, w, 3) float32 RGB background in 0..255.

def sky_colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Zenith and horizon colours of a clear-ish sky."""
    return jitter(rng, (55, 105, 195), 15), jitter(rng, (175, 205, 238), 12, (0.95, 1.05))


def draw_clouds(rng: np.random.Generator, img: np.ndarray, n: int, y_max: float) -> None:
    """Soft white clouds, each a cluster of blended ellipses, above row ``y_max``."""
    h, w = img.shape[:2]
    x, y = pixel_grid(h, w)
    white = jitter(rng, (246, 246, 250), 6, (0.95, 1.02))
    for _ in range(n):
        cx, cy = rng.uniform(0, w), rng.uniform(0, y_max)
        alpha = np.zeros((h, w), dtype=np.float32)
        for _ in range(int(rng.integers(3, 6))):
            a, b = rng.uniform(0.06, 0.16) * w, rng.uniform(0.03, 0.07) * h
            d = ((x - cx - rng.uniform(-0.12, 0.12) * w) / a) ** 2 + ((y - cy - rng.uniform(-0.04, 0.04) * h) / b) ** 2
            alpha = np.maximum(alpha, np.clip((1.0 - d) * 2.0, 0, 1))
        img[:] = blend(img, white, alpha * rng.uniform(0.7, 0.95))


def scene_sky(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Blue gradient sky with clouds; sometimes a far hill line at the bottom."""
    top, horizon = sky_colours(rng)
    img = vertical_gradient(h, w, top, horizon).copy()
    draw_clouds(rng, img, int(rng.integers(1, 5)), h * 0.9)
    if rng.random() < 0.3:
        x, y = pixel_grid(h, w)
        line = h * rng.uniform(0.82, 0.92) + h * 0.04 * np.sin(x / w * rng.uniform(3, 9) + rng.uniform(0, 6))
        img[np.broadcast_to(y > line, (h, w))] = jitter(rng, (70, 100, 70), 15)
    return img


def scene_water(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Sea or lake: a sky band above the horizon, blue water with waves and glints below."""
    top, horizon_col = sky_colours(rng)
    horizon = int(h * rng.uniform(0.12, 0.35))
    img = vertical_gradient(h, w, top, horizon_col, 0, horizon).copy()
    x, y = pixel_grid(h, w)
    deep, shallow = jitter(rng, (25, 75, 140), 15), jitter(rng, (45, 115, 170), 15)
    water = vertical_gradient(h, w, shallow, deep, horizon, h)
    depth = np.clip((y - horizon) / max(h - horizon, 1), 0, 1)  # waves grow towards the viewer
    freq = 0.25 + 0.5 * (1.0 - depth)
    waves = np.sin(y * freq * 2.2 + 1.5 * np.sin(x * rng.uniform(0.08, 0.2) + rng.uniform(0, 6)))
    shade = (1.0 + 0.13 * waves)[..., None]
    below = np.broadcast_to(y >= horizon, (h, w))
    img[below] = (water * shade)[below]
    glints = below & (rng.random((h, w)) > 0.985) & (waves > 0.6)
    img[glints] = jitter(rng, (220, 235, 250), 8)
    return img


def scene_road(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A street (asphalt with lane marks) or a railway (gravel, rails, sleepers) under a city skyline."""
    top, horizon_col = sky_colours(rng)
    horizon = int(h * rng.uniform(0.2, 0.42))
    img = vertical_gradient(h, w, top * 0.9 + 20, horizon_col, 0, horizon).copy()
    x, y = pixel_grid(h, w)
    # skyline: grey blocks of buildings
    left = 0.0
    while left < w:
        bw = rng.uniform(0.08, 0.22) * w
        bh = rng.uniform(0.3, 0.95) * horizon
        img[int(horizon - bh):horizon, int(left):int(left + bw)] = jitter(rng, (130, 130, 140), 30)
        left += bw + rng.uniform(0, 0.05) * w
    ground = np.broadcast_to(y >= horizon, (h, w))
    grain = rng.normal(0, 7, (h, w)).astype(np.float32)[..., None]
    if rng.random() < 0.6:  # asphalt street
        asphalt = jitter(rng, (92, 93, 98), 10)
        img[ground] = (asphalt + grain + 12 * smooth_noise(rng, h, w, (3, 4))[..., None])[ground]
        for lane in rng.uniform(horizon + 4, h - 3, size=int(rng.integers(1, 3))):
            period, dash = rng.uniform(14, 26), rng.uniform(0.45, 0.7)
            mark = np.broadcast_to((np.abs(y - lane) < 1.2) & (((x / period) % 1.0) < dash), (h, w)) & ground
            img[mark] = jitter(rng, (235, 235, 225) if rng.random() < 0.7 else (235, 200, 40), 10)
    else:  # railway
        gravel = jitter(rng, (120, 108, 95), 12)
        img[ground] = (gravel + 1.8 * grain)[ground]
        for track in rng.uniform(horizon + 8, h - 6, size=int(rng.integers(1, 3))):
            gauge = rng.uniform(5, 9)
            sleepers = np.broadcast_to((np.abs(y - track) < gauge + 2) & ((x % rng.uniform(7, 11)) < 3), (h, w))
            img[sleepers & ground] = jitter(rng, (90, 65, 45), 10)
            for rail in (track - gauge, track + gauge):
                img[np.broadcast_to(np.abs(y - rail) < 1.0, (h, w)) & ground] = jitter(rng, (60, 60, 65), 8)
    return img


def scene_grass(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A green field (blotchy, with vertical blades and flowers), often under a sky band."""
    x, y = pixel_grid(h, w)
    horizon = int(h * rng.uniform(0.12, 0.35)) if rng.random() < 0.65 else 0
    top, horizon_col = sky_colours(rng)
    img = vertical_gradient(h, w, top, horizon_col, 0, max(horizon, 1)).copy()
    if horizon:
        draw_clouds(rng, img, int(rng.integers(0, 3)), horizon * 0.8)
    green = jitter(rng, (75, 140, 50), 15)
    blotch = smooth_noise(rng, h, w, (3, 4)) - 0.5
    blades = np.repeat(rng.random((h // 4 + 1, w), dtype=np.float32), 4, axis=0)[:h] - 0.5
    field = green[None, None, :] * (1.0 + 0.35 * blotch[..., None] + 0.25 * blades[..., None])
    ground = np.broadcast_to(y >= horizon, (h, w))
    img[ground] = field[ground]
    flowers = ground & (rng.random((h, w)) > 0.993)
    img[flowers] = jitter(rng, [(240, 230, 60), (250, 250, 250), (230, 120, 170)][int(rng.integers(3))], 10)
    return img


def scene_indoor(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A room: a wall of brick, wallpaper or wood panels above a floor of planks or carpet."""
    x, y = pixel_grid(h, w)
    wall_kind = ("brick", "wallpaper", "wood")[int(rng.integers(3))]
    wall = {"brick": _brick_wall, "wallpaper": _wallpaper, "wood": _wood}[wall_kind](rng, h, w)
    floor_line = int(h * rng.uniform(0.55, 0.8)) if rng.random() < 0.7 else h
    img = wall.copy()
    if floor_line < h:
        floor = _wood(rng, h, w) if rng.random() < 0.5 else _carpet(rng, h, w)
        below = np.broadcast_to(y >= floor_line, (h, w))
        img[below] = floor[below]
        img[floor_line:floor_line + 2] = jitter(rng, (70, 55, 40), 10)  # skirting board
    return img


def _brick_wall(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Rows of offset bricks, each with its own shade, and light mortar lines."""
    x, y = pixel_grid(h, w)
    bh = rng.uniform(6, 10)
    bw = bh * rng.uniform(2.0, 2.8)
    row = np.floor(y / bh)
    col = np.floor((x + (row % 2) * bw / 2) / bw)
    shade = rng.uniform(0.8, 1.15, size=512).astype(np.float32)
    brick_id = ((row * 31 + col * 17) % 512).astype(np.int64)
    base = jitter(rng, (160, 75, 55), 15)
    img = base[None, None, :] * shade[brick_id][..., None]
    mortar = ((y % bh) < 1.3) | (((x + (row % 2) * bw / 2) % bw) < 1.3)
    img[mortar] = jitter(rng, (200, 195, 185), 8)
    return img.astype(np.float32)


def _wallpaper(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A pastel wall with a repeating pattern (dots, diamonds or stripes)."""
    x, y = pixel_grid(h, w)
    base = jitter(rng, [(225, 215, 190), (200, 215, 225), (215, 200, 215), (205, 220, 195)][int(rng.integers(4))], 12)
    ink = base * rng.uniform(0.7, 0.85)
    p = rng.uniform(8, 14)
    kind = int(rng.integers(3))
    if kind == 0:
        t = (((x % p) - p / 2) ** 2 + ((y % p) - p / 2) ** 2) < (p * 0.18) ** 2
    elif kind == 1:
        t = (np.abs((x % p) - p / 2) + np.abs((y % p) - p / 2)) < p * 0.25
    else:
        t = np.broadcast_to((x % p) < p * 0.3, (h, w))
    return blend(np.broadcast_to(base, (h, w, 3)), np.broadcast_to(ink, (h, w, 3)),
                 np.broadcast_to(t, (h, w)).astype(np.float32)).astype(np.float32)


def _wood(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Horizontal planks with wavy grain and dark seams."""
    x, y = pixel_grid(h, w)
    base = jitter(rng, (165, 115, 70), 15)
    grain = np.sin(y * rng.uniform(0.8, 1.4) + 2.0 * np.sin(x * rng.uniform(0.03, 0.08) + y * 0.05))
    plank = rng.uniform(9, 16)
    shade = rng.uniform(0.85, 1.1, size=64).astype(np.float32)[(y // plank).astype(np.int64) % 64]
    img = base[None, None, :] * (shade * (1.0 + 0.08 * grain))[..., None]
    seam = np.broadcast_to((y % plank) < 1.0, (h, w))
    img[seam] = base * 0.45
    return img.astype(np.float32)


def _carpet(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A plain grainy carpet."""
    base = jitter(rng, [(120, 40, 45), (70, 80, 120), (150, 140, 120)][int(rng.integers(3))], 12)
    return (base[None, None, :] * (1.0 + 0.12 * rng.standard_normal((h, w, 1), dtype=np.float32))).astype(np.float32)


SCENE_FUNCS: dict[str, Callable[[np.random.Generator, int, int], np.ndarray]] = {
    "sky": scene_sky, "water": scene_water, "road": scene_road, "grass": scene_grass, "indoor": scene_indoor,
}


# =============================================================================== clutter
# Distractors are shapes that belong to no class; they are labelled background.

def clutter_items(rng: np.random.Generator, scene: str) -> list[str]:
    """Kinds of distractors for a scene: a few generic shapes plus scene-typical props."""
    props = {"sky": ["sun", "kite"], "water": ["buoy", "rock"], "road": ["pole", "cone", "sign"],
             "grass": ["tree", "rock", "fence"], "indoor": ["frame", "lamp", "shelf"]}[scene]
    n = int(rng.integers(1, 5))
    return [str(rng.choice(props)) if rng.random() < 0.6 else "shape" for _ in range(n)]


def draw_distractor(rng: np.random.Generator, kind: str, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """A distractor's (mask, colour field), both full-image."""
    x, y = pixel_grid(h, w)
    side = min(h, w)
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    r = rng.uniform(0.05, 0.14) * side
    colour = np.empty((h, w, 3), dtype=np.float32)
    colour[:] = rng.uniform(30, 230, 3)
    if kind == "sun":
        mask = ellipse(x, y, cx, rng.uniform(0, 0.3 * h), r, r)
        colour[:] = jitter(rng, (252, 235, 150), 5)
    elif kind == "kite":
        mask = polygon(x, y, [(cx, cy - r), (cx + 0.6 * r, cy), (cx, cy + 1.4 * r), (cx - 0.6 * r, cy)])
    elif kind == "buoy":
        mask = ellipse(x, y, cx, cy, 0.5 * r, 0.6 * r) | box(x, y, cx, cy - 0.9 * r, 0.1 * r, 0.4 * r)
        colour[:] = jitter(rng, (220, 80, 30), 20)
    elif kind == "rock":
        mask = ellipse(x, y, cx, cy, r, 0.6 * r, rng.uniform(-0.3, 0.3))
        colour[:] = jitter(rng, (125, 120, 115), 20)
        colour *= (1.0 + 0.15 * rng.standard_normal((h, w, 1), dtype=np.float32))
    elif kind == "pole":
        mask = box(x, y, cx, cy, rng.uniform(1.0, 2.5), 0.6 * h) | ellipse(x, y, cx, cy - 0.6 * h, 4, 4)
        colour[:] = jitter(rng, (80, 85, 90), 15)
    elif kind == "cone":
        mask = polygon(x, y, [(cx, cy - r), (cx + 0.5 * r, cy + 0.5 * r), (cx - 0.5 * r, cy + 0.5 * r)])
        colour[:] = jitter(rng, (240, 110, 20), 12)
        colour[(np.broadcast_to(y, (h, w)) % 6) < 2] = (240, 240, 240)
    elif kind == "sign":
        mask = ellipse(x, y, cx, cy, 0.5 * r, 0.5 * r) | box(x, y, cx, cy + r, 1.2, 0.6 * r)
        colour[:] = jitter(rng, (30, 80, 190) if rng.random() < 0.5 else (200, 30, 30), 15)
    elif kind == "tree":
        trunk = box(x, y, cx, cy + 0.8 * r, 0.15 * r, 0.8 * r)
        crown = ellipse(x, y, cx, cy - 0.3 * r, r, 1.1 * r)
        mask = trunk | crown
        colour[:] = jitter(rng, (40, 95, 40), 15)
        colour *= (0.85 + 0.3 * smooth_noise(rng, h, w, (8, 8)))[..., None]
        colour[trunk & ~crown] = jitter(rng, (90, 60, 35), 10)
    elif kind == "fence":
        posts = box(x, y, cx, cy, 0.9 * w, 0.4 * r) & (((x - cx) % (0.5 * r + 4)) < 2.5)
        mask = posts | box(x, y, cx, cy - 0.2 * r, 0.9 * w, 1.0)
        colour[:] = jitter(rng, (170, 140, 100), 15)
    elif kind == "frame":
        outer = box(x, y, cx, cy, r, 0.75 * r)
        inner = box(x, y, cx, cy, 0.8 * r, 0.55 * r)
        mask = outer
        colour[:] = jitter(rng, (120, 80, 40), 15)
        colour[inner] = (jitter(rng, rng.uniform(60, 220, 3), 0)[None, :]
                         * (0.8 + 0.4 * smooth_noise(rng, h, w, (3, 3)))[inner][:, None])
    elif kind == "lamp":
        shade = polygon(x, y, [(cx - 0.4 * r, cy - r), (cx + 0.4 * r, cy - r), (cx + 0.7 * r, cy),
                               (cx - 0.7 * r, cy)])
        mask = shade | box(x, y, cx, cy + r, 0.08 * r + 0.5, r)
        colour[:] = jitter(rng, (240, 220, 160), 12)
        colour[~shade] = jitter(rng, (60, 60, 60), 10)
    elif kind == "shelf":
        mask = box(x, y, cx, cy, 1.4 * r, 0.5 * r)
        colour[:] = jitter(rng, (130, 95, 60), 15)
        colour[(np.broadcast_to(x, (h, w)) % 9) < 3] = jitter(rng, rng.uniform(40, 220, 3), 0)
    else:  # a generic shape: circle, rectangle, triangle or ring
        k = int(rng.integers(4))
        if k == 0:
            mask = ellipse(x, y, cx, cy, r, r * rng.uniform(0.6, 1.0))
        elif k == 1:
            mask = box(x, y, cx, cy, r, r * rng.uniform(0.4, 1.0), 0.0, rng.uniform(0, math.pi))
        elif k == 2:
            mask = polygon(x, y, [(cx, cy - r), (cx + r, cy + 0.8 * r), (cx - r, cy + 0.8 * r)])
        else:
            mask = ellipse(x, y, cx, cy, r, r) & ~ellipse(x, y, cx, cy, 0.6 * r, 0.6 * r)
    return np.broadcast_to(mask, (h, w)), colour


# =============================================================================== objects

@dataclass
class Look:
    """The appearance of one object instance: body colours and texture."""

    base: np.ndarray
    alt: np.ndarray
    texture: str
    period_px: float


class ObjectCanvas:
    """One object being drawn over its (unclipped) bounding box, in object-local coordinates.

    ``u`` points to the object's front, ``v`` down; one unit is the object's size ``s`` in pixels.
    ``paint`` adds a region to the object mask with a colour; ``part=True`` marks it as the
    discriminative part (painting body over it later clears the mark).
    """

    def __init__(self, u: np.ndarray, v: np.ndarray, size_px: float):
        self.u, self.v, self.size_px = u, v, size_px
        self.mask = np.zeros(u.shape, dtype=bool)
        self.part = np.zeros(u.shape, dtype=bool)
        self.rgb = np.zeros(u.shape + (3,), dtype=np.float32)

    def paint(self, region: np.ndarray, colour: np.ndarray, part: bool = False) -> None:
        self.mask |= region
        self.rgb[region] = colour[region] if colour.ndim == 3 else colour
        if part:
            self.part |= region
        else:
            self.part &= ~region

    def surface(self, rng: np.random.Generator, look: Look) -> np.ndarray:
        """The body's colour field: textured mix of the look's colours, lit from above."""
        freq = self.size_px / look.period_px
        t = TEXTURES[look.texture](rng, self.u, self.v, freq)
        rgb = blend(np.broadcast_to(look.base, self.rgb.shape), np.broadcast_to(look.alt, self.rgb.shape), t)
        light = (1.05 - 0.3 * np.clip(self.v, -0.5, 0.5))[..., None]
        return rgb * light


FAMILY_PALETTES: dict[str, list[tuple[int, int, int]]] = {
    "capsule": [(205, 205, 212), (150, 156, 166), (110, 120, 140), (226, 220, 204), (140, 116, 92), (92, 96, 108)],
    "box": [(200, 46, 46), (46, 86, 184), (226, 226, 226), (46, 140, 72), (96, 96, 102), (224, 184, 42), (90, 60, 120)],
    "quadruped": [(140, 96, 60), (92, 62, 42), (226, 220, 206), (62, 56, 52), (176, 150, 112), (200, 190, 172)],
    "upright": [(180, 60, 60), (60, 90, 160), (70, 130, 80), (150, 120, 90), (200, 180, 120), (120, 120, 132),
                (110, 70, 130)],
}
FAMILY_TEXTURES: dict[str, tuple[str, ...]] = {
    "capsule": ("plain", "noise", "stripes"),
    "box": ("stripes", "checker", "plain"),
    "quadruped": ("patches", "dots", "noise"),
    "upright": ("stripes", "checker", "dots", "noise"),
}


def sample_look(rng: np.random.Generator, family: str) -> Look:
    """A random instance look from the family's shared palette and textures (no class cue)."""
    palette = FAMILY_PALETTES[family]
    base = jitter(rng, palette[int(rng.integers(len(palette)))])
    alt = jitter(rng, palette[int(rng.integers(len(palette)))]) if rng.random() < 0.5 else base * rng.uniform(0.55, 0.8)
    texture = str(rng.choice(FAMILY_TEXTURES[family]))
    return Look(base, alt.astype(np.float32), texture, float(rng.uniform(5, 11)))


# ---- bodies (shared within a family)

_WING = [(0.12, -0.08), (-0.10, -0.40), (-0.22, -0.40), (-0.14, -0.08)]


def body_capsule(c: ObjectCanvas, rng: np.random.Generator, look: Look) -> None:
    """An elongated hull with a pair of swept wings/fins (aeroplane, bird, boat)."""
    u, v = c.u, c.v
    skin = c.surface(rng, look)
    c.paint(polygon(u, v, _WING) | polygon(u, v, mirror_v(_WING)), skin * 0.85)
    c.paint(ellipse(u, v, 0.0, 0.0, 0.45, 0.12), skin)


def body_box(c: ObjectCanvas, rng: np.random.Generator, look: Look) -> None:
    """A long rounded box on two wheels (bus, car, train)."""
    u, v = c.u, c.v
    c.paint(box(u, v, 0.0, -0.02, 0.45, 0.16, 0.05), c.surface(rng, look))
    c.paint(box(u, v, 0.0, 0.11, 0.44, 0.025), np.asarray(look.base * 0.6, dtype=np.float32))
    for wu in (-0.27, 0.27):
        c.paint(ellipse(u, v, wu, 0.15, 0.075, 0.075), np.array([38, 38, 40], np.float32))
        c.paint(ellipse(u, v, wu, 0.15, 0.03, 0.03), np.array([150, 150, 155], np.float32))


def body_quadruped(c: ObjectCanvas, rng: np.random.Generator, look: Look) -> None:
    """An oval torso on four legs, with a neck and a tail (cow, horse, sheep)."""
    u, v = c.u, c.v
    legs = np.zeros(u.shape, dtype=bool)
    for lu in (-0.30, -0.19, 0.08, 0.19):
        legs |= box(u, v, lu, 0.19, 0.03, 0.14, 0.015)
    skin = c.surface(rng, look)
    c.paint(legs, skin * 0.8)
    c.paint(segment(u, v, (-0.36, -0.04), (-0.44, 0.14), 0.018), np.asarray(look.base * 0.6, np.float32))
    c.paint(segment(u, v, (0.18, -0.06), (0.33, -0.17), 0.06), skin * 0.95)
    c.paint(ellipse(u, v, -0.06, -0.02, 0.32, 0.16), skin)


def body_upright(c: ObjectCanvas, rng: np.random.Generator, look: Look) -> None:
    """An upright oval torso with arms and a base; the head is the part (cat, dog, person)."""
    u, v = c.u, c.v
    skin = c.surface(rng, look)
    c.paint(box(u, v, 0.0, 0.34, 0.15, 0.07, 0.03), skin * 0.8)
    arms = ellipse(u, v, -0.17, 0.06, 0.05, 0.17, 0.25) | ellipse(u, v, 0.17, 0.06, 0.05, 0.17, -0.25)
    c.paint(arms, skin * 0.9)
    c.paint(ellipse(u, v, 0.0, 0.07, 0.19, 0.28), skin)


FAMILY_BODIES: dict[str, Callable[[ObjectCanvas, np.random.Generator, Look], None]] = {
    "capsule": body_capsule, "box": body_box, "quadruped": body_quadruped, "upright": body_upright,
}


# ---- parts (small, distinctive per class)

def _col(rng: np.random.Generator, colour: tuple[int, int, int], amount: float = 12.0) -> np.ndarray:
    """A part colour: jittered mildly so that it stays distinctive."""
    return jitter(rng, colour, amount, (0.9, 1.1))


def part_aeroplane(c: ObjectCanvas, rng: np.random.Generator) -> None:
    """A red swept tail at the rear."""
    tail = [(-0.30, 0.0), (-0.47, -0.17), (-0.55, -0.17), (-0.47, 0.0)]
    c.paint(polygon(c.u, c.v, tail) | polygon(c.u, c.v, mirror_v(tail)), _col(rng, (205, 32, 32)), part=True)


def part_bird(c: ObjectCanvas, rng: np.random.Generator) -> None:
    """A green-black head with a yellow beak and a white eye, at the front."""
    u, v = c.u, c.v
    c.paint(ellipse(u, v, 0.44, 0.0, 0.095, 0.095), _col(rng, (25, 110, 80)), part=True)
    c.paint(polygon(u, v, [(0.51, -0.04), (0.64, 0.0), (0.51, 0.04)]), _col(rng, (248, 190, 20)), part=True)
    c.paint(ellipse(u, v, 0.46, -0.035, 0.022, 0.022), _col(rng, (245, 245, 240), 5), part=True)


def part_boat(c: ObjectCanvas, rng: np.random.Generator) -> None:
    """A white cabin with a blue window band, amidships."""
    u, v = c.u, c.v
    c.paint(box(u, v, 0.02, 0.0, 0.13, 0.075, 0.02), _col(rng, (242, 242, 236), 6), part=True)
    c.paint(box(u, v, 0.02, 0.0, 0.10, 0.022), _col(rng, (30, 70, 165)), part=True)


def part_bus(c: ObjectCanvas, rng: np.random.Generator) -> None:
    """A yellow front end with a black windscreen."""
    u, v = c.u, c.v
    c.paint(box(u, v, 0.405, -0.02, 0.065, 0.16, 0.03), _col(rng, (242, 200, 25)), part=True)
    c.paint(box(u, v, 0.41, -0.09, 0.035, 0.05), _col(rng, (20, 20, 25)), part=True)


def part_car(c: ObjectCanvas, rng: np.random.Generator) -> None:
    """A dark glass dome (cabin) on the roof, with a light reflection."""
    u, v = c.u, c.v
    c.paint(ellipse(u, v, 0.04, -0.17, 0.17, 0.09) & (v < -0.1), _col(rng, (28, 38, 64)), part=True)
    c.paint(segment(u, v, (-0.05, -0.2), (0.06, -0.235), 0.01), _col(rng, (200, 215, 235), 8), part=True)


def part_train(c: ObjectCanvas, rng: np.random.Generator) -> None:
    """A pointed orange-red nose with a headlight, at the front."""
    u, v = c.u, c.v
    c.paint(polygon(u, v, [(0.40, -0.18), (0.62, 0.14), (0.40, 0.14)]), _col(rng, (228, 84, 24)), part=True)
    c.paint(ellipse(u, v, 0.46, 0.07, 0.025, 0.025), _col(rng, (255, 250, 200), 5), part=True)


def part_cow(c: ObjectCanvas, rng: np.random.Generator) -> None:
    """A white square head with a pink muzzle and pale horns."""
    u, v = c.u, c.v
    horns = (polygon(u, v, [(0.32, -0.24), (0.27, -0.33), (0.35, -0.24)])
             | polygon(u, v, [(0.39, -0.24), (0.46, -0.33), (0.42, -0.24)]))
    c.paint(horns, _col(rng, (215, 205, 170)), part=True)
    c.paint(box(u, v, 0.37, -0.18, 0.06, 0.075, 0.02), _col(rng, (238, 234, 224), 6), part=True)
    c.paint(box(u, v, 0.38, -0.115, 0.05, 0.028, 0.015), _col(rng, (235, 150, 155)), part=True)


def part_horse(c: ObjectCanvas, rng: np.random.Generator) -> None:
    """A long chestnut head angled down, with a dark mane along the neck."""
    u, v = c.u, c.v
    c.paint(segment(u, v, (0.16, -0.12), (0.33, -0.25), 0.022), _col(rng, (40, 28, 20)), part=True)
    c.paint(ellipse(u, v, 0.40, -0.18, 0.12, 0.045, 0.9), _col(rng, (140, 70, 25)), part=True)


def part_sheep(c: ObjectCanvas, rng: np.random.Generator) -> None:
    """A small black round head with sideways ears."""
    u, v = c.u, c.v
    ears = ellipse(u, v, 0.32, -0.24, 0.045, 0.018, -0.4) | ellipse(u, v, 0.43, -0.24, 0.045, 0.018, 0.4)
    c.paint(ears | ellipse(u, v, 0.375, -0.18, 0.07, 0.075), _col(rng, (34, 34, 36), 6), part=True)


def part_cat(c: ObjectCanvas, rng: np.random.Generator) -> None:
    """An orange round head with pointed ears and green eyes."""
    u, v = c.u, c.v
    ear = [(-0.09, -0.30), (-0.075, -0.43), (-0.01, -0.36)]
    c.paint(polygon(u, v, ear) | polygon(u, v, mirror_u(ear)) | ellipse(u, v, 0.0, -0.29, 0.09, 0.085),
            _col(rng, (236, 140, 40)), part=True)
    eyes = ellipse(u, v, -0.035, -0.3, 0.018, 0.014) | ellipse(u, v, 0.035, -0.3, 0.018, 0.014)
    c.paint(eyes, _col(rng, (90, 200, 60)), part=True)


def part_dog(c: ObjectCanvas, rng: np.random.Generator) -> None:
    """A brown head with long drooping dark ears and a pale snout."""
    u, v = c.u, c.v
    c.paint(ellipse(u, v, 0.0, -0.29, 0.075, 0.09), _col(rng, (128, 84, 44)), part=True)
    ears = ellipse(u, v, -0.085, -0.27, 0.03, 0.08, -0.2) | ellipse(u, v, 0.085, -0.27, 0.03, 0.08, 0.2)
    c.paint(ears, _col(rng, (62, 40, 24)), part=True)
    c.paint(ellipse(u, v, 0.0, -0.24, 0.04, 0.03), _col(rng, (205, 170, 130)), part=True)


def part_person(c: ObjectCanvas, rng: np.random.Generator) -> None:
    """A skin-coloured face under a dark hair cap."""
    u, v = c.u, c.v
    skin = [(232, 188, 152), (198, 140, 100), (140, 96, 66)][int(rng.integers(3))]
    c.paint(ellipse(u, v, 0.0, -0.3, 0.07, 0.09), _col(rng, skin, 8), part=True)
    c.paint(ellipse(u, v, 0.0, -0.335, 0.08, 0.07) & (v < -0.34), _col(rng, (50, 34, 22), 8), part=True)


CLASS_PARTS: dict[int, Callable[[ObjectCanvas, np.random.Generator], None]] = {
    1: part_aeroplane, 3: part_bird, 4: part_boat, 6: part_bus, 7: part_car, 19: part_train,
    10: part_cow, 13: part_horse, 17: part_sheep, 8: part_cat, 12: part_dog, 15: part_person,
}

OBJECT_RADIUS = 0.7  # every shape lies within this distance of the local origin (object units)


@dataclass
class DrawnObject:
    """An object rendered over its full bounding box (possibly extending past the image)."""

    class_id: int
    top: int
    left: int
    mask: np.ndarray
    part: np.ndarray
    rgb: np.ndarray


@dataclass(frozen=True)
class Geometry:
    """A class's shape at unit size, upright: area (units²) and extent of its mask (object units)."""

    area: float
    u_min: float
    u_max: float
    v_min: float
    v_max: float


@functools.cache
def class_geometry(class_id: int) -> Geometry:
    """Measure the class's body + part on a fine canonical grid (colours do not change the mask)."""
    step = 0.005
    axis = np.arange(-OBJECT_RADIUS, OBJECT_RADIUS, step, dtype=np.float32) + step / 2
    u, v = np.meshgrid(axis, axis)
    canvas = ObjectCanvas(u, v, 100.0)
    rng = np.random.default_rng([class_id, 0])
    FAMILY_BODIES[CLASS_FAMILY[class_id]](canvas, rng, sample_look(rng, CLASS_FAMILY[class_id]))
    CLASS_PARTS[class_id](canvas, rng)
    rows, cols = np.any(canvas.mask, axis=1), np.any(canvas.mask, axis=0)
    return Geometry(float(canvas.mask.sum()) * step * step, float(axis[cols][0]), float(axis[cols][-1]),
                    float(axis[rows][0]), float(axis[rows][-1]))


def draw_object(rng: np.random.Generator, class_id: int, h: int, w: int, target_area: float) -> DrawnObject:
    """Render one object of ``class_id`` covering about ``target_area`` of an (h, w) image (less where
    its shape does not fit the frame), at a random place, stretch, rotation and flip."""
    family = CLASS_FAMILY[class_id]
    geo = class_geometry(class_id)
    stretch_u, stretch_v = rng.uniform(0.85, 1.15), rng.uniform(0.85, 1.15)
    angle = rng.uniform(-0.6, 0.6) if rng.random() < 0.15 else rng.uniform(-0.2, 0.2)
    flip = rng.random() < 0.5
    size = math.sqrt(target_area * h * w / (geo.area * stretch_u * stretch_v))
    half_u = max(-geo.u_min, geo.u_max) * stretch_u  # half-extents per unit size, about the origin
    half_v = max(-geo.v_min, geo.v_max) * stretch_v
    size = min(size, (1 + FRAME_SLACK) * w / (2 * half_u), (1 + FRAME_SLACK) * h / (2 * half_v))
    room_x = max(w / 2 - (1 - FRAME_SLACK) * half_u * size, 0.0)  # how far the centre may move from the middle
    room_y = max(h / 2 - (1 - FRAME_SLACK) * half_v * size, 0.0)
    cx, cy = w / 2 + rng.uniform(-room_x, room_x), h / 2 + rng.uniform(-room_y, room_y)
    cos, sin = math.cos(angle), math.sin(angle)
    # the canvas: the object's rotated bounding box (from its measured extent) plus a 2 px margin
    u_ends = (-geo.u_max, -geo.u_min) if flip else (geo.u_min, geo.u_max)
    corners = [(a * size * stretch_u, b * size * stretch_v) for a in u_ends for b in (geo.v_min, geo.v_max)]
    xs = [a * cos - b * sin for a, b in corners]
    ys = [a * sin + b * cos for a, b in corners]
    top, left = int(math.floor(cy + min(ys))) - 2, int(math.floor(cx + min(xs))) - 2
    height, width = int(math.ceil(cy + max(ys))) + 2 - top, int(math.ceil(cx + max(xs))) + 2 - left
    x, y = pixel_grid(height, width)
    dx, dy = x + left - cx, y + top - cy
    u = (dx * cos + dy * sin) / (size * stretch_u)
    v = (-dx * sin + dy * cos) / (size * stretch_v)
    if flip:
        u = -u
    canvas = ObjectCanvas(u, v, size)
    FAMILY_BODIES[family](canvas, rng, sample_look(rng, family))
    CLASS_PARTS[class_id](canvas, rng)
    return DrawnObject(class_id, top, left, canvas.mask, canvas.part, canvas.rgb)


def target_areas(rng: np.random.Generator, n: int) -> list[float]:
    """The area fraction each of ``n`` objects aims at: one main object, smaller others."""
    if n == 1:
        return [float(rng.uniform(*MAIN_AREA_ALONE))]
    return [float(rng.uniform(*MAIN_AREA))] + [float(rng.uniform(*OTHER_AREA)) for _ in range(n - 1)]


# =============================================================================== composition

class Layers:
    """The image being composed: colours, instance ids (0 = background) and per-instance areas."""

    def __init__(self, background: np.ndarray):
        self.rgb = background
        h, w = background.shape[:2]
        self.instances = np.zeros((h, w), dtype=np.int32)
        self.classes: list[int] = []  # class id of instance k + 1
        self.areas: list[int] = []  # pixels of instance k + 1 when drawn
        self.part_fractions: list[float] = []

    def visible(self) -> np.ndarray:
        """Visible pixels per instance id (index 0: background)."""
        return np.bincount(self.instances.ravel(), minlength=len(self.classes) + 1)

    def occlusion_ok(self, region: np.ndarray) -> bool:
        """Whether covering ``region`` (full image) keeps every instance at least MIN_VISIBLE visible."""
        if not self.classes:
            return True
        covered = np.bincount(self.instances[region], minlength=len(self.classes) + 1)
        remaining = self.visible() - covered
        return bool(np.all(remaining[1:] >= MIN_VISIBLE * np.asarray(self.areas)))

    def place(self, obj: DrawnObject) -> bool:
        """Draw ``obj`` on top if it is mostly in frame and leaves earlier objects visible enough."""
        h, w = self.instances.shape
        oh, ow = obj.mask.shape
        y0, x0 = max(obj.top, 0), max(obj.left, 0)
        y1, x1 = min(obj.top + oh, h), min(obj.left + ow, w)
        if y1 <= y0 or x1 <= x0:
            return False
        crop = (slice(y0 - obj.top, y1 - obj.top), slice(x0 - obj.left, x1 - obj.left))
        mask, part = obj.mask[crop], obj.part[crop]
        total, total_part = int(obj.mask.sum()), int(obj.part.sum())
        if mask.sum() < 0.65 * total or part.sum() < 0.5 * total_part or mask.sum() < 120:
            return False
        region = np.zeros((h, w), dtype=bool)
        region[y0:y1, x0:x1] = mask
        if not self.occlusion_ok(region):
            return False
        self.classes.append(obj.class_id)
        self.areas.append(int(mask.sum()))
        self.part_fractions.append(total_part / max(total, 1))
        self.instances[region] = len(self.classes)
        self.rgb[y0:y1, x0:x1][mask] = obj.rgb[crop][mask]
        return True

    def cover(self, region: np.ndarray, colour: np.ndarray) -> bool:
        """Draw a background occluder over everything, if the objects stay visible enough."""
        if not self.occlusion_ok(region):
            return False
        self.instances[region] = 0
        self.rgb[region] = colour[region]
        return True


def sample_classes(rng: np.random.Generator) -> list[int]:
    """Classes of the objects of one image: a uniform primary class, then co-occurring ones."""
    n = int(rng.choice(4, p=OBJECT_COUNT_P)) + 1
    primary = int(rng.choice(BUILTIN_CLASS_IDS))
    classes = [primary]
    for _ in range(n - 1):
        r = rng.random()
        if r < SAME_CLASS_P:
            classes.append(primary)  # another instance of the same class
        elif r < SAME_CLASS_P + SAME_SCENE_P:
            same_scene = [c for c in BUILTIN_CLASS_IDS if CLASS_SCENE[c] == CLASS_SCENE[primary] and c != primary]
            classes.append(int(rng.choice(same_scene)) if same_scene else int(rng.choice(BUILTIN_CLASS_IDS)))
        else:
            classes.append(int(rng.choice(BUILTIN_CLASS_IDS)))
    rng.shuffle(classes)
    return classes


def choose_scene(rng: np.random.Generator, classes: list[int]) -> str:
    """The preferred scene of one of the image's classes with probability CONTEXT_PROB, else any scene."""
    if rng.random() < CONTEXT_PROB:
        return CLASS_SCENE[int(rng.choice(classes))]
    return str(rng.choice(SCENES))


def blur3(img: np.ndarray) -> np.ndarray:
    """A separable [1, 2, 1] / 4 blur with edge padding."""
    p = np.pad(img, ((1, 1), (1, 1), (0, 0)), mode="edge")
    p = (p[:-2] + 2 * p[1:-1] + p[2:]) * 0.25
    return (p[:, :-2] + 2 * p[:, 1:-1] + p[:, 2:]) * 0.25


def void_band(instances: np.ndarray) -> np.ndarray:
    """Pixels with a different instance id in their 3x3 neighbourhood: a ~2 px band on every boundary.

    Covers object/background and object/object boundaries (VOC's void border); image edges are not
    boundaries.
    """
    h, w = instances.shape
    band = np.zeros((h, w), dtype=bool)
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        a = instances[0:h - dy, max(0, -dx):w - max(0, dx)]
        b = instances[dy:h, max(0, dx):w - max(0, -dx)]
        diff = a != b
        band[0:h - dy, max(0, -dx):w - max(0, dx)] |= diff
        band[dy:h, max(0, dx):w - max(0, -dx)] |= diff
    return band


@dataclass
class Rendered:
    """One generated sample."""

    image: np.ndarray  # (H, W, 3) uint8
    mask: np.ndarray  # (H, W) uint8: 0 background, VOC class ids, 255 void
    instances: np.ndarray  # (H, W) uint8: 0 background, 1..n objects, 255 void
    classes: list[int]  # class id of each drawn object (instance k + 1)
    scene: str
    part_fractions: list[float]


def compose(rng: np.random.Generator) -> Rendered | None:
    """One image from one random stream; None if a validity check fails (the caller re-seeds)."""
    h, w = (int(s) for s in rng.integers(IMAGE_SIDE[0], IMAGE_SIDE[1] + 1, size=2))
    classes = sample_classes(rng)
    scene = choose_scene(rng, classes)
    layers = Layers(SCENE_FUNCS[scene](rng, h, w))
    for kind in clutter_items(rng, scene):
        mask, colour = draw_distractor(rng, kind, h, w)
        layers.rgb[mask] = colour[mask]
    for class_id, area in zip(classes, target_areas(rng, len(classes))):
        for _ in range(6):
            if layers.place(draw_object(rng, class_id, h, w, area)):
                break
    if not layers.classes:
        return None
    if rng.random() < 0.2:  # a pole in front of everything, labelled background
        mask, colour = draw_distractor(rng, "pole", h, w)
        layers.cover(mask, colour)
    img = layers.rgb
    if rng.random() < 0.5:
        img = blur3(img)
    noise = rng.standard_normal(img.shape, dtype=np.float32) * np.float32(rng.uniform(1.0, 5.0))
    img = img * np.float32(rng.uniform(0.9, 1.1)) + np.float32(rng.uniform(-10, 10)) + noise
    band = void_band(layers.instances)
    labelled = np.bincount(layers.instances[~band], minlength=len(layers.classes) + 1)[1:]
    if np.any(labelled < np.maximum(MIN_LABELLED * np.asarray(layers.areas), 20)):
        return None
    class_map = np.asarray([0] + layers.classes, dtype=np.uint8)
    mask = class_map[layers.instances]
    instances = layers.instances.astype(np.uint8)
    mask[band] = IGNORE_INDEX
    instances[band] = IGNORE_INDEX
    image = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return Rendered(image, mask, instances, list(layers.classes), scene, layers.part_fractions)


def render_image(seed: int, split: str, index: int) -> Rendered:
    """The sample ``index`` of ``split`` for ``seed``: a pure function of its arguments."""
    for attempt in range(MAX_ATTEMPTS):
        rng = np.random.default_rng([seed, SPLIT_CODES[split], index, attempt])
        sample = compose(rng)
        if sample is not None:
            return sample
    raise RuntimeError(f"could not render image {index} of {split} (seed {seed}) in {MAX_ATTEMPTS} attempts")


# =============================================================================== build

def image_id(split: str, index: int) -> str:
    return f"{ID_PREFIX}{split}_{index:06d}"


def _render_and_write(task: tuple[str, int, str, int]) -> dict[str, Any]:
    """Worker: render one sample, write its files, return its statistics."""
    out, seed, split, index = task
    root = Path(out)
    sample = render_image(seed, split, index)
    iid = image_id(split, index)
    write_image(root / "JPEGImages" / f"{iid}.jpg", sample.image)
    if split == "test":
        write_mask(root / "SegmentationClassTest" / f"{iid}.png", sample.mask)
    else:
        write_mask(root / "SegmentationClass" / f"{iid}.png", sample.mask)
        write_mask(root / "SegmentationObject" / f"{iid}.png", sample.instances)
    present = sorted({int(c) for c in np.unique(sample.mask)} - {0, IGNORE_INDEX})
    return {
        "id": iid, "split": split, "classes": present, "objects": len(sample.classes),
        "size": list(sample.image.shape[:2]), "scene": sample.scene, "part_fractions": sample.part_fractions,
    }


def _read_manifest(path: Path) -> dict[str, Any] | None:
    """The parsed ``builtin.json``, or None when missing or unreadable."""
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def _is_complete(out: Path, manifest: dict[str, Any] | None, seed: int, size: str) -> bool:
    """Whether ``out`` holds a finished build of this version, seed and size (a cheap check: the
    manifest, the four lists and the number of images; not the content of every file)."""
    if not manifest or (manifest.get("version"), manifest.get("seed"), manifest.get("size")) != (
            GENERATOR_VERSION, seed, size):
        return False
    sets = out / "ImageSets" / "Segmentation"
    lists_ok = all((sets / f"{s}.txt").is_file() for s in ("train", "val", "trainval", "test"))
    if not lists_ok or not (out / "JPEGImages").is_dir():
        return False
    with os.scandir(out / "JPEGImages") as it:
        images = sum(e.name.startswith(ID_PREFIX) and e.name.endswith(".jpg") for e in it)
    return images == sum(BUILTIN_SIZES[size].values())


def check_builtin_version(root: str | Path) -> None:
    """Refuse a built-in dataset made by another generator version: its images are not the ones this
    code generates (a folder without a readable ``builtin.json`` is no finished built-in build: passes)."""
    root = Path(root)
    manifest = _read_manifest(root / MANIFEST_NAME)
    if manifest is None or manifest.get("version") == GENERATOR_VERSION:
        return
    size, seed = manifest.get("size", "default"), manifest.get("seed", 0)
    raise DatasetError(root / MANIFEST_NAME,
                       f"built-in dataset made by generator version {manifest.get('version')}, but this code's "
                       f"generator is version {GENERATOR_VERSION}; rebuild it with `sharpen data build --out {root} "
                       f"--size {size} --seed {seed}` (or `sharpen run --from data` with data.builtin = true)")


def _check_target(out: Path) -> None:
    """Refuse to write into a folder that holds some other dataset (images not named ``bi_*``)."""
    if out.exists() and not out.is_dir():
        raise DatasetError(out, "not a folder; expected a folder to build the built-in dataset in")
    images = out / "JPEGImages"
    if images.is_dir():
        with os.scandir(images) as it:
            for entry in it:
                if entry.name.endswith(".jpg") and not entry.name.startswith(ID_PREFIX):
                    raise DatasetError(out, f"holds another dataset ({entry.name} in JPEGImages/); "
                                            "expected an empty folder or a built-in dataset to rebuild")


def _remove_stale(out: Path, keep: set[str]) -> int:
    """Delete built-in files (``bi_*``) of an earlier build that this build did not write."""
    removed = 0
    for folder, suffix in (("JPEGImages", ".jpg"), ("SegmentationClass", ".png"),
                           ("SegmentationObject", ".png"), ("SegmentationClassTest", ".png")):
        d = out / folder
        if not d.is_dir():
            continue
        for p in d.iterdir():
            stale_tmp = p.name.startswith("." + ID_PREFIX) and p.name.endswith(".tmp")
            if stale_tmp or (p.name.startswith(ID_PREFIX) and p.suffix == suffix and p.stem not in keep):
                p.unlink()
                removed += 1
    return removed


def _pool_context() -> mp.context.BaseContext:
    """``fork`` where the OS has it (no re-import of ``__main__``, which breaks spawn for code run
    from stdin), else ``spawn``. Workers only touch numpy, PIL and their own files."""
    return mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")


def _run_tasks(tasks: list[tuple[str, int, str, int]], workers: int, progress: bool) -> list[dict[str, Any]]:
    """Render all tasks, in-process (``workers == 1``) or on a process pool, in task order."""
    pool = _pool_context().Pool(workers) if workers > 1 else None
    bar = None
    if progress:
        try:
            from tqdm import tqdm

            bar = tqdm(total=len(tasks), desc="built-in dataset", unit="img", dynamic_ncols=True)
        except ImportError:
            bar = None
    results: list[dict[str, Any]] = []
    try:
        if pool is None:
            iterator: Iterable[dict[str, Any]] = map(_render_and_write, tasks)
        else:
            iterator = pool.imap(_render_and_write, tasks, chunksize=max(1, min(32, len(tasks) // (workers * 8))))
        for r in iterator:
            results.append(r)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        if pool is not None:
            pool.terminate()
            pool.join()
    return results


def _summarise(results: list[dict[str, Any]], seed: int, size: str, seconds: float, workers: int) -> dict[str, Any]:
    """The build summary (also the content of builtin.json)."""
    splits = list(SPLIT_CODES)
    by_split = {s: [r for r in results if r["split"] == s] for s in splits}
    class_counts = {s: {VOC_CLASSES[c]: sum(c in r["classes"] for r in rs) for c in BUILTIN_CLASS_IDS}
                    for s, rs in by_split.items()}
    multi = {s: round(sum(len(r["classes"]) >= 2 for r in rs) / max(len(rs), 1), 4) for s, rs in by_split.items()}
    multi["all"] = round(sum(len(r["classes"]) >= 2 for r in results) / max(len(results), 1), 4)
    objects = [r["objects"] for r in results]
    parts = [f for r in results for f in r["part_fractions"]]
    sides = [s for r in results for s in r["size"]]
    return {
        "generator": "sharpen-focus built-in synthetic WSSS dataset (VOC layout)",
        "version": GENERATOR_VERSION,
        "seed": seed,
        "size": size,
        "class_ids": list(BUILTIN_CLASS_IDS),
        "class_names": list(BUILTIN_CLASS_NAMES),
        "splits": {s: len(rs) for s, rs in by_split.items()},
        "counts": {**{s: len(rs) for s, rs in by_split.items()},
                   "trainval": len(by_split["train"]) + len(by_split["val"])},
        "class_image_counts": class_counts,
        "multi_class_fraction": multi,
        "objects_per_image": {"mean": round(float(np.mean(objects)), 3),
                              "histogram": {str(k): objects.count(k) for k in range(1, 5)}},
        "part_fraction_mean": round(float(np.mean(parts)), 4),
        "scene_counts": {sc: sum(r["scene"] == sc for r in results) for sc in SCENES},
        "image_side_range": [int(min(sides)), int(max(sides))],
        "test_masks": "SegmentationClassTest",
        "seconds": round(seconds, 2),
        "workers": workers,
    }


def _default_workers() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    return max(1, min(2, cpus))


def build_builtin_dataset(out: str | Path, seed: int = 0, size: str = "default", workers: int | None = None,
                          progress: bool = True) -> dict[str, Any]:
    """Generate the built-in dataset under ``out`` in VOC 2012 layout and return its summary.

    ``size`` is a key of BUILTIN_SIZES. A complete build (``builtin.json``) of the same generator
    version, seed and size is reused (the summary gets ``reused: True``); anything else there (a
    partial or different build, or one by an older generator version: ``replaced_version``) is
    regenerated, and files of an earlier build that this one does not write are removed.
    ``workers=1`` renders in-process; the default uses up to 2 processes.
    The files are byte-identical for a seed and size whatever ``workers`` is.
    """
    if size not in BUILTIN_SIZES:
        raise UsageError(f"unknown size {size!r}; expected one of: {', '.join(BUILTIN_SIZES)}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UsageError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    out = Path(out)
    manifest = out / MANIFEST_NAME
    previous = _read_manifest(manifest) if manifest.is_file() else None
    if _is_complete(out, previous, seed, size):
        return {**previous, "reused": True}
    _check_target(out)
    replaced = previous.get("version") if previous else None
    if progress and replaced is not None and replaced != GENERATOR_VERSION:
        print(f"built-in dataset at {out} was made by generator version {replaced}; "
              f"rebuilding it with version {GENERATOR_VERSION}")
    if manifest.exists():
        manifest.unlink()  # no stale marker while files change
    workers = _default_workers() if workers is None else max(1, int(workers))
    tasks = [(str(out), seed, split, i) for split in SPLIT_CODES for i in range(BUILTIN_SIZES[size][split])]
    for folder in ("JPEGImages", "SegmentationClass", "SegmentationObject", "SegmentationClassTest"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for class_id in BUILTIN_CLASS_IDS:
        class_geometry(class_id)  # measured once here; forked workers inherit the cache
    results = _run_tasks(tasks, workers, progress)
    ids = {s: [r["id"] for r in results if r["split"] == s] for s in SPLIT_CODES}
    ids["trainval"] = ids["train"] + ids["val"]
    for split in ("train", "val", "trainval", "test"):
        write_bytes_atomic(out / "ImageSets" / "Segmentation" / f"{split}.txt", ("\n".join(ids[split]) + "\n").encode())
    _remove_stale(out, {r["id"] for r in results})
    summary = _summarise(results, seed, size, time.perf_counter() - start, workers)
    write_json_atomic(manifest, summary)  # last: marks the build complete
    return {**summary, "reused": False, "replaced_version": replaced}
