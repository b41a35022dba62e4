"""Benchmark: attention-map extraction throughput (``sharpen cues extract``) for ResNet-18.

    python benchmarks/cues_throughput.py [--root /tmp/bi_small] [--checkpoint CKPT] [--images 24]
                                         [--mechanism gradcam ...] [--device cpu] [--workers 0]

On the built-in dataset (built at ``--root`` with ``size=small`` when missing), for each mechanism,
single scale without flip vs the four scales (1.0, 0.5, 1.5, 2.0) with flip, and the image's
ground-truth classes vs all 20 classes:

- ``maps img/s``: :func:`cues.extract.multiscale_maps` on preloaded inputs, batch ``cues.batch_size``
  (the classifier's passes, resizing to image resolution, averaging and normalising);
- ``end-to-end img/s``: :func:`cues.extract.extract_maps` into a fresh folder (reading and
  resizing images, the maps, and writing one compressed file per image), as the stage runs.

The default ``OMP_WAIT_POLICY=PASSIVE`` keeps OpenMP's spinning threads from collapsing throughput
when another process shares the CPU. Throughput does not depend on the weights; without
``--checkpoint`` a randomly initialised ResNet-18 is used. Each measurement is the best of
``--repeats`` runs after a warm-up. The last line is the summary.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

# On a shared CPU, OpenMP threads that spin while waiting collapse throughput 10-20x whenever another
# process runs; passive waiting keeps the numbers meaningful (set OMP_WAIT_POLICY to override).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from sharpen_attention.classifiers import build_classifier  # noqa: E402
from sharpen_attention.attention import AttentionExtractor  # noqa: E402
from cues.extract import ExtractItems, extract_maps, load_classifier, multiscale_maps  # noqa: E402
from data.classes import VOC_CLASSES  # noqa: E402
from data.voc import VOCSegmentation  # noqa: E402
from sharpen_core.config import load_config  # noqa: E402

SETTINGS = {"1 scale": ([1.0], False), "4 scales+flip": ([1.0, 0.5, 1.5, 2.0], True)}


def _checkpoint(path: Path | None, tmp: Path) -> Path:
    if path is not None:
        return path
    torch.manual_seed(0)
    model = build_classifier("resnet18", 20)
    out = tmp / "random_resnet18.pt"
    torch.save({"arch": "resnet18", "num_classes": 20, "variant": "random", "model": model.state_dict(),
                "class_names": list(VOC_CLASSES[1:])}, out)
    return out


def maps_rate(cfg, checkpoint: Path, mechanism: str, scales, flip: bool, all_classes: bool, n: int,
              repeats: int) -> float:
    """Images/s of multiscale_maps alone on preloaded inputs."""
    c = cfg.cues
    dataset = VOCSegmentation(cfg.data.root, cfg.data.train_split)
    device = torch.device(cfg.run.device)
    model, _ = load_classifier(checkpoint, 20, None, device)
    items = ExtractItems(dataset, range(min(n, len(dataset))), scales, None, cfg.data.mean, cfg.data.std, all_classes)
    samples = [items[i] for i in range(len(items))]
    batches = [samples[i:i + c.batch_size] for i in range(0, len(samples), c.batch_size)]
    best = float("inf")
    with AttentionExtractor(model, layers=(c.layer,), mechanism=mechanism) as extractor:
        multiscale_maps(extractor, c.layer, batches[0], flip, c.scale_average, device)  # warm-up
        for _ in range(repeats):
            t0 = time.perf_counter()
            for b in batches:
                multiscale_maps(extractor, c.layer, b, flip, c.scale_average, device)
            best = min(best, time.perf_counter() - t0)
    return len(samples) / best


def end_to_end_rate(cfg, checkpoint: Path, mechanism: str, n: int, repeats: int) -> float:
    best = 0.0
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as d:
            rec = extract_maps(cfg, checkpoint, mechanism, Path(d) / "out", progress=False, limit=n)
            best = max(best, rec["images_per_second"])
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=Path("/tmp/bi_small"), help="built-in dataset (built if missing)")
    p.add_argument("--checkpoint", type=Path, default=None, help="classifier checkpoint (default: random ResNet-18)")
    p.add_argument("--images", type=int, default=24, help="images per measurement")
    p.add_argument("--mechanism", action="append", default=[], help="mechanisms (default gradcam gradcampp channel)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers for the end-to-end runs")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    mechanisms = args.mechanism or ["gradcam", "gradcampp", "channel"]
    if not (args.root / "builtin.json").is_file():
        from data.builtin import build_builtin_dataset

        build_builtin_dataset(args.root, seed=0, size="small", progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = _checkpoint(args.checkpoint, Path(tmp))
        print(f"ResNet-18 on {args.root} (train split, first {args.images} images), device {args.device}, "
              f"{torch.get_num_threads()} threads (OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}), "
              f"batch {args.batch_size}, "
              f"loader workers {args.workers}")
        print(f"{'mechanism':<10} {'setting':<14} {'classes':<8} {'maps img/s':>10} {'end-to-end img/s':>17}")
        rows = {}
        for mech in mechanisms:
            for name, (scales, flip) in SETTINGS.items():
                for classes in ("gt", "all"):
                    cfg = load_config(None, [f"data.root={args.root}", f"run.device={args.device}",
                                             f"data.num_workers={args.workers}", f"cues.scales={scales}",
                                             f"cues.flip={'true' if flip else 'false'}", f"cues.classes={classes}",
                                             f"cues.batch_size={args.batch_size}"])
                    m = maps_rate(cfg, ckpt, mech, scales, flip, classes == "all", args.images, args.repeats)
                    e = end_to_end_rate(cfg, ckpt, mech, args.images, args.repeats)
                    rows[mech, name, classes] = (m, e)
                    print(f"{mech:<10} {name:<14} {classes:<8} {m:>10.1f} {e:>17.1f}", flush=True)
    mech = mechanisms[0]
    one, four = rows[mech, "1 scale", "gt"], rows[mech, "4 scales+flip", "gt"]
    gt, every = rows[mech, "4 scales+flip", "gt"], rows[mech, "4 scales+flip", "all"]
    print(f"summary ({mech}, ResNet-18, {args.device}): end-to-end {one[1]:.1f} img/s at 1 scale, "
          f"{four[1]:.1f} img/s at "
          f"4 scales+flip; maps of GT classes {gt[0]:.1f} vs all 20 classes {every[0]:.1f} img/s "
          f"({100 * (1 - every[0] / gt[0]):.0f}% slower; end-to-end {gt[1]:.1f} vs {every[1]:.1f} with storage)")


if __name__ == "__main__":
    main()
