"""Benchmark: what the dense CRF's spatial scale does to val mIoU on the built-in data (docs/method.md §5.1).

    OMP_NUM_THREADS=1 python benchmarks/crf_scale.py [--root builtin_data/small] [--seed 0] [--limit N]
                                                     [--checkpoint RUN/segment/X/checkpoint.pt [--flip]]

The built-in images are 96-160 px where DeepLab's CRF values (bilateral sxy 80, Gaussian sxy 3 pixels)
were set for ~500 px VOC images. This script scores, with the project's own mIoU
(:class:`eval.segmentation.SegmentationMeter`), the val split of the built-in dataset (built at
``--root``, ``size=small``, seed 0, when missing: 48 images) refined at several shrink factors ``s``
(spatial deviations divided by ``s``):

- **test time** (full image, labels as ``segment predict``: background + every label winning a pixel
  of the un-refined argmax): no CRF; ``s = 1`` (DeepLab's VOC values, ``segment.crf_predict_scale = 1.0``,
  the default); ``"image"`` (``s = 500 / long side``, 3.1-5.2 here); and fixed factors;
- **training time** (the constrain loss's CRF, docs/method.md §4.6): the image shrunk (PIL bilinear)
  onto the demo's 16×16 cue grid, all 21 labels as SEC; the score is the mIoU of ``argmax Q``
  against the ground truth shrunk (nearest) to the grid: how well the constrain loss's target
  agrees with the truth. Rows: no CRF; ``s = 8`` (the demo's), 12 (SEC's), ``"grid"``
  (``12 · 41 / 16 = 30.75``: SEC's bilateral range as a fraction of the grid) and others.

There is no trained segmenter here: the probabilities are synthetic, made from the ground truth
(void counted as background) and deterministic from ``--seed`` and the image's index, in two
regimes that stand for a segmenter's typical errors. Over the labels in play (background, the
image's classes and one absent class drawn at random, the confusion a segmenter makes; every other
label gets logit −10):

- ``coarse``: ``softmax(4 · up(avgpool_8(onehot)) + 1.0 · up(N(0,1) on 16-px cells))``: blurred
  boundaries of a stride-8 network and mild blob-shaped confusions;
- ``noisy``: ``softmax(3 · up(avgpool_16(onehot)) + 1.5 · up(N(0,1) on 24-px cells))``: an
  under-trained one (coarser, more and larger wrong blobs).

``up`` is bilinear upsampling to the image size; the noise is drawn per label. At training time the
same recipe runs on the 16×16 grid with pooling 2 and 4 and noise cells of 4 and 6 grid cells.
What it can tell: the direction and size of each setting's effect on such errors. What it cannot:
which setting is best for a real segmenter (issue 20's measurement moved four trained segmenters by
−0.5 to +1.3 with ``"image"``). For that, ``--checkpoint`` adds a test-time column ``segmenter``:
that checkpoint's probabilities (``segment.predict.predict_probabilities``: the whole image at the
checkpoint's input size, scale 1, flip with ``--flip``, ImageNet mean/std, CPU) on the images of
``--root``'s val split, the dataset it should have been trained for (e.g. ``--root
builtin_data/default`` for a demo run's segmenter, with ``--limit`` to keep it short). CRF parameters other
than the spatial ones are the defaults (``CRFParams()``). Runs inline (one process).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

NUM_LABELS = 21
TRAIN_GRID = 16  # the demo's cue grid (configs/demo.toml cues.grid)
# regime: (sharpness, pooling of the one-hot, noise amplitude, noise cell) at test time (pixels)
# and at training time (grid cells)
REGIMES = {
    "coarse": {"test": (4.0, 8, 1.0, 16), "train": (4.0, 2, 1.0, 4)},
    "noisy": {"test": (3.0, 16, 1.5, 24), "train": (3.0, 4, 1.5, 6)},
}
OFF_LOGIT = -10.0  # labels out of play
TEST_SETTINGS: list[float | str] = [1.0, "image", 2.0, 4.0, 8.0]
TRAIN_SETTINGS: list[float | str] = [4.0, 8.0, 12.0, 20.0, "grid"]


def synthetic_probs(mask: np.ndarray, regime: tuple[float, int, float, int], seed: int) -> np.ndarray:
    """(21, H, W) float32 probabilities from a ground-truth mask (see the module doc)."""
    import torch
    import torch.nn.functional as F

    sharp, pool, amp, cell = regime
    h, w = mask.shape
    gt = np.where(mask == 255, 0, mask).astype(np.int64)
    rng = np.random.default_rng(seed)
    present = set(np.unique(gt).tolist()) | {0}
    absent = [c for c in range(1, NUM_LABELS) if c not in present]
    in_play = sorted(present | {int(rng.choice(absent))})
    onehot = torch.from_numpy((gt[None] == np.asarray(in_play)[:, None, None]).astype(np.float32))[None]
    coarse = F.interpolate(F.avg_pool2d(onehot, pool, ceil_mode=True), size=(h, w), mode="bilinear",
                           align_corners=False)
    noise = torch.from_numpy(rng.standard_normal((1, len(in_play), math.ceil(h / cell) + 1, math.ceil(w / cell) + 1),
                                                 dtype=np.float32))
    noise = F.interpolate(noise, size=(h, w), mode="bilinear", align_corners=False)
    logits = np.full((NUM_LABELS, h, w), OFF_LOGIT, dtype=np.float32)
    logits[in_play] = (sharp * coarse + amp * noise)[0].numpy()
    logits -= logits.max(0, keepdims=True)
    probs = np.exp(logits)
    return probs / probs.sum(0, keepdims=True)


def _load(root: Path, limit: int) -> list[dict]:
    from data.voc import VOCSegmentation

    if not (root / "builtin.json").is_file() and not (root / "ImageSets").is_dir():
        from data.builtin import build_builtin_dataset

        print(f"building the built-in dataset at {root} (seed 0, size small)", flush=True)
        build_builtin_dataset(root, seed=0, size="small", progress=False)
    ds = VOCSegmentation(root, "val")
    n = len(ds) if limit <= 0 else min(limit, len(ds))
    items = []
    for i in range(n):
        s = ds.load(i)
        items.append({"image": np.ascontiguousarray(s["image"]).copy(), "mask": np.asarray(s["mask"])})
    return items


def _shrunk(items: list[dict], grid: int) -> list[dict]:
    from PIL import Image

    return [{"image": np.asarray(Image.fromarray(it["image"]).resize((grid, grid), Image.BILINEAR)).copy(),
             "mask": np.asarray(Image.fromarray(it["mask"]).resize((grid, grid), Image.NEAREST))} for it in items]


def _miou(preds: list[np.ndarray], masks: list[np.ndarray]) -> float:
    from eval.segmentation import SegmentationMeter

    meter = SegmentationMeter(NUM_LABELS)
    for pred, mask in zip(preds, masks):
        meter.update(pred, mask)
    return 100.0 * meter.scores().miou


def _label(setting: float | str, kind: str) -> str:
    if setting == "image":
        return '"image" (500 / long side)'
    if setting == "grid":
        return f'"grid" (12·41/{TRAIN_GRID} = {12 * 41 / TRAIN_GRID:g})'
    note = {("test", 1.0): " (VOC values, default)", ("train", 12.0): " (SEC's, default)",
            ("train", 8.0): " (demo)"}.get((kind, float(setting)), "")
    return f"s = {setting:g}{note}"


def segmenter_probs(items: list[dict], checkpoint: Path, flip: bool) -> list[np.ndarray]:
    """The checkpoint's averaged softmax (21, H, W) of each image (see the module doc)."""
    import torch

    from segment.models import load_segmenter
    from segment.predict import predict_probabilities

    model, meta = load_segmenter(checkpoint, device="cpu", num_classes=NUM_LABELS)
    model.eval()
    size = int(meta["input_size"])
    with torch.inference_mode():
        return [predict_probabilities(model, it["image"], size, [1.0], flip, "cpu") for it in items]


