"""The built-in synthetic dataset: VOC layout, determinism, reuse, and the statistics it promises.

Everything is measured from the written files (through the VOC reader where it applies), not
from generator internals. One small build (``builtin_small`` in conftest.py) is shared by the session.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from data.builtin import (
    BUILTIN_CLASS_IDS,
    CLASS_SCENE,
    BUILTIN_SIZES,
    GENERATOR_VERSION,
    CLASS_PARTS,
    build_builtin_dataset,
    check_builtin_version,
    class_geometry,
    draw_object,
    void_band,
)
from data.builtin.build import _is_complete, _render_and_write
from data.classes import IGNORE_INDEX, VOC_CLASSES
from sharpen_core.errors import DatasetError
from data.io import read_image, read_mask
from data.stats import dataset_stats
from data.voc import VOCSegmentation

SMALL = BUILTIN_SIZES["small"]
ALLOWED_MASK_VALUES = {0, IGNORE_INDEX, *BUILTIN_CLASS_IDS}


def file_digests(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``, by relative path (builtin.json left out: it holds timings)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "builtin.json"
    }


@pytest.fixture(scope="module")
def built(builtin_small) -> tuple[Path, dict]:
    """The session's small build (seed 0, 2 workers) and its summary."""
    return builtin_small


@pytest.fixture(scope="module")
def samples(built) -> dict[str, list[dict]]:
    """Every sample of train and val, read back through the VOC reader."""
    root, _ = built
    return {split: [s for s in VOCSegmentation(root, split)] for split in ("train", "val")}


def test_summary_and_manifest(built):
    root, summary = built
    assert summary["reused"] is False
    assert summary["splits"] == SMALL
    assert summary["counts"]["trainval"] == SMALL["train"] + SMALL["val"]
    assert 0 < summary["seconds"] < 30
    manifest = json.loads((root / "builtin.json").read_text())
    assert (manifest["version"], manifest["seed"], manifest["size"]) == (GENERATOR_VERSION, 0, "small")
    assert manifest["class_ids"] == list(BUILTIN_CLASS_IDS)
    assert manifest["class_names"] == [VOC_CLASSES[c] for c in BUILTIN_CLASS_IDS]
    assert manifest["class_names"] == ["aeroplane", "bird", "boat", "bus", "car", "cat", "cow", "dog", "horse",
                                       "person", "sheep", "train"]
    assert manifest["counts"] == summary["counts"]
    assert set(manifest["class_image_counts"]["train"]) == set(manifest["class_names"])


def test_layout_and_lists(built):
    root, _ = built
    sets = root / "ImageSets" / "Segmentation"
    lists = {s: (sets / f"{s}.txt").read_text().split() for s in ("train", "val", "trainval", "test")}
    for split, n in SMALL.items():
        assert lists[split] == [f"bi_{split}_{i:06d}" for i in range(n)]
    assert lists["trainval"] == lists["train"] + lists["val"]
    jpgs = {p.stem for p in (root / "JPEGImages").glob("*.jpg")}
    assert jpgs == set(lists["trainval"]) | set(lists["test"])
    assert {p.stem for p in (root / "SegmentationClass").glob("*.png")} == set(lists["trainval"])
    assert {p.stem for p in (root / "SegmentationObject").glob("*.png")} == set(lists["trainval"])
    assert {p.stem for p in (root / "SegmentationClassTest").glob("*.png")} == set(lists["test"])
    leftovers = [p for p in root.rglob(".*") if p.is_file()]
    assert not leftovers, f"temporary files left behind: {leftovers[:3]}"


def test_reader_reads_every_split(built, samples):
    root, _ = built
    assert [len(samples[s]) for s in ("train", "val")] == [SMALL["train"], SMALL["val"]]
    for split in ("train", "val"):  # in the order of the split's list
        assert [s["id"] for s in samples[split]] == [f"bi_{split}_{i:06d}" for i in range(SMALL[split])]
    assert len(VOCSegmentation(root, "trainval")) == SMALL["train"] + SMALL["val"]
    sample = samples["train"][0]
    assert sample["id"] == "bi_train_000000"
    assert sample["image"].dtype == np.uint8 and sample["image"].ndim == 3
    assert sample["mask"].shape == sample["image"].shape[:2]
    assert sample["label"].shape == (20,)
    test = VOCSegmentation(root, "test")
    assert len(test) == SMALL["test"] and not test.masks
    for k in (0, len(test) - 1):
        t = test[k]
        assert "mask" not in t and "label" not in t
        assert t["image"].shape[2] == 3


