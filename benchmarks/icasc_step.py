"""Time of one classifier training step: ICASC vs baseline and icasc-gradcam vs baseline.

    python benchmarks/icasc_step.py [--size 224] [--batch 8] [--repeats 5] [--archs resnet18 vgg19]
        [--threads N] [--vjp vmap|is_grads_batched|loop] [--targets K] [--no-weight-grad] [--profile]

A step is what classify.train runs per batch: forward, losses (Eq. 6), backward, SGD update.
Medians over ``--repeats`` rounds after one warm-up round, all in one process, the variants
interleaved round by round (so load that comes and goes falls on all of them). The last line is the
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


def make_step(arch: str, variant: str, batch: int, size: int, vjp: str = "vmap", seed: int = 0,
              targets: int | None = None, weight_grad: bool = True, output_stride: int = 32):
    """A closure running one training step of ``variant``; all variants see the same data."""
    torch.manual_seed(seed)
    model = build_classifier(arch, 20, output_stride=output_stride)
    model.train()
    c = ClassifyConfig(arch=arch, attention_weight_grad=weight_grad)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, size, size, generator=g)
    if targets is None:
        labels = (torch.rand(batch, 20, generator=g) < 0.15).float()
        labels[torch.arange(batch), torch.randint(0, 20, (batch,), generator=g)] = 1.0  # >= 1 class per image
    else:  # exactly `targets` ground-truth classes per image
        labels = torch.zeros(batch, 20)
        for b in range(batch):
            labels[b, torch.randperm(20, generator=g)[:targets]] = 1.0
    data = {"image": images, "label": labels}
    mechanism = VARIANTS[variant]
    extractor = AttentionExtractor(model, layers=("last", "inner"), mechanism=mechanism, vjp=vjp) \
        if mechanism else None

    def step() -> None:
        loss, _, _ = compute_losses(model, extractor, images, data, c, multilabel=True)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", nargs="+", default=["resnet18", "vgg19"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--vjp", default="vmap", help="AttentionExtractor vjp mode: vmap | is_grads_batched | loop")
    parser.add_argument("--targets", type=int, default=0, help="ground-truth classes per image (0: random, >= 1)")
    parser.add_argument("--no-weight-grad", action="store_true",
                        help="classify.attention_weight_grad = false: α constant, no double backward (not the paper's)")
    parser.add_argument("--profile", action="store_true", help="also print the top operators of one step per variant")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    print(f"one training step, batch {args.batch}, {args.size}x{args.size}, CPU threads {torch.get_num_threads()}, "
          f"vjp {args.vjp}, attention_weight_grad {not args.no_weight_grad}, median of {args.repeats} (variants interleaved), loadavg "
          f"{open('/proc/loadavg').read().split()[0]}")
    print(f"{'arch':<10} {'variant':<14} {'median s':>9} {'x baseline':>11}")
    ratios: dict[tuple[str, str], float] = {}
    variants = ("baseline", "icasc-gradcam", "icasc")
    for arch in args.archs:
        steps = {}
        for v in variants:
            steps[v], labels = make_step(arch, v, args.batch, args.size, args.vjp, targets=args.targets or None,
                                         weight_grad=not args.no_weight_grad)
        times: dict[str, list[float]] = {v: [] for v in variants}
        for i in range(args.repeats + 1):  # round robin: load that comes and goes falls on every variant
            for v in variants:
                t0 = time.perf_counter()
                steps[v]()
                if i:  # the first round warms up
                    times[v].append(time.perf_counter() - t0)
        base = statistics.median(times["baseline"])
        for v in variants:
            t = statistics.median(times[v])
            ratios[arch, v] = t / base
            print(f"{arch:<10} {v:<14} {t:9.3f} {t / base:10.2f}x", flush=True)
        print(f"{arch:<10} classes per image: mean {labels.sum(1).mean():.2f}, max {int(labels.sum(1).max())} "
              f"(VJP slots: 1 + max)")
        if args.profile:
            from torch.profiler import ProfilerActivity, profile

            for v in variants:
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    steps[v]()
                print(f"{arch} {v}: top operators of one step (self CPU time)")
                print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8))
    arch = "resnet18" if ("resnet18", "icasc") in ratios else args.archs[0]
    print(f"summary: icasc_over_baseline={ratios[arch, 'icasc']:.2f}x "
          f"icasc_gradcam_over_baseline={ratios[arch, 'icasc-gradcam']:.2f}x")


if __name__ == "__main__":
    main()
