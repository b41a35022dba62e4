"""Time of one segmenter and one classifier training step with torch's fused AdamW vs the default one.

    python benchmarks/optimizer_step.py [--repeats 8] [--threads N]

The stages build AdamW with ``fused=True`` where torch supports it (sharpen_core/optim.py,
``fused_adamw_supported``). A step is forward, cross-entropy, backward, optimizer step: DeepLabV3+
(ResNet-18) on 8 crops of 64 px (the demo's segmenter) and ResNet-18 on 32 images of 128 px at output
stride 32 (the demo's classifier). Medians over ``--repeats`` rounds after two warm-up steps, both
optimizers in one process and interleaved round by round; printed as a table with the ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import segmentation_models_pytorch as smp

from sharpen_attention.classifiers import build_classifier
from sharpen_core.optim import build_optimizer, fused_adamw_supported


def make_step(kind: str, fused: bool):
    torch.manual_seed(0)
    if kind == "segmenter":
        model = smp.DeepLabV3Plus(encoder_name="resnet18", encoder_weights=None, classes=21)
        x, y = torch.randn(8, 3, 64, 64), torch.randint(0, 21, (8, 64, 64))
        loss_fn = torch.nn.functional.cross_entropy
    else:
        model = build_classifier("resnet18", 20, output_stride=32)
        x, y = torch.randn(32, 3, 128, 128), (torch.rand(32, 20) < 0.15).float()
        loss_fn = torch.nn.functional.binary_cross_entropy_with_logits
    params = list(model.parameters())
    opt = (build_optimizer("adamw", params, lr=1e-3, weight_decay=0.05) if fused
           else torch.optim.AdamW(params, lr=1e-3, weight_decay=0.05, foreach=True))
    assert bool(opt.param_groups[0].get("fused")) == fused

    def step() -> float:
        start = time.perf_counter()
        loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - start
    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=8)
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    if not fused_adamw_supported([torch.nn.Parameter(torch.zeros(1))]):
        raise SystemExit(f"torch {torch.__version__} has no fused AdamW on the CPU (torch >= 2.4 has)")
    print(f"torch {torch.__version__}, CPU threads {torch.get_num_threads()}, loadavg {os.getloadavg()[0]:.2f}, "
          f"median of {a.repeats}")
    print("| step | default AdamW (s) | fused AdamW (s) | fused / default |")
    print("|---|---:|---:|---:|")
    for kind in ("segmenter", "classifier"):
        steps = {f: make_step(kind, f) for f in (False, True)}
        for f in steps:
            steps[f](), steps[f]()
        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(a.repeats):
            for f in steps:
                times[f].append(steps[f]())
        d, f = statistics.median(times[False]), statistics.median(times[True])
        print(f"| {kind} | {d:.3f} | {f:.3f} | {f / d:.2f}x |")


if __name__ == "__main__":
    main()