def test_labels_match_mask_classes(samples):
    assert {split: len(items) for split, items in samples.items()} == {"train": SMALL["train"], "val": SMALL["val"]}
    for split, items in samples.items():
        for s in items:
            in_mask = {int(v) for v in np.unique(s["mask"])} - {0, IGNORE_INDEX}
            from_label = {int(i) + 1 for i in np.flatnonzero(s["label"])}
            assert from_label == in_mask and 1 <= len(in_mask) <= 4, s["id"]


def test_mask_values_and_void_band(built, samples):
    root, _ = built
    masks = [s["mask"] for items in samples.values() for s in items]
    masks += [read_mask(p) for p in sorted((root / "SegmentationClassTest").glob("*.png"))]
    assert len(masks) == sum(SMALL.values())  # train, val and the held-back test masks
    for m in masks:
        values = {int(v) for v in np.unique(m)}
        assert values <= ALLOWED_MASK_VALUES
        assert 0 in values and IGNORE_INDEX in values  # every image has background and object borders
        # void separates every object from the background and from other classes: no two
        # different non-void labels touch (4-neighbourhood)
        for a, b in ((m[:, 1:], m[:, :-1]), (m[1:, :], m[:-1, :])):
            touching = (a != b) & (a != IGNORE_INDEX) & (b != IGNORE_INDEX)
            assert not touching.any()
    void = np.mean([np.mean(m == IGNORE_INDEX) for m in masks])
    assert 0.01 < void < 0.2  # a thin band, not whole objects


def test_image_sizes(built):
    root, _ = built
    images = sorted((root / "JPEGImages").glob("*.jpg"))
    assert len(images) == sum(SMALL.values())
    sizes = set()
    for p in images:
        h, w = read_image(p).shape[:2]
        assert 96 <= h <= 160 and 96 <= w <= 160, p.name
        sizes.add((h, w))
    assert len(sizes) > 10  # sizes vary


def test_object_counts(built):
    root, _ = built
    counts = []
    for p in sorted((root / "SegmentationObject").glob("*.png")):
        ids = {int(v) for v in np.unique(read_mask(p, num_classes=256))} - {0, IGNORE_INDEX}
        assert ids == set(range(1, len(ids) + 1)), p.name  # instances numbered 1..n
        counts.append(len(ids))
    assert len(counts) == SMALL["train"] + SMALL["val"]
    assert min(counts) >= 1 and max(counts) <= 4
    assert len(set(counts)) == 4  # 1, 2, 3 and 4 objects all occur


def test_class_statistics(samples):
    train = samples["train"]
    multi = np.mean([s["label"].sum() >= 2 for s in train])
    assert multi >= 0.4
    present = {int(i) + 1 for s in train for i in np.flatnonzero(s["label"])}
    assert present == set(BUILTIN_CLASS_IDS)  # all 12 classes, and only those
    per_class = np.sum([s["label"] for s in train], axis=0)[np.asarray(BUILTIN_CLASS_IDS) - 1]
    assert per_class.min() >= 0.3 * per_class.mean()  # roughly balanced


def test_context_correlates_with_class(samples):
    """Background pixels of boat images are bluer than those of cow images (water vs grass)."""

    def background_colour(class_id: int, other: int) -> np.ndarray:
        means = []
        for s in samples["train"] + samples["val"]:
            if s["label"][class_id - 1] and not s["label"][other - 1]:
                means.append(s["image"][s["mask"] == 0].astype(np.float64).mean(axis=0))
        assert len(means) >= 5
        return np.mean(means, axis=0)

    boat, cow = background_colour(4, 10), background_colour(10, 4)
    blueness = lambda c: c[2] - (c[0] + c[1]) / 2  # noqa: E731
    greenness = lambda c: c[1] - (c[0] + c[2]) / 2  # noqa: E731
    assert blueness(boat) > blueness(cow) + 20
    assert greenness(cow) > greenness(boat) + 10


