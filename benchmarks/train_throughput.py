"""Images/s of the project's training loops against the bare model step on preloaded tensors.

    python benchmarks/train_throughput.py [--images 96] [--size 64] [--batch 32] [--epochs 3]
        [--seg-size 64] [--seg-batch 8] [--seg-iterations 36] [--set data.cache_mib=0 ...]

Classifier: ``train_classifier`` (baseline ResNet-18, the default ``[data]``/``[classify]`` loading:
decoded-once cache, batched crop + flip, workers and threads as planned) on a generated VOC-layout
split of ``--images`` JPEGs, images/s of the epochs after the first (the first also decodes).
Segmenter: ``train_segmenter`` (DeepLabV3+ ResNet-18, fully supervised, so the CRF pool of the SEC
loss does not enter), images/s over the whole run (decoding included). Bare step: the same model,
batch, input size and torch threads, forward + loss + backward + SGD update on one preloaded
batch, timed before and after the loop (their mean is the bare rate: load that changes during the
run falls on both sides). All in one process; the load average is printed beside each ratio. The last line is ``summary: classify_over_bare=<r>x segment_over_bare=<r>x``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sharpen_attention.classifiers import build_classifier
from classify.train import train_classifier
from data.io import write_image, write_mask
from sharpen_core.config import load_config
from segment.models import build_segmenter
from segment.train import train_segmenter


def make_split(root: Path, n: int, seed: int = 0) -> Path:
    """``n`` train images (JPEG, 120x160 to 180x240) with 1-3 rectangles of random VOC classes, in VOC layout."""
    rng = np.random.default_rng(seed)
    voc = root / "VOCdevkit" / "VOC2012"
    ids = []
    for i in range(n):
        h, w = int(rng.integers(120, 181)), int(rng.integers(160, 241))
        image = (rng.random((h // 8 + 1, w // 8 + 1, 3)) * 255).astype(np.uint8).repeat(8, 0).repeat(8, 1)[:h, :w]
        mask = np.zeros((h, w), dtype=np.uint8)
        for c in rng.choice(np.arange(1, 21), size=int(rng.integers(1, 4)), replace=False):
            y, x = int(rng.integers(0, h - 40)), int(rng.integers(0, w - 40))
            mask[y:y + 40, x:x + 40] = c
            image[y:y + 40, x:x + 40] = rng.integers(0, 256, 3)
        image_id = f"2007_{i:06d}"
        write_image(voc / "JPEGImages" / f"{image_id}.jpg", image)
        write_mask(voc / "SegmentationClass" / f"{image_id}.png", mask)
        ids.append(image_id)
    sets = voc / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True, exist_ok=True)
    for split, part in (("train", ids), ("val", ids[:4]), ("test", ids[:2])):
        (sets / f"{split}.txt").write_text("\n".join(part) + "\n")
    return voc


def bare_rate(step, images: torch.Tensor, steps: int) -> float:
    step()  # warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * images.shape[0] / (time.perf_counter() - t0)


def classify_rates(voc: Path, args: argparse.Namespace, out: Path) -> tuple[float, tuple[float, float], int]:
    cfg = load_config(None, [f"data.root={voc}", "run.device=cpu", "classify.arch=resnet18",
                             f"classify.image_size={args.size}", f"classify.batch_size={args.batch}",
                             f"classify.epochs={args.epochs}", *args.set])
    torch.manual_seed(0)
    model = build_classifier("resnet18", 20).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(args.batch, 3, args.size, args.size)
    y = (torch.rand(args.batch, 20) < 0.1).float()

    def step() -> None:
        loss = F.multilabel_soft_margin_loss(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    steps = max(2, args.images // args.batch)
    before = bare_rate(step, x, steps)
    train_classifier(cfg, "baseline", out / "classify", progress=False)
    history = json.loads((out / "classify" / "metrics.json").read_text())[1:]
    loop = sum(h["images"] for h in history) / sum(h["seconds"] for h in history)
    threads = torch.get_num_threads()  # as the loop planned them (the bare step ran with the same)
    return loop, (before, bare_rate(step, x, steps)), threads


def segment_rates(voc: Path, args: argparse.Namespace, out: Path) -> tuple[float, tuple[float, float], int]:
    cfg = load_config(None, [f"data.root={voc}", "run.device=cpu", "segment.model=deeplabv3plus",
                             "segment.encoder=resnet18", f"segment.crop_size={args.seg_size}",
                             f"segment.batch_size={args.seg_batch}", f"segment.iterations={args.seg_iterations}",
                             "segment.lr=0.01", f"segment.checkpoint_every={args.seg_iterations}", *args.set])
    torch.manual_seed(0)
    model = build_segmenter("deeplabv3plus", "resnet18", 21).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(args.seg_batch, 3, args.seg_size, args.seg_size)
    y = torch.randint(0, 21, (args.seg_batch, args.seg_size, args.seg_size))

    def step() -> None:
        logits = model(x)
        if logits.shape[-2:] != y.shape[-2:]:
            logits = F.interpolate(logits, size=y.shape[-2:], mode="bilinear", align_corners=False)
        loss = F.cross_entropy(logits, y, ignore_index=255)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    steps = max(2, args.seg_iterations // 2)
    before = bare_rate(step, x, steps)
    record = train_segmenter(cfg, out / "segment", supervision="full", progress=False)
    threads = torch.get_num_threads()
    return float(record["images_per_second"]), (before, bare_rate(step, x, steps)), threads


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=96)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--seg-size", type=int, default=64)
    ap.add_argument("--seg-batch", type=int, default=8)
    ap.add_argument("--seg-iterations", type=int, default=36)
    ap.add_argument("--set", nargs="*", default=[], help="config overrides for both loops, e.g. data.cache_mib=0")
    args = ap.parse_args()
    from sharpen_core.threads import apply_plan

    cfg = load_config(None, args.set)  # the bare steps run with the threads the loops will plan
    apply_plan(cfg.data.train_workers, cfg.data.num_workers, cfg.data.torch_threads, cfg.data.cache_mib > 0)
    with tempfile.TemporaryDirectory() as tmp:
        voc = make_split(Path(tmp) / "data", args.images)
        print(f"{args.images} JPEGs; overrides: {args.set or 'none'}")
        print(f"{'loop':<10} {'size':>5} {'batch':>6} {'threads':>8} {'loop img/s':>11} {'bare img/s':>11} "
              f"{'ratio':>7}  {'bare before/after':>17}  loadavg")
        rows = {}
        for name, fn, size, batch in (("classify", classify_rates, args.size, args.batch),
                                      ("segment", segment_rates, args.seg_size, args.seg_batch)):
            loop, (before, after), threads = fn(voc, args, Path(tmp))
            bare = (before + after) / 2
            rows[name] = loop / bare
            load = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").is_file() else "?"
            print(f"{name:<10} {size:>5} {batch:>6} {threads:>8} {loop:>11.1f} {bare:>11.1f} {loop / bare:>6.2f}x  "
                  f"{before:>8.1f}/{after:<8.1f}  {load}", flush=True)
    print(f"summary: classify_over_bare={rows['classify']:.2f}x segment_over_bare={rows['segment']:.2f}x")


if __name__ == "__main__":
    main()