def test_time(items: list[dict], regimes: dict[str, list[np.ndarray]]) -> list[tuple[str, dict[str, float], str]]:
    """Rows (name, regime -> mIoU, the s range) at full resolution; ``regimes``: name -> each image's probabilities."""
    from segment.crf import CRFParams, dense_crf, predict_scale
    from segment.predict import crf_labels

    masks = [it["mask"] for it in items]
    rows: dict[str, dict[str, float]] = {"no CRF": {}}
    spans: dict[str, str] = {"no CRF": ""}
    for regime, probs in regimes.items():
        plain = [p.argmax(0).astype(np.uint8) for p in probs]
        rows["no CRF"][regime] = _miou(plain, masks)
        for setting in TEST_SETTINGS:
            scales = [predict_scale(setting, *it["image"].shape[:2]) for it in items]
            preds = []
            for it, p, a, s in zip(items, probs, plain, scales):
                labels = crf_labels(a)
                preds.append(a if len(labels) == 1 else
                             dense_crf(it["image"], p, labels, s, CRFParams()).argmax(0).astype(np.uint8))
            name = _label(setting, "test")
            rows.setdefault(name, {})[regime] = _miou(preds, masks)
            spans[name] = f"{min(scales):.2f}-{max(scales):.2f}" if min(scales) != max(scales) else f"{scales[0]:g}"
    return [(name, vals, spans[name]) for name, vals in rows.items()]