def test_rerun_skips_and_keeps_files(built):
    root, _ = built
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    assert len(stamps) > 2 * sum(SMALL.values())  # images, class and instance masks, lists, manifest
    start = time.perf_counter()
    again = build_builtin_dataset(root, seed=0, size="small", workers=2, progress=False)
    assert time.perf_counter() - start < 1.0
    assert again["reused"] is True and again["counts"]["train"] == SMALL["train"]
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == stamps


def test_same_seed_same_bytes_other_seed_different(built, tmp_path):
    """Rendering single images again gives the same files for seed 0 and different ones for seed 1."""
    root, _ = built
    for seed in (0, 1):
        out = tmp_path / f"seed{seed}"
        for split, index in (("train", 0), ("train", 5), ("val", 2), ("test", 1)):
            _render_and_write((str(out), seed, split, index))
        written = file_digests(out)
        assert len(written) == 4 * 3 - 1  # a test image has no instance mask
        reference = file_digests(root)
        same = [written[k] == reference[k] for k in written]
        assert all(same) if seed == 0 else not any(same)


def test_partial_folder_is_rebuilt_identically_in_process(built, tmp_path):
    """A folder whose marker does not match its files is regenerated; 1 worker == 2 workers, byte for byte."""
    root, _ = built
    reference = file_digests(root)
    other = tmp_path / "other"
    shutil.copytree(root, other)
    manifest = json.loads((other / "builtin.json").read_text())
    (other / "builtin.json").write_text(json.dumps({**manifest, "seed": 1}))  # a different build ...
    (other / "JPEGImages" / "bi_val_000003.jpg").unlink()  # ... interrupted
    (other / "SegmentationClass" / "bi_train_000007.png").write_bytes(b"half a file")
    (other / "JPEGImages" / "bi_train_999999.jpg").write_bytes(b"from a bigger build")
    rebuilt = build_builtin_dataset(other, seed=0, size="small", workers=1, progress=False)
    assert rebuilt["reused"] is False and rebuilt["seed"] == 0 and rebuilt["workers"] == 1
    assert file_digests(other) == reference  # stale bi_train_999999 removed too
    (other / "builtin.json").unlink()  # no marker: not complete either
    assert not _is_complete(other, None, 0, "small")


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown size"):
        build_builtin_dataset(tmp_path / "x", size="huge")
    with pytest.raises(ValueError, match="seed"):
        build_builtin_dataset(tmp_path / "x", seed=-1, size="small")
    foreign = tmp_path / "voc"
    (foreign / "JPEGImages").mkdir(parents=True)
    shutil.copyfile(Path(__file__), foreign / "JPEGImages" / "2007_000001.jpg")
    with pytest.raises(DatasetError, match="another dataset"):
        build_builtin_dataset(foreign, size="small", progress=False)
    assert not (foreign / "builtin.json").exists()


def test_parts_are_small_and_bodies_large():
    """Each class's discriminative part covers about 8-15 % of its object."""
    for class_id in CLASS_PARTS:
        fractions = []
        for k in range(5):
            obj = draw_object(np.random.default_rng([class_id, k]), class_id, 160, 160, 0.3)
            fractions.append(obj.part.sum() / obj.mask.sum())
        assert 0.06 < np.mean(fractions) < 0.17, VOC_CLASSES[class_id]


def test_void_band_marks_both_sides_of_each_boundary():
    inst = np.zeros((8, 10), dtype=np.int32)
    inst[2:6, 2:5] = 1
    inst[2:6, 5:8] = 2
    band = void_band(inst)
    assert band[2:6, 1].all() and band[2:6, 2].all()  # object/background: one pixel each side
    assert band[3, 4] and band[3, 5]  # between two objects
    assert not band[3, 3] and not band[3, 6]  # object interiors stay labelled
    assert not band[0].any()  # image borders are no boundary


