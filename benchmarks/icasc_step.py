"""Time of one classifier training step: ICASC vs baseline and icasc-gradcam vs baseline.

    python benchmarks/icasc_step.py [--size 224] [--batch 8] [--repeats 5] [--archs resnet18 vgg19]

A step is what classify.train runs per batch: forward, losses (Eq. 6), backward, SGD update.
Medians over ``--repeats`` steps after one warm-up, all in one process. The last line is the
summary for ResNet-18.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from sharpen_attention.classifiers import build_classifier
from classify.train import VARIANTS, compute_losses
from sharpen_attention.attention import AttentionExtractor
from sharpen_core.config import ClassifyConfig


def step_time(arch: str, variant: str, batch: int, size: int, repeats: int, seed: int = 0) -> float:
    torch.manual_seed(seed)
    model = build_classifier(arch, 20)
    model.train()
    c = ClassifyConfig(arch=arch)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    images = torch.randn(batch, 3, size, size)
    labels = (torch.rand(batch, 20) < 0.15).float()
    labels[torch.arange(batch), torch.randint(0, 20, (batch,))] = 1.0  # at least one class per image
    data = {"image": images, "label": labels}
    mechanism = VARIANTS[variant]
    extractor = AttentionExtractor(model, layers=("last", "inner"), mechanism=mechanism) if mechanism else None
    times = []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        loss, _, _ = compute_losses(model, extractor, images, data, c, multilabel=True)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i:  # the first step warms up
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", nargs="+", default=["resnet18", "vgg19"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    print(f"one training step, batch {args.batch}, {args.size}x{args.size}, CPU threads {torch.get_num_threads()}, "
          f"median of {args.repeats}")
    print(f"{'arch':<10} {'variant':<14} {'median s':>9} {'x baseline':>11}")
    ratios: dict[tuple[str, str], float] = {}
    for arch in args.archs:
        base = None
        for variant in ("baseline", "icasc-gradcam", "icasc"):
            t = step_time(arch, variant, args.batch, args.size, args.repeats)
            base = t if variant == "baseline" else base
            ratios[arch, variant] = t / base
            print(f"{arch:<10} {variant:<14} {t:9.3f} {t / base:10.2f}x", flush=True)
    arch = "resnet18" if ("resnet18", "icasc") in ratios else args.archs[0]
    print(f"summary: icasc_over_baseline={ratios[arch, 'icasc']:.2f}x "
          f"icasc_gradcam_over_baseline={ratios[arch, 'icasc-gradcam']:.2f}x")


if __name__ == "__main__":
    main()
