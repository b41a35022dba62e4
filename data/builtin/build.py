"""Building the built-in dataset on disk: the VOC-layout files, the image lists and ``builtin.json``.

Also the checks around a build: reuse of a complete build, refusal of a foreign folder or of a
build by another generator version.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from sharpen_core.errors import DatasetError, UsageError
from sharpen_core.io import write_bytes_atomic, write_json_atomic

from ..classes import IGNORE_INDEX, VOC_CLASSES
from ..io import write_image, write_mask
from .bodies import BUILTIN_CLASS_IDS, BUILTIN_CLASS_NAMES, class_geometry
from .compose import SPLIT_CODES, render_image
from .scenes import SCENES

GENERATOR_VERSION = 2
MANIFEST_NAME = "builtin.json"
ID_PREFIX = "bi_"

BUILTIN_SIZES: dict[str, dict[str, int]] = {
    "small": {"train": 160, "val": 48, "test": 48},
    "medium": {"train": 800, "val": 320, "test": 320},  # the demo's: default's first 800 train images
    "default": {"train": 1600, "val": 320, "test": 320},
    "pretrain": {"train": 4800, "val": 320, "test": 0},
    "pretrain-small": {"train": 256, "val": 32, "test": 0},
}
"""Images per split for each ``size``. An image depends on (seed, split, index, stream) alone, so a
smaller size of the same stream holds the first images of each split of a larger one."""

PRETRAIN_SIZES: tuple[str, ...] = ("pretrain", "pretrain-small")
"""Sizes of the pretraining sets (classify/pretrain.py): rendered from stream family 1, so none of
their images is a train, val or test image of any built-in dataset (data/builtin/compose.py)."""


def stream_of(size: str) -> int:
    """The stream family of ``size``: 1 for a pretraining set, else 0."""
    return 1 if size in PRETRAIN_SIZES else 0


def image_id(split: str, index: int, stream: int = 0) -> str:
    return f"{ID_PREFIX}{'p' * stream}{split}_{index:06d}"


def _render_and_write(task: tuple[str, int, str, int] | tuple[str, int, str, int, int]) -> dict[str, Any]:
    """Worker: render one sample, write its files, return its statistics."""
    out, seed, split, index, *rest = task
    stream = rest[0] if rest else 0
    root = Path(out)
    sample = render_image(seed, split, index, stream)
    iid = image_id(split, index, stream)
    write_image(root / "JPEGImages" / f"{iid}.jpg", sample.image)
    if split == "test":
        write_mask(root / "SegmentationClassTest" / f"{iid}.png", sample.mask)
    else:
        write_mask(root / "SegmentationClass" / f"{iid}.png", sample.mask)
        write_mask(root / "SegmentationObject" / f"{iid}.png", sample.instances)
    present = sorted({int(c) for c in np.unique(sample.mask)} - {0, IGNORE_INDEX})
    return {
        "id": iid, "split": split, "classes": present, "objects": len(sample.classes),
        "size": list(sample.image.shape[:2]), "scene": sample.scene, "part_fractions": sample.part_fractions,
    }


def _read_manifest(path: Path) -> dict[str, Any] | None:
    """The parsed ``builtin.json``, or None when missing or unreadable."""
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def _is_complete(out: Path, manifest: dict[str, Any] | None, seed: int, size: str) -> bool:
    """Whether ``out`` holds a finished build of this version, seed and size (a cheap check: the
    manifest, the four lists and the number of images; not the content of every file)."""
    if not manifest or (manifest.get("version"), manifest.get("seed"), manifest.get("size")) != (
            GENERATOR_VERSION, seed, size):
        return False
    sets = out / "ImageSets" / "Segmentation"
    lists_ok = all((sets / f"{s}.txt").is_file() for s in ("train", "val", "trainval", "test"))
    if not lists_ok or not (out / "JPEGImages").is_dir():
        return False
    with os.scandir(out / "JPEGImages") as it:
        images = sum(e.name.startswith(ID_PREFIX) and e.name.endswith(".jpg") for e in it)
    return images == sum(BUILTIN_SIZES[size].values())


def check_builtin_version(root: str | Path) -> None:
    """Refuse a built-in dataset made by another generator version: its images are not the ones this
    code generates (a folder without a readable ``builtin.json`` is no finished built-in build: passes)."""
    root = Path(root)
    manifest = _read_manifest(root / MANIFEST_NAME)
    if manifest is None or manifest.get("version") == GENERATOR_VERSION:
        return
    size, seed = manifest.get("size", "default"), manifest.get("seed", 0)
    raise DatasetError(root / MANIFEST_NAME,
                       f"built-in dataset made by generator version {manifest.get('version')}, but this code's "
                       f"generator is version {GENERATOR_VERSION}; rebuild it with `sharpen data build --out {root} "
                       f"--size {size} --seed {seed}` (or `sharpen run --from data` with data.builtin = true)")


def _check_target(out: Path) -> None:
    """Refuse to write into a folder that holds some other dataset (images not named ``bi_*``)."""
    if out.exists() and not out.is_dir():
        raise DatasetError(out, "not a folder; expected a folder to build the built-in dataset in")
    images = out / "JPEGImages"
    if images.is_dir():
        with os.scandir(images) as it:
            for entry in it:
                if entry.name.endswith(".jpg") and not entry.name.startswith(ID_PREFIX):
                    raise DatasetError(out, f"holds another dataset ({entry.name} in JPEGImages/); "
                                            "expected an empty folder or a built-in dataset to rebuild")


def _remove_stale(out: Path, keep: set[str]) -> int:
    """Delete built-in files (``bi_*``) of an earlier build that this build did not write."""
    removed = 0
    for folder, suffix in (("JPEGImages", ".jpg"), ("SegmentationClass", ".png"),
                           ("SegmentationObject", ".png"), ("SegmentationClassTest", ".png")):
        d = out / folder
        if not d.is_dir():
            continue
        for p in d.iterdir():
            stale_tmp = p.name.startswith("." + ID_PREFIX) and p.name.endswith(".tmp")
            if stale_tmp or (p.name.startswith(ID_PREFIX) and p.suffix == suffix and p.stem not in keep):
                p.unlink()
                removed += 1
    return removed


def _pool_context() -> mp.context.BaseContext:
    """``fork`` where the OS has it (no re-import of ``__main__``, which breaks spawn for code run
    from stdin), else ``spawn``. Workers only touch numpy, PIL and their own files."""
    return mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")


def _run_tasks(tasks: list[tuple[str, int, str, int]], workers: int, progress: bool) -> list[dict[str, Any]]:
    """Render all tasks, in-process (``workers == 1``) or on a process pool, in task order."""
    pool = _pool_context().Pool(workers) if workers > 1 else None
    bar = None
    if progress:
        try:
            from tqdm import tqdm

            bar = tqdm(total=len(tasks), desc="built-in dataset", unit="img", dynamic_ncols=True)
        except ImportError:
            bar = None
    results: list[dict[str, Any]] = []
    try:
        if pool is None:
            iterator: Iterable[dict[str, Any]] = map(_render_and_write, tasks)
        else:
            iterator = pool.imap(_render_and_write, tasks, chunksize=max(1, min(32, len(tasks) // (workers * 8))))
        for r in iterator:
            results.append(r)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        if pool is not None:
            pool.terminate()
            pool.join()
    return results


def _summarise(results: list[dict[str, Any]], seed: int, size: str, seconds: float, workers: int) -> dict[str, Any]:
    """The build summary (also the content of builtin.json)."""
    splits = list(SPLIT_CODES)
    by_split = {s: [r for r in results if r["split"] == s] for s in splits}
    class_counts = {s: {VOC_CLASSES[c]: sum(c in r["classes"] for r in rs) for c in BUILTIN_CLASS_IDS}
                    for s, rs in by_split.items()}
    multi = {s: round(sum(len(r["classes"]) >= 2 for r in rs) / max(len(rs), 1), 4) for s, rs in by_split.items()}
    multi["all"] = round(sum(len(r["classes"]) >= 2 for r in results) / max(len(results), 1), 4)
    objects = [r["objects"] for r in results]
    parts = [f for r in results for f in r["part_fractions"]]
    sides = [s for r in results for s in r["size"]]
    return {
        "generator": "sharpen-focus built-in synthetic WSSS dataset (VOC layout)",
        "version": GENERATOR_VERSION,
        "seed": seed,
        "size": size,
        "class_ids": list(BUILTIN_CLASS_IDS),
        "class_names": list(BUILTIN_CLASS_NAMES),
        "splits": {s: len(rs) for s, rs in by_split.items()},
        "counts": {**{s: len(rs) for s, rs in by_split.items()},
                   "trainval": len(by_split["train"]) + len(by_split["val"])},
        "class_image_counts": class_counts,
        "multi_class_fraction": multi,
        "objects_per_image": {"mean": round(float(np.mean(objects)), 3),
                              "histogram": {str(k): objects.count(k) for k in range(1, 5)}},
        "part_fraction_mean": round(float(np.mean(parts)), 4),
        "scene_counts": {sc: sum(r["scene"] == sc for r in results) for sc in SCENES},
        "image_side_range": [int(min(sides)), int(max(sides))],
        "test_masks": "SegmentationClassTest",
        "seconds": round(seconds, 2),
        "workers": workers,
    }


def _default_workers() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    return max(1, min(2, cpus))


def build_builtin_dataset(out: str | Path, seed: int = 0, size: str = "default", workers: int | None = None,
                          progress: bool = True) -> dict[str, Any]:
    """Generate the built-in dataset under ``out`` in VOC 2012 layout and return its summary.

    ``size`` is a key of BUILTIN_SIZES. A complete build (``builtin.json``) of the same generator
    version, seed and size is reused (the summary gets ``reused: True``); anything else there (a
    partial or different build, or one by an older generator version: ``replaced_version``) is
    regenerated, and files of an earlier build that this one does not write are removed.
    ``workers=1`` renders in-process; the default uses up to 2 processes.
    The files are byte-identical for a seed and size whatever ``workers`` is.
    """
    if size not in BUILTIN_SIZES:
        raise UsageError(f"unknown size {size!r}; expected one of: {', '.join(BUILTIN_SIZES)}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UsageError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    out = Path(out)
    manifest = out / MANIFEST_NAME
    previous = _read_manifest(manifest) if manifest.is_file() else None
    if _is_complete(out, previous, seed, size):
        return {**previous, "reused": True}
    _check_target(out)
    replaced = previous.get("version") if previous else None
    if progress and replaced is not None and replaced != GENERATOR_VERSION:
        print(f"built-in dataset at {out} was made by generator version {replaced}; "
              f"rebuilding it with version {GENERATOR_VERSION}")
    if manifest.exists():
        manifest.unlink()  # no stale marker while files change
    workers = _default_workers() if workers is None else max(1, int(workers))
    stream = stream_of(size)
    tasks = [(str(out), seed, split, i, stream) for split in SPLIT_CODES for i in range(BUILTIN_SIZES[size][split])]
    for folder in ("JPEGImages", "SegmentationClass", "SegmentationObject", "SegmentationClassTest"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for class_id in BUILTIN_CLASS_IDS:
        class_geometry(class_id)  # measured once here; forked workers inherit the cache
    results = _run_tasks(tasks, workers, progress)
    ids = {s: [r["id"] for r in results if r["split"] == s] for s in SPLIT_CODES}
    ids["trainval"] = ids["train"] + ids["val"]
    for split in ("train", "val", "trainval", "test"):
        write_bytes_atomic(out / "ImageSets" / "Segmentation" / f"{split}.txt", ("\n".join(ids[split]) + "\n").encode())
    _remove_stale(out, {r["id"] for r in results})
    summary = _summarise(results, seed, size, time.perf_counter() - start, workers)
    write_json_atomic(manifest, summary)  # last: marks the build complete
    return {**summary, "reused": False, "replaced_version": replaced}
