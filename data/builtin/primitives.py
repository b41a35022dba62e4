"""Drawing primitives of the built-in dataset: shapes, colour helpers and body textures.

Pure functions of their arguments (and of the random stream they are given); no other module of
the package is imported here.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable

import numpy as np

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
