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

Modules, each importing only those listed before it (checked by lint-imports)::

    primitives   shapes, colour helpers, body textures
    scenes       the five backgrounds and their clutter (distractors of no class)
    bodies       the 12 classes: body families, discriminative parts, draw_object
    compose      one image from one random stream (render_image), occlusion, void band
    build        the files on disk, the image lists and builtin.json (build_builtin_dataset)
"""

from __future__ import annotations

from .bodies import BUILTIN_CLASS_IDS, BUILTIN_CLASS_NAMES, CLASS_FAMILY, CLASS_PARTS, class_geometry, draw_object
from .build import (
    BUILTIN_SIZES,
    GENERATOR_VERSION,
    ID_PREFIX,
    MANIFEST_NAME,
    PRETRAIN_SIZES,
    build_builtin_dataset,
    check_builtin_version,
)
from .compose import CLASS_SCENE, SPLIT_CODES, Rendered, render_image, void_band
from .scenes import SCENES

__all__ = [
    "BUILTIN_CLASS_IDS", "BUILTIN_CLASS_NAMES", "BUILTIN_SIZES", "CLASS_FAMILY", "CLASS_PARTS", "CLASS_SCENE",
    "GENERATOR_VERSION", "ID_PREFIX", "MANIFEST_NAME", "PRETRAIN_SIZES", "SCENES", "SPLIT_CODES", "Rendered",
    "build_builtin_dataset", "check_builtin_version", "class_geometry", "draw_object", "render_image", "void_band",
]
