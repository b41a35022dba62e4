"""Objects of the built-in dataset: the 12 classes, their body families and discriminative parts.

The classes of a family share the body (shape, palette, textures); only the small part drawn by
``CLASS_PARTS`` tells them apart. ``draw_object`` renders one instance over its bounding box.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..classes import VOC_CLASSES
from .primitives import TEXTURES, blend, box, ellipse, jitter, mirror_u, mirror_v, pixel_grid, polygon, segment

BUILTIN_CLASS_IDS: tuple[int, ...] = (1, 3, 4, 6, 7, 8, 10, 12, 13, 15, 17, 19)
"""VOC indices of the classes used: aeroplane bird boat bus car cat cow dog horse person sheep train."""
BUILTIN_CLASS_NAMES: tuple[str, ...] = tuple(VOC_CLASSES[c] for c in BUILTIN_CLASS_IDS)

# Body families: the classes of a family share the body; only the small part tells them apart.
CLASS_FAMILY: dict[int, str] = {
    1: "capsule", 3: "capsule", 4: "capsule",
    6: "box", 7: "box", 19: "box",
    10: "quadruped", 13: "quadruped", 17: "quadruped",
    8: "upright", 12: "upright", 15: "upright",
}

FRAME_SLACK = 0.12  # an object's box may stick out of the frame by this fraction of its half-size


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
