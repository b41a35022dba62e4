"""Backgrounds of the built-in dataset: the five class-correlated scenes and their clutter.

A scene returns an (h, w, 3) float32 RGB background; clutter (distractors) are shapes of no class,
labelled background.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from .primitives import blend, box, ellipse, jitter, pixel_grid, polygon, smooth_noise, vertical_gradient

SCENES: tuple[str, ...] = ("sky", "water", "road", "grass", "indoor")


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
