"""Benchmark: dense-CRF refinement throughput (docs/method.md §5) and its share of a SEC training step.

    python benchmarks/crf.py [--root builtin_data/default] [--limit N] [--repeats R] [--no-step] [--no-startup]

On the built-in dataset's val split (built at ``--root`` with ``size=default``, seed 0, when
missing), at full image resolution with ``scale = 1`` and the default CRF parameters (10 mean-field
iterations):

- (a) :func:`segment.crf.dense_crf` over the labels present in the image (background + the image's
  ground-truth classes) against all 21 labels, inline in this process;
- (b) present labels through ``CRFPool(1)`` (inline) against ``CRFPool(2)`` (two worker processes;
  the pool is created and warmed up before timing, as training creates it once);
- (c) the share of a SEC training step spent in the CRF: one DeepLabV3+ (ResNet-18 encoder, random
  weights, 21 classes) forward + SEC seeding and expansion losses + backward at batch 16 and 128 px,
  against the CRF of the same 16 images shrunk to the 32×32 output grid (``scale = 4``), present
  labels, through ``CRFPool(2)`` (and inline for reference);
- the startup of a 2-process pool with each multiprocessing start method, in a fresh process that
  has torch imported (creation + the first map of a tiny task: what the pool costs once). Spawned
  workers re-import the main module: this script imports only numpy at top level, as the
  ``sharpen`` entry point does; a main module importing torch adds that import (about 2 s here).

Probabilities come from each image's ground truth, seeded: logits ``4·onehot(gt) + N(0, 1)`` per
label and pixel (numpy ``default_rng(seed + image index)``), softmax over the 21 labels, void (255)
pixels counted as background. This is a softened one-hot with noise, about as peaked as a trained
segmenter; CRF time does not depend much on the values, mostly on the pixels and the labels.

Times: every method runs once untimed, then ``--repeats`` rounds each time every method once in
turn (interleaved, so the noise of a shared machine hits all alike); the median is reported.
``OMP_WAIT_POLICY=PASSIVE`` (default here) keeps torch's spinning OpenMP threads from starving the
CRF workers. The last line is the summary.
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

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

NUM_LABELS = 21
STEP_BATCH, STEP_SIZE, STEP_GRID = 16, 128, 32


def _probs_from_mask(mask: np.ndarray, seed: int) -> np.ndarray:
    """Softened one-hot of the ground truth plus Gaussian noise (see module doc): (21, H, W) float32."""
    rng = np.random.default_rng(seed)
    gt = np.where(mask == 255, 0, mask).astype(np.int64)
    logits = 4.0 * np.eye(NUM_LABELS, dtype=np.float32)[gt].transpose(2, 0, 1)
    logits += rng.standard_normal(logits.shape, dtype=np.float32)
    logits -= logits.max(0, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(0, keepdims=True)


def _load(root: Path, limit: int, seed: int) -> list[dict]:
    from data.voc import VOCSegmentation

    if not (root / "builtin.json").is_file() and not (root / "ImageSets").is_dir():
        from data.builtin import build_builtin_dataset

        print(f"building the built-in dataset at {root} (seed 0, size default)", flush=True)
        build_builtin_dataset(root, seed=0, size="default")
    ds = VOCSegmentation(root, "val")
    n = len(ds) if limit <= 0 else min(limit, len(ds))
    items = []
    for i in range(n):
        s = ds.load(i)
        image = np.ascontiguousarray(s["image"]).copy()
        labels = [0] + [int(c) + 1 for c in np.flatnonzero(s["label"])]
        items.append({"image": image, "mask": s["mask"], "probs": _probs_from_mask(s["mask"], seed + i),
                      "labels": labels})
    return items


def _proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process from /proc (0 where unreadable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _cpu_seconds(pids: Callable[[], list[int]] | None = None) -> float:
    """CPU seconds of this process plus the given worker processes."""
    return time.process_time() + sum(_proc_cpu_seconds(pid) for pid in (pids() if pids else []))


def _interleaved(runs: dict[str, Callable[[], object]], repeats: int,
                 pids: dict[str, Callable[[], list[int]]] | None = None) -> tuple[dict, dict]:
    """Times of each run, round by round, and the CPU cores it kept busy (CPU seconds / wall seconds)."""
    pids = pids or {}
    for run in runs.values():
        run()  # warm-up
    times: dict[str, list[float]] = {k: [] for k in runs}
    cores: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(repeats):
        for k, run in runs.items():
            c0 = _cpu_seconds(pids.get(k))
            t0 = time.perf_counter()
            run()
            wall = time.perf_counter() - t0
            times[k].append(wall)
            cores[k].append((_cpu_seconds(pids.get(k)) - c0) / wall)
    return times, cores


def startup_worker(method: str) -> dict:
    """Pool(2) creation and first map with ``method``, in a process that has torch imported and used."""
    import multiprocessing as mp

    import torch

    from segment.crf import CRFParams, _crf_task

    torch.randn(256, 256) @ torch.randn(256, 256)  # torch's thread pool is up, as in training
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    probs = rng.random((3, 32, 32), dtype=np.float32)
    task = (image, probs, 4.0, CRFParams())
    t0 = time.perf_counter()
    pool = mp.get_context(method).Pool(2)
    t1 = time.perf_counter()
    pool.map(_crf_task, [task, task], chunksize=1)
    t2 = time.perf_counter()
    pool.close()
    pool.join()
    return {"create": t1 - t0, "first_map": t2 - t1}


def _run_worker(args: list[str]) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), *args]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=dict(os.environ))
    if out.returncode != 0:
        raise RuntimeError(f"worker {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _row(name: str, labels: float, times: list[float], cores: list[float], n: int, base: float) -> str:
    med = statistics.median(times)
    return (f"{name:<30} {labels:>7.2f} {med:>9.3f} {n / med:>8.2f} {base / med:>8.2f}x "
            f"{statistics.median(cores):>6.2f}  [{', '.join(f'{t:.2f}' for t in times)}]")


def step_share(items: list[dict], repeats: int, params) -> None:
    import torch
    import torch.nn.functional as F
    from PIL import Image
    import segmentation_models_pytorch as smp

    from segment.crf import CRFPool
    from segment.losses import expansion_loss, rescaled_decay, sec_probabilities, seeding_loss

    batch = [items[i % len(items)] for i in range(STEP_BATCH)]
    small_images, small_probs, labels, big, masks = [], [], [], [], []
    for it in batch:
        pil = Image.fromarray(it["image"])
        small_images.append(np.asarray(pil.resize((STEP_GRID, STEP_GRID), Image.BILINEAR)).copy())
        big.append(np.asarray(pil.resize((STEP_SIZE, STEP_SIZE), Image.BILINEAR)))
        mask = np.asarray(Image.fromarray(it["mask"]).resize((STEP_GRID, STEP_GRID), Image.NEAREST))
        masks.append(mask)
        small_probs.append(_probs_from_mask(mask, len(labels)))
        labels.append(it["labels"])
    torch.manual_seed(0)
    model = smp.DeepLabV3Plus(encoder_name="resnet18", encoder_weights=None, classes=NUM_LABELS).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x = torch.from_numpy(np.stack(big)).permute(0, 3, 1, 2).float().div(255)
    gt = torch.from_numpy(np.stack(masks).astype(np.int64))
    cues = F.one_hot(torch.where(gt == 255, 0, gt), NUM_LABELS).permute(0, 3, 1, 2).bool()
    multi_hot = torch.zeros(STEP_BATCH, NUM_LABELS)
    for i, lab in enumerate(labels):
        multi_hot[i, lab] = 1
    d_fg = rescaled_decay(0.996, (STEP_GRID, STEP_GRID))
    d_bg = rescaled_decay(0.999, (STEP_GRID, STEP_GRID))

    def forward_backward() -> None:
        logits = F.avg_pool2d(model(x), STEP_SIZE // STEP_GRID)  # the 32x32 output grid
        p = sec_probabilities(logits)
        loss = seeding_loss(p, cues) + expansion_loss(p, multi_hot, d_fg, d_bg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    scale = STEP_SIZE / STEP_GRID
    with CRFPool(2, params) as pool2, CRFPool(1, params) as pool1:
        runs = {
            "fb": forward_backward,
            "crf2": lambda: pool2.map(small_images, small_probs, labels, scale=scale),
            "crf1": lambda: pool1.map(small_images, small_probs, labels, scale=scale),
        }
        times, cores = _interleaved(runs, repeats, {"crf2": pool2.worker_pids})
    med = {k: statistics.median(v) for k, v in times.items()}
    print()
    print(f"(c) SEC step share: DeepLabV3+ resnet18 (random weights) forward + seed/expand losses + backward + "
          f"SGD step at batch {STEP_BATCH}, {STEP_SIZE} px, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; CRF of the same {STEP_BATCH} images at {STEP_GRID}x{STEP_GRID} "
          f"(scale {scale:g}), present labels")
    header = f"{'part':<34} {'median s':>9} {'share of fb+crf':>16} {'cores':>6}  times (s)"
    print(header)
    print("-" * len(header))
    for key, name in (("fb", "forward+backward (batch 16)"), ("crf2", "CRF x16, CRFPool(2)"),
                      ("crf1", "CRF x16, inline (CRFPool(1))")):
        share = "" if key == "fb" else f"{med[key] / (med['fb'] + med[key]):>15.1%}"
        print(f"{name:<34} {med[key]:>9.3f} {share:>16} {statistics.median(cores[key]):>6.2f}  "
              f"[{', '.join(f'{t:.3f}' for t in times[key])}]")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=ROOT / "builtin_data" / "default")
    p.add_argument("--limit", type=int, default=0, help="first N val images (0: all)")
    p.add_argument("--repeats", type=int, default=3, help="timed interleaved rounds")
    p.add_argument("--seed", type=int, default=0, help="seed of the probability noise")
    p.add_argument("--no-step", action="store_true", help="skip (c), the SEC step share")
    p.add_argument("--no-startup", action="store_true", help="skip the pool start-method startup")
    p.add_argument("--worker", nargs=2, metavar=("KIND", "METHOD"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(startup_worker(args.worker[1])))
        return

    from segment.crf import CRFParams, CRFPool, dense_crf, pool_context

    params = CRFParams()
    items = _load(args.root, args.limit, args.seed)
    n = len(items)
    mean_h = statistics.mean(it["image"].shape[0] for it in items)
    mean_w = statistics.mean(it["image"].shape[1] for it in items)
    mean_labels = statistics.mean(len(it["labels"]) for it in items)
    images = [it["image"] for it in items]
    probs = [it["probs"] for it in items]
    labels = [it["labels"] for it in items]
    print(f"dense CRF over {args.root} val: {n} images (mean {mean_h:.0f}x{mean_w:.0f}), full resolution, "
          f"scale 1, {params.iterations} mean-field iterations, {os.cpu_count()} CPUs; pool start method "
          f"{pool_context().get_start_method()}; median of {args.repeats} interleaved rounds after a warm-up; "
          f"load average at start {os.getloadavg()[0]:.2f}")
    with CRFPool(2, params) as pool2:
        runs = {
            "all": lambda: [dense_crf(im, pr, None, 1.0, params) for im, pr in zip(images, probs)],
            "present": lambda: [dense_crf(im, pr, lab, 1.0, params) for im, pr, lab in zip(images, probs, labels)],
            "pool1": lambda: CRFPool(1, params).map(images, probs, labels, 1.0),
            "pool2": lambda: pool2.map(images, probs, labels, 1.0),
        }
        times, cores = _interleaved(runs, args.repeats, {"pool2": pool2.worker_pids})
    med = {k: statistics.median(v) for k, v in times.items()}
    print("cores: CPU seconds of this process and its CRF workers per wall second (median); on a shared "
          "machine, below the process count means the cores were busy elsewhere")
    header = f"{'method':<30} {'labels':>7} {'median s':>9} {'img/s':>8} {'speedup':>9} {'cores':>6}  times (s)"
    print(header)
    print("-" * len(header))
    print("(a) labels, inline; speedup over all 21 labels")
    print(_row("all 21 labels", NUM_LABELS, times["all"], cores["all"], n, med["all"]))
    print(_row("present labels", mean_labels, times["present"], cores["present"], n, med["all"]))
    print("(b) present labels; speedup over 1 process")
    print(_row("CRFPool(1) (inline)", mean_labels, times["pool1"], cores["pool1"], n, med["pool1"]))
    print(_row("CRFPool(2)", mean_labels, times["pool2"], cores["pool2"], n, med["pool1"]), flush=True)

    if not args.no_startup:
        print()
        print("pool startup, Pool(2) in a fresh process with torch imported and used, main module without torch "
              "(once per pool)")
        header = f"{'start method':<14} {'create s':>9} {'first map s':>12} {'total s':>8}"
        print(header)
        print("-" * len(header))
        import multiprocessing as mp

        for method in ("fork", "spawn", "forkserver"):
            if method not in mp.get_all_start_methods():
                continue
            r = _run_worker(["--worker", "startup", method])
            print(f"{method:<14} {r['create']:>9.3f} {r['first_map']:>12.3f} {r['create'] + r['first_map']:>8.3f}",
                  flush=True)

    if not args.no_step:
        step_share(items, args.repeats, params)

    print(f"load average at the end {os.getloadavg()[0]:.2f} (on {os.cpu_count()} CPUs)")
    print(f"summary: present_over_all21={med['all'] / med['present']:.2f}x "
          f"two_procs_over_one={med['pool1'] / med['pool2']:.2f}x")


if __name__ == "__main__":
    main()
