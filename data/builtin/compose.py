"""Composition of one built-in image: classes, scene, clutter, objects with occlusion, void band.

``render_image(seed, split, index)`` is a pure function of its arguments: every image has its own
random stream seeded by ``(seed, split code, index, attempt)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..classes import IGNORE_INDEX
from .bodies import BUILTIN_CLASS_IDS, DrawnObject, draw_object
from .scenes import SCENE_FUNCS, SCENES, clutter_items, draw_distractor

SPLIT_CODES: dict[str, int] = {"train": 0, "val": 1, "test": 2}

# Preferred scene of each class, used with probability CONTEXT_PROB.
CLASS_SCENE: dict[int, str] = {
    1: "sky", 3: "sky", 4: "water",
    6: "road", 7: "road", 19: "road",
    10: "grass", 13: "grass", 17: "grass",
    8: "indoor", 12: "indoor", 15: "indoor",
}
CONTEXT_PROB = 0.7

IMAGE_SIDE = (96, 160)  # inclusive range of W and H
OBJECT_COUNT_P = (0.36, 0.30, 0.20, 0.14)  # P(1), P(2), P(3), P(4) objects: 2.1 per image (VOC 2012: 2.4)
SAME_CLASS_P = 0.38  # a further object repeats the primary class (VOC: 1.5 classes but 2.4 objects per image)
SAME_SCENE_P = 0.3  # ... else is a class of the primary's scene with this probability, else any class
# Target area of each object as a fraction of the image (before occlusion and the fit to the frame):
# the first (rear) object is the main one, later ones are smaller, as in VOC photos.
MAIN_AREA = (0.14, 0.4)
MAIN_AREA_ALONE = (0.18, 0.48)
OTHER_AREA = (0.04, 0.18)
MIN_VISIBLE = 0.3  # an object must keep this fraction of its pixels visible (else not drawn)
MIN_LABELLED = 0.12  # ... and this fraction outside the void band
MAX_ATTEMPTS = 8  # re-renders (new sub-seed) of an image that failed a check


def target_areas(rng: np.random.Generator, n: int) -> list[float]:
    """The area fraction each of ``n`` objects aims at: one main object, smaller others."""
    if n == 1:
        return [float(rng.uniform(*MAIN_AREA_ALONE))]
    return [float(rng.uniform(*MAIN_AREA))] + [float(rng.uniform(*OTHER_AREA)) for _ in range(n - 1)]


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


#: Offset of a stream family's split codes: family 1 (the pretraining sets, data/builtin/build.py
#: PRETRAIN_SIZES) draws from ``[seed, 16 + split code, index, attempt]``, a random stream no image of
#: family 0 (the train/val/test sets) uses, whatever the seeds (docs/method.md §8).
STREAM_STRIDE = 16


def render_image(seed: int, split: str, index: int, stream: int = 0) -> Rendered:
    """The sample ``index`` of ``split`` for ``seed`` in stream family ``stream``: a pure function of its arguments."""
    for attempt in range(MAX_ATTEMPTS):
        rng = np.random.default_rng([seed, SPLIT_CODES[split] + STREAM_STRIDE * stream, index, attempt])
        sample = compose(rng)
        if sample is not None:
            return sample
    raise RuntimeError(f"could not render image {index} of {split} (seed {seed}) in {MAX_ATTEMPTS} attempts")
