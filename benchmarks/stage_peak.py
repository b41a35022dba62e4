"""What the per-stage memory sampler (pipeline/memory.py ``StagePeak``) costs a training loop.

    python benchmarks/stage_peak.py [--rounds 6] [--steps 10] [--size 64] [--batch 32] [--interval S]

ResNet-18 training steps (forward + loss + backward + SGD) on one preloaded batch, timed in
alternating rounds with and without a ``StagePeak`` around them, all in one process with the
default torch threads: the ratio of the medians (with / without) is the sampler's cost; load
that changes during the run falls on both sides. The load average is printed beside it. The last
line is ``summary: with_sampler_over_without=<r>x``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F

from pipeline.memory import StagePeak
from sharpen_attention.classifiers import build_classifier


def timed_steps(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                steps: int) -> float:
    """Seconds for ``steps`` training steps."""
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = F.binary_cross_entropy_with_logits(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--interval", type=float, default=None,
                    help="the sampler's interval in seconds (default: StagePeak's own)")
    args = ap.parse_args()
    if args.rounds < 1 or args.steps < 1:
        ap.error("--rounds and --steps must be at least 1")
    torch.manual_seed(0)
    model = build_classifier("resnet18", 20).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randn(args.batch, 3, args.size, args.size)
    y = (torch.rand(args.batch, 20) < 0.2).float()
    timed_steps(model, opt, x, y, 2)  # warm-up
    bare, sampled = [], []
    for _ in range(args.rounds):
        bare.append(timed_steps(model, opt, x, y, args.steps))
        with (StagePeak() if args.interval is None else StagePeak(args.interval)) as peak:
            sampled.append(timed_steps(model, opt, x, y, args.steps))
    ratio = statistics.median(sampled) / statistics.median(bare)
    print(f"sampler interval {peak.interval} s, torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f}, "
          f"{args.rounds} rounds of {args.steps} steps, ResNet-18 {args.size} px, batch {args.batch}")
    print("| run | median s / round | images/s |\n|---|---:|---:|")
    for name, times in (("without sampler", bare), ("with StagePeak", sampled)):
        med = statistics.median(times)
        print(f"| {name} | {med:.3f} | {args.steps * args.batch / med:.1f} |")
    print(f"(last sampled peak: {peak.peak_mib():.0f} MiB)")
    print(f"summary: with_sampler_over_without={ratio:.3f}x")


if __name__ == "__main__":
    main()
