"""Benchmark: all-class attention maps (docs/method.md §1) against forward+backward, a per-class loop and pytorch-grad-cam.

    python benchmarks/attention.py [--quick] [--device cpu|cuda] [--mechanism channel]

For ResNet-18 and VGG-19 (random weights, 20 classes, eval mode), batch 8 at 224 px, the "last"
and "inner" layers together, all 20 classes:

- ``forward+backward``: one ``model(x)`` and ``logits.sum().backward()`` (parameter gradients):
  the reference cost;
- ``ours (vmap)``: one forward and one batched VJP (``torch.vmap`` over ``autograd.grad``);
- ``ours (is_grads_batched)``: the same with ``autograd.grad(..., is_grads_batched=True)``;
- ``per-class loop``: one forward, then one ``autograd.grad`` per class over the same graph;
- ``pytorch-grad-cam loop``: ``GradCAM(model, [last, inner])`` called once per class (one
  forward+backward per class; its output is the two layers' maps averaged, min-max scaled and
  resized, which is less than our per-layer maps).

Times: one subprocess per model runs every method once untimed, then ``--repeats`` rounds, each
timing every method once in turn (interleaved, so the noise of a shared machine hits all methods
alike); the median per method is reported (pytorch-grad-cam: one run of 20 classes, in the middle
round). Memory: each method once in a fresh subprocess (CPU: peak resident set size above the
process's size just before the call, via /proc/self/clear_refs and VmHWM; CUDA:
``max_memory_allocated`` above the allocation before the call; pytorch-grad-cam over 2 classes,
which is the peak of its loop). The last line is the summary for ResNet-18 (both layers).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

METHODS = ("fb", "ours", "legacy", "loop", "pgc")
LABELS = {
    "fb": "forward+backward",
    "ours": "ours (vmap)",
    "legacy": "ours (is_grads_batched)",
    "loop": "per-class loop",
    "pgc": "pytorch-grad-cam loop",
}
NUM_CLASSES = 20


def _rss_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _setup(arch: str, method: str, model, x, mechanism: str, pgc_classes: int) -> Callable[[], None]:
    """A callable running ``method`` once on ``x``."""
    import torch
    from sharpen_attention.attention import AttentionExtractor, default_layers

    batch = x.shape[0]
    if method == "fb":
        def run() -> None:
            model(x).sum().backward()
            model.zero_grad(set_to_none=True)
        return run
    if method in ("ours", "legacy", "loop"):
        vjp = {"ours": "vmap", "legacy": "is_grads_batched", "loop": "loop"}[method]
        extract = AttentionExtractor(model, ("last", "inner"), mechanism, vjp=vjp)

        def run() -> None:
            extract(x)
        return run
    if method == "pgc":
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        modules = dict(model.named_modules())
        names = default_layers(model)
        layers = [modules[names["inner"]], modules[names["last"]]]

        def loop(images: torch.Tensor, classes: int) -> None:
            cam = GradCAM(model=model, target_layers=layers)  # its hooks live only while it runs
            try:
                for c in range(classes):
                    cam(images, [ClassifierOutputTarget(c)] * images.shape[0])
            finally:
                cam.activations_and_grads.release()
                model.zero_grad(set_to_none=True)

        loop(x[:1], 1)  # lazy initialisation outside the measurement
        return lambda: loop(x, pgc_classes)
    raise ValueError(method)


def _model(arch: str, batch: int, size: int, device: str):
    import torch
    from torchvision import models as tvm

    torch.manual_seed(0)
    model = getattr(tvm, arch)(weights=None, num_classes=NUM_CLASSES).eval().to(device)
    return model, torch.randn(batch, 3, size, size, device=device)


def memory_worker(arch: str, method: str, batch: int, size: int, device: str, mechanism: str) -> dict:
    """Peak memory (MiB) of one call in a fresh process (pytorch-grad-cam: two classes, the peak of its loop)."""
    import torch

    model, x = _model(arch, batch, size, device)
    run = _setup(arch, method, model, x, mechanism, pgc_classes=2)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        run()
        torch.cuda.synchronize()
        return {"peak_mib": (torch.cuda.max_memory_allocated() - before) / 2**20}
    before_kib = _rss_kib("VmRSS")
    ok = _reset_peak_rss()
    run()
    peak_kib = _rss_kib("VmHWM")
    peak = (peak_kib - before_kib) / 1024 if ok and peak_kib and before_kib else float("nan")
    return {"peak_mib": peak}


def time_worker(arch: str, batch: int, size: int, repeats: int, device: str, mechanism: str) -> dict:
    """Median times of every method, interleaved round by round (shared-machine noise hits all alike)."""
    import torch

    model, x = _model(arch, batch, size, device)
    runs = {m: _setup(arch, m, model, x, mechanism, pgc_classes=NUM_CLASSES) for m in METHODS}

    def timed(run: Callable[[], None]) -> float:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        run()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    for m in METHODS:
        if m != "pgc":
            runs[m]()  # untimed warm-up
    times: dict[str, list[float]] = {m: [] for m in METHODS}
    for r in range(repeats):
        for m in METHODS:
            if m == "pgc" and r != repeats // 2:
                continue  # pytorch-grad-cam: once, in the middle round
            times[m].append(timed(runs[m]))
    return {"times": times}


def _run_worker(args: list[str]) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), *args]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=dict(os.environ))
    if out.returncode != 0:
        raise RuntimeError(f"worker {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="batch 2 at 112 px, one repeat: a smoke run")
    p.add_argument("--device", default="cpu")
    p.add_argument("--mechanism", default="channel")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--repeats", type=int, default=5, help="timed rounds (pytorch-grad-cam: 1)")
    p.add_argument("--archs", default="resnet18,vgg19")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--worker", nargs=2, metavar=("KIND", "ARCH"), help=argparse.SUPPRESS)
    p.add_argument("--method", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.size, args.repeats = 2, 112, 1
    if args.worker:
        kind, arch = args.worker
        if kind == "memory":
            res = memory_worker(arch, args.method, args.batch, args.size, args.device, args.mechanism)
        else:
            res = time_worker(arch, args.batch, args.size, args.repeats, args.device, args.mechanism)
        print(json.dumps(res))
        return

    import torch

    common = ["--batch", str(args.batch), "--size", str(args.size), "--device", args.device,
              "--mechanism", args.mechanism, "--repeats", str(args.repeats)]
    print(f"attention maps, all {NUM_CLASSES} classes, layers last+inner, mechanism={args.mechanism}, "
          f"batch {args.batch}, {args.size} px, device {args.device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads; median of {args.repeats} interleaved rounds after a warm-up "
          f"(pytorch-grad-cam: 1 run of {NUM_CLASSES} classes)")
    mem_note = ("peak MiB: CPU peak RSS above the process before the call, one call in a fresh process"
                if not args.device.startswith("cuda") else "peak MiB: CUDA max_memory_allocated above the start")
    print(mem_note + "; pytorch-grad-cam measured over 2 classes (its loop's peak)")
    header = f"{'model':<9} {'method':<24} {'median s':>9} {'x fwd+bwd':>10} {'peak MiB':>9}  times (s)"
    print(header)
    print("-" * len(header))
    medians: dict[str, dict[str, float]] = {}
    for arch in args.archs.split(","):
        timing = _run_worker(["--worker", "time", arch, *common])["times"]
        med = {m: statistics.median(t) for m, t in timing.items()}
        medians[arch] = med
        for m in METHODS:
            peak = float("nan") if args.no_memory else _run_worker(
                ["--worker", "memory", arch, "--method", m, *common])["peak_mib"]
            times = ", ".join(f"{t:.2f}" for t in timing[m])
            print(f"{arch:<9} {LABELS[m]:<24} {med[m]:>9.3f} {med[m] / med['fb']:>9.2f}x {peak:>9.0f}  [{times}]",
                  flush=True)
        print(f"{arch:<9} ours: {med['ours'] / med['fb']:.2f}x forward+backward, "
              f"{med['pgc'] / med['ours']:.1f}x faster than pytorch-grad-cam, "
              f"{med['loop'] / med['ours']:.2f}x faster than the per-class loop, "
              f"{med['legacy'] / med['ours']:.2f}x faster than is_grads_batched", flush=True)
    ref = medians.get("resnet18") or next(iter(medians.values()))
    print(f"summary: over_forward_backward={ref['ours'] / ref['fb']:.2f}x "
          f"vs_pytorch_grad_cam={ref['pgc'] / ref['ours']:.2f}x "
          f"vs_per_class_loop={ref['loop'] / ref['ours']:.2f}x")


if __name__ == "__main__":
    main()
