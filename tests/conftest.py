"""Shared fixtures: a tiny hand-made dataset in VOC layout, with known classes per image."""

from __future__ import annotations

import os

# One torch thread in the tests and in every process they start (set before torch is imported; a user's
# own OMP_NUM_THREADS is kept): the workloads are tiny, and processes side by side with two spinning
# OpenMP threads each on a 2-core machine slow each other many times over.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from pathlib import Path

import numpy as np
import pytest

from data.io import write_image, write_mask

# id -> (split, classes drawn as rectangles); sizes vary so size checks mean something.
TINY = {
    "2007_000001": ("train", [15]),
    "2007_000002": ("train", [1, 7]),
    "2007_000003": ("train", [12, 8, 15]),
    "2007_000004": ("val", [4]),
    "2007_000005": ("val", [13, 15]),
    "2008_000001": ("test", [10]),
    "2008_000002": ("test", [17, 3]),
}


def make_tiny_voc(root: Path, with_masks: bool = True, with_annotations: bool = False,
                  devkit: bool = True) -> Path:
    """Write TINY in VOC layout under ``root`` (as ``root/VOCdevkit/VOC2012`` when ``devkit``)."""
    voc = root / "VOCdevkit" / "VOC2012" if devkit else root
    rng = np.random.default_rng(0)
    lists: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for k, (image_id, (split, classes)) in enumerate(TINY.items()):
        h, w = 40 + 4 * k, 56 - 2 * k
        image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        mask = np.zeros((h, w), dtype=np.uint8)
        for j, c in enumerate(classes):
            top, left = 2 + 6 * j, 3 + 8 * j
            mask[top:top + 14, left:left + 16] = c
            mask[top + 14, left:left + 16] = 255  # a void border row
        write_image(voc / "JPEGImages" / f"{image_id}.jpg", image)
        if with_masks and split != "test":
            write_mask(voc / "SegmentationClass" / f"{image_id}.png", mask)
        if with_annotations:
            from data.classes import VOC_CLASSES

            objs = "".join(f"<object><name>{VOC_CLASSES[c]}</name><difficult>0</difficult></object>"
                           for c in classes)
            (voc / "Annotations").mkdir(parents=True, exist_ok=True)
            (voc / "Annotations" / f"{image_id}.xml").write_text(
                f"<annotation><filename>{image_id}.jpg</filename>{objs}</annotation>")
        lists[split].append(image_id)
    lists["trainval"] = lists["train"] + lists["val"]
    sets = voc / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True, exist_ok=True)
    for split, ids in lists.items():
        (sets / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return voc


@pytest.fixture
def tiny_voc(tmp_path: Path) -> Path:
    """The devkit root (``tmp/VOCdevkit``'s parent) of a fresh tiny VOC dataset; returns the VOC2012 folder."""
    return make_tiny_voc(tmp_path)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of small tensors: as fast, and far less sensitive to a busy 2-core machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def builtin_small(tmp_path_factory) -> tuple[Path, dict]:
    """The small built-in dataset (seed 0), built once per test session, and its build summary.

    Tests only read it; a test that changes a dataset copies it first.
    """
    from data.builtin import build_builtin_dataset

    root = tmp_path_factory.mktemp("builtin") / "data"
    summary = build_builtin_dataset(root, seed=0, size="small", workers=2, progress=False)
    return root, summary


@pytest.fixture(scope="session")
def quick_run(builtin_small, tmp_path_factory) -> tuple[Path, Path, float]:
    """``sharpen run`` on configs/quick.toml over the session's built-in dataset, done once per session:
    (run folder, dataset root, seconds). Tests compare against it and copy it; none changes it."""
    import time

    from pipeline.cli import main
    from runs import run_args

    data_root, run_dir = builtin_small[0], tmp_path_factory.mktemp("quick") / "run"
    t0 = time.perf_counter()
    assert main(run_args(run_dir, data_root)) == 0
    return run_dir, data_root, time.perf_counter() - t0


@pytest.fixture(scope="session", autouse=True)
def sharpen_cache(tmp_path_factory) -> Path:
    """A per-session cache for the built-in pretrained weights (sharpen_core/pretrained.py), so no test
    reads or writes this machine's ``~/.cache/sharpen-focus``; a user's own SHARPEN_CACHE is left alone
    only outside the tests."""
    folder = tmp_path_factory.mktemp("sharpen-cache")
    old = os.environ.get("SHARPEN_CACHE")
    os.environ["SHARPEN_CACHE"] = str(folder)
    yield folder
    if old is None:
        os.environ.pop("SHARPEN_CACHE", None)
    else:
        os.environ["SHARPEN_CACHE"] = old
