"""The SEC constrain loss with the training-time CRF over all 21 labels (SEC, floored at 1e-4)
against the CRF over the present labels only (docs/method.md §4-5), on random scores.

Random logits (B, 21, 41, 41) ~ N(0, std²) and random uint8 images shrunk by s = 12, each image with
1-3 random foreground classes; prints the mean constrain loss of each mode as a table.
``python benchmarks/constrain_labels.py [--images 8] [--seed 0] [--logit-std 1]``
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from segment.crf import CRFParams, dense_crf
from segment.losses import constrain_loss, floor_crf_probs, sec_probabilities
from segment.train import crf_train_labels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--logit-std", type=float, default=1.0, help="standard deviation of the random logits")
    args = ap.parse_args()
    g = torch.Generator().manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    n, grid = args.images, 41
    probs = sec_probabilities(args.logit_std * torch.randn(n, 21, grid, grid, generator=g))
    images = rng.integers(0, 256, size=(n, grid, grid, 3), dtype=np.uint8)
    labels = torch.zeros(n, 21)
    labels[:, 0] = 1
    for i in range(n):
        labels[i, rng.choice(np.arange(1, 21), size=rng.integers(1, 4), replace=False)] = 1
    print("| crf_train_labels | constrain loss (mean of images) |")
    print("|---|---:|")
    for mode in ("all", "present"):
        q = torch.from_numpy(np.stack([dense_crf(images[i], probs[i].numpy(), lab, 12.0, CRFParams())
                                       for i, lab in enumerate(crf_train_labels(labels, mode))]))
        if mode == "all":
            q = floor_crf_probs(q)
        print(f"| {mode} | {constrain_loss(probs, q).item():.3f} |")


if __name__ == "__main__":
    main()