def train_time(items: list[dict], seed: int) -> list[tuple[str, dict[str, float], str]]:
    """Rows on the 16x16 grid: all 21 labels, as SEC's constrain loss."""
    from segment.crf import CRFParams, dense_crf, train_scale

    small = _shrunk(items, TRAIN_GRID)
    masks = [it["mask"] for it in small]
    rows: dict[str, dict[str, float]] = {"no CRF": {}}
    spans: dict[str, str] = {"no CRF": ""}
    for regime, spec in REGIMES.items():
        probs = [synthetic_probs(it["mask"], spec["train"], seed + 10_000 + i) for i, it in enumerate(small)]
        rows["no CRF"][regime] = _miou([p.argmax(0) for p in probs], masks)
        for setting in TRAIN_SETTINGS:
            s = train_scale(setting, TRAIN_GRID)
            preds = [dense_crf(it["image"], p, None, s, CRFParams()).argmax(0) for it, p in zip(small, probs)]
            name = _label(setting, "train")
            rows.setdefault(name, {})[regime] = _miou(preds, masks)
            spans[name] = f"{s:g}"
    return [(name, vals, spans[name]) for name, vals in rows.items()]


def _print_table(title: str, rows: list[tuple[str, dict[str, float], str]], extra: str) -> None:
    regimes = list(rows[0][1])
    base = rows[0][1]
    print(title)
    print(f"| setting | s | {extra} | " + " | ".join(f"{r} mIoU (Δ)" for r in regimes) + " |")
    print("|---|---|---|" + "---|" * len(regimes))
    for name, vals, span in rows:
        if name == "no CRF":
            cells = [f"{vals[r]:.1f}" for r in regimes]
            rng = ""
        else:
            cells = [f"{vals[r]:.1f} ({vals[r] - base[r]:+.1f})" for r in regimes]
            lo, hi = (float(x) for x in (span.split("-") if "-" in span else (span, span)))
            rng = f"{80 / hi:.1f}" if lo == hi else f"{80 / hi:.1f}-{80 / lo:.1f}"
        print(f"| {name} | {span} | {rng} | " + " | ".join(cells) + " |")
    print()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=ROOT / "builtin_data" / "small")
    p.add_argument("--limit", type=int, default=0, help="first N val images (0: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic probabilities")
    p.add_argument("--checkpoint", type=Path, help="a segmenter checkpoint: adds its probabilities as a column")
    p.add_argument("--flip", action="store_true", help="with --checkpoint: average with the flipped image")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    items = _load(args.root, args.limit)
    sides = [max(it["image"].shape[:2]) for it in items]
    print(f"{len(items)} val images of {args.root} (long side {min(sides)}-{max(sides)} px), seed {args.seed}, "
          "synthetic probabilities (see the module doc)\n")
    regimes = {name: [synthetic_probs(it["mask"], spec["test"], args.seed + i) for i, it in enumerate(items)]
               for name, spec in REGIMES.items()}
    if args.checkpoint is not None:
        regimes["segmenter"] = segmenter_probs(items, args.checkpoint, args.flip)
    _print_table("Test time (full image; labels: background + argmax winners)", test_time(items, regimes),
                 "bilateral sxy (px)")
    _print_table(f"Training time ({TRAIN_GRID}x{TRAIN_GRID} grid, all 21 labels; mIoU of argmax Q vs the shrunk truth)",
                 train_time(items, args.seed), "bilateral sxy (cells)")
    print(f"SEC: 80/12 = 6.67 cells of its 41-cell grid ({80 / 12 / 41:.1%} of the side); "
          f"on {TRAIN_GRID} cells: s = 8 gives {80 / 8:g} cells ({80 / 8 / TRAIN_GRID:.0%}), "
          f'"grid" {80 / (12 * 41 / TRAIN_GRID):.2f} ({80 / 12 / 41:.1%}).')
    print(f"total {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
