"""Attention-map resolution against cost: which input size and output stride give the paper's maps.

    python benchmarks/resolution.py [--settings 64/16 64/8 96/16 128/32 128/16 160/32] [--batch 32]
        [--repeats 3] [--images 1600] [--arch resnet18]

For each setting (input side / output stride) it prints the inner (ResNet ``layer3``) and last
(``layer4``) feature-map sides, the median time of one baseline and one ICASC training step
(classify.train's step: forward, Eq. 6 losses, backward, update; benchmarks/icasc_step.py), their
ratio, and the cost of one epoch of ``--images`` images for each. The paper: VGG-19 ``conv5_4`` at
224 px is 14×14, and a ResNet's inner layer has twice the last layer's side (issue 20). The
settings run round robin in one process, so load that comes and goes falls on all of them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from icasc_step import make_step  # noqa: E402

from sharpen_attention.classifiers import build_classifier  # noqa: E402


def map_sides(arch: str, size: int, output_stride: int) -> tuple[int, int]:
    """(inner, last) feature-map sides of ``arch`` at ``size`` px and ``output_stride``."""
    model = build_classifier(arch, 20, output_stride=output_stride).eval()
    sides: dict[str, int] = {}
    model.layer3.register_forward_hook(lambda m, i, o: sides.__setitem__("inner", o.shape[-1]))
    model.layer4.register_forward_hook(lambda m, i, o: sides.__setitem__("last", o.shape[-1]))
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    return sides["inner"], sides["last"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", nargs="+", default=["64/16", "64/8", "96/16", "128/32", "128/16", "160/32"])
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=1600, help="images per epoch for the epoch estimate")
    args = parser.parse_args()
    settings = []
    for text in args.settings:
        size, _, stride = text.partition("/")
        settings.append((int(size), int(stride or 32)))
    steps = {}
    for size, stride in settings:
        for variant in ("baseline", "icasc"):
            steps[size, stride, variant], _ = make_step(args.arch, variant, args.batch, size, output_stride=stride)
    times: dict[tuple[int, int, str], list[float]] = {k: [] for k in steps}
    for i in range(args.repeats + 1):
        for key, step in steps.items():
            t0 = time.perf_counter()
            step()
            if i:
                times[key].append(time.perf_counter() - t0)
    load = open("/proc/loadavg").read().split()[0]
    print(f"{args.arch}, batch {args.batch}, CPU threads {torch.get_num_threads()}, median of {args.repeats} "
          f"(settings round robin), loadavg {load}; epoch = {args.images} images")
    print("| size / stride | inner × last map | inner:last | baseline step s | ICASC step s | ICASC / baseline "
          "| baseline epoch s | ICASC epoch s |")
    print("|---|---|---|---|---|---|---|---|")
    for size, stride in settings:
        inner, last = map_sides(args.arch, size, stride)
        base = statistics.median(times[size, stride, "baseline"])
        icasc = statistics.median(times[size, stride, "icasc"])
        per_epoch = args.images / args.batch
        print(f"| {size} / {stride} | {inner}×{inner}, {last}×{last} | {inner / last:.0f}:1 | {base:.3f} | {icasc:.3f} "
              f"| {icasc / base:.2f}x | {base * per_epoch:.0f} | {icasc * per_epoch:.0f} |", flush=True)


if __name__ == "__main__":
    main()