def test_older_generator_version_is_refused_by_readers_and_rebuilt_by_build(built, tmp_path, capsys):
    """A folder whose builtin.json names another generator version: every reader refuses it with a
    message naming the versions and the rebuild command; ``build_builtin_dataset`` rebuilds it."""
    root, _ = built
    old = tmp_path / "old"
    shutil.copytree(root, old)
    manifest = json.loads((old / "builtin.json").read_text())
    (old / "builtin.json").write_text(json.dumps({**manifest, "version": GENERATOR_VERSION - 1}))
    (old / "JPEGImages" / "bi_train_000003.jpg").write_bytes(b"an image of the older generator")
    with pytest.raises(DatasetError, match=f"generator version {GENERATOR_VERSION - 1}.*version "
                                           f"{GENERATOR_VERSION}.*sharpen data build --out") as err:
        VOCSegmentation(old, "train")
    assert err.value.path == old / "builtin.json"
    from data.check import check_dataset

    with pytest.raises(DatasetError, match="generator version"):
        check_dataset(old, progress=False)
    rebuilt = build_builtin_dataset(old, seed=0, size="small", workers=1, progress=True)
    assert "made by generator version" in capsys.readouterr().out
    assert rebuilt["reused"] is False and rebuilt["replaced_version"] == GENERATOR_VERSION - 1
    assert file_digests(old) == file_digests(root)
    check_builtin_version(old)  # this version: passes
    assert len(VOCSegmentation(old, "val")) == SMALL["val"]


def test_object_size_follows_target_area():
    """An object drawn for a target area covers about that fraction of the image when it fits the frame."""
    for class_id in (8, 10, 7):  # upright, quadruped, box: each fits 20 % of a 160x160 image
        areas = [draw_object(np.random.default_rng([class_id, k]), class_id, 160, 160, 0.2).mask.sum() / 160 ** 2
                 for k in range(6)]
        assert 0.17 < np.mean(areas) < 0.23, (VOC_CLASSES[class_id], areas)
    geo = class_geometry(1)  # aeroplane: body and wings within the canvas radius
    assert 0.2 < geo.area < 0.4 and -0.7 < geo.u_min < geo.u_max < 0.7


def test_voc_like_statistics(built):
    """``data stats`` of the small build lands where the generator aims (VOC 2012: about a quarter of
    the non-void pixels are objects, 2.4 objects and 1.5 classes per image): ranges wide enough for
    160 images, narrow enough to catch version 1's 8 % foreground and 4 % objects."""
    root, _ = built
    s = dataset_stats(root, "train", progress=False)
    assert s["object_source"] == "SegmentationObject"
    assert 0.24 < s["foreground_fraction"] < 0.38
    assert 1.8 < s["objects_per_image"]["mean"] < 2.5
    assert 1.35 < s["classes_per_image"]["mean"] < 1.85
    assert s["void_fraction"] < 0.12
    area = s["object_area"]
    assert 0.09 < area["mean"] < 0.2 and 0.07 < area["quantiles"]["0.5"] < 0.18
    assert 0.03 < area["bins"]["large"]["fraction"] < 0.3 and area["bins"]["small"]["fraction"] < 0.3
    # class-correlated context: most of the top co-occurring pairs share a scene (cat + dog indoors, ...)
    top = [[VOC_CLASSES.index(c) for c in p["classes"]] for p in s["co_occurrence"][:5]]
    assert sum(CLASS_SCENE[a] == CLASS_SCENE[b] for a, b in top) >= 3, s["co_occurrence"][:5]


def test_the_datasets_sizes_are_nested():
    """small ⊂ medium ⊂ default split by split: with images rendered from (seed, split, index) alone
    (test_same_seed_same_bytes_other_seed_different), the demo's medium set is default's first images."""
    order = ["small", "medium", "default"]
    for smaller, larger in zip(order, order[1:]):
        for split in ("train", "val", "test"):
            assert BUILTIN_SIZES[smaller][split] <= BUILTIN_SIZES[larger][split]
    assert BUILTIN_SIZES["medium"]["val"] == BUILTIN_SIZES["default"]["val"]
    assert BUILTIN_SIZES["medium"]["test"] == BUILTIN_SIZES["default"]["test"]
