"""``data stats``: known answers on the hand-built tiny VOC of conftest (rectangles of known size).

make_tiny_voc draws object j of image k (h = 40 + 4k, w = 56 - 2k) as rows 2+6j .. 15+6j and
columns 3+8j .. 18+8j (14 x 16 = 224 px), then a void row under it; a later rectangle covers an
8 x 8 corner of the one before and 8 px of its void row. So in train:

    image 0 (40x56 = 2240 px): person 224;                     void 16
    image 1 (44x54 = 2376 px): aeroplane 224-64 = 160, car 224;  void 8 + 16
    image 2 (48x52 = 2496 px): dog 160, cat 160, person 224;     void 8 + 8 + 16
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from sharpen_core.errors import DatasetError
from data.io import read_mask, write_mask
from data.stats import connected_objects, dataset_stats, format_stats, image_stats, instance_objects
from pipeline.cli import main

TRAIN_PIXELS = 2240 + 2376 + 2496
TRAIN_VOID = 16 + 24 + 32
TRAIN_FG = 224 + 384 + 544


def test_train_split_known_answers(tiny_voc):
    s = dataset_stats(tiny_voc, "train", progress=False)
    assert s["object_source"] == "connected components" and s["images_with_instance_masks"] == 0
    assert s["images"] == 3 and s["objects"] == 6
    assert s["objects_per_image"] == {"mean": 2.0, "histogram": {"1": 1, "2": 1, "3": 1}}
    assert s["classes_per_image"]["mean"] == 2.0
    assert s["images_with_2plus_classes"] == pytest.approx(2 / 3)
    assert s["foreground_fraction"] == pytest.approx(1152 / 7040)  # of non-void pixels
    assert s["foreground_fraction_of_all_pixels"] == pytest.approx(TRAIN_FG / TRAIN_PIXELS)
    assert s["void_fraction"] == pytest.approx(TRAIN_VOID / TRAIN_PIXELS)
    areas = sorted([224 / 2240, 160 / 2376, 224 / 2376, 160 / 2496, 160 / 2496, 224 / 2496])
    assert s["object_area"]["mean"] == pytest.approx(sum(areas) / 6)
    assert s["object_area"]["quantiles"]["0.5"] == pytest.approx((areas[2] + areas[3]) / 2)
    bins = {k: v["fraction"] for k, v in s["object_area"]["bins"].items()}
    assert bins == {"small": 0.0, "medium": 1.0, "large": 0.0}  # 6.4 % .. 10 % of the image
    assert s["classes"]["person"] == {"images": 2, "objects": 2, "pixel_fraction": pytest.approx(448 / TRAIN_PIXELS)}
    assert s["classes"]["aeroplane"]["pixel_fraction"] == pytest.approx(160 / TRAIN_PIXELS)
    assert set(s["classes"]) == {"aeroplane", "car", "cat", "dog", "person"}
    assert s["co_occurrence"] == [
        {"classes": ["aeroplane", "car"], "images": 1}, {"classes": ["cat", "dog"], "images": 1},
        {"classes": ["cat", "person"], "images": 1}, {"classes": ["dog", "person"], "images": 1},
    ]


def test_val_split_and_instance_masks(tiny_voc):
    """val: boat 224 of 52x50; horse 160 + person 224 of 56x48. With SegmentationObject masks the
    objects come from them (here: the person split into two instances of 112 px)."""
    s = dataset_stats(tiny_voc, "val", progress=False)
    assert s["objects"] == 3 and s["foreground_fraction"] == pytest.approx(608 / (2600 + 2688 - 40))
    objects = tiny_voc / "SegmentationObject"
    for image_id, (h, w) in (("2007_000004", (52, 50)), ("2007_000005", (56, 48))):
        mask = read_mask(tiny_voc / "SegmentationClass" / f"{image_id}.png")
        inst = np.where(mask == 255, 255, (mask > 0).astype(np.uint8))
        if image_id == "2007_000005":  # horse = 1; person (rows 8..21, cols 11..26) split in two: 2 and 3
            inst[mask == 13] = 1
            inst[mask == 15] = 2
            inst[(mask == 15) & (np.arange(w)[None, :] >= 19)] = 3
        write_mask(objects / f"{image_id}.png", inst)
    s = dataset_stats(tiny_voc, "val", progress=False)
    assert s["object_source"] == "SegmentationObject" and s["objects"] == 4
    assert s["classes"]["person"]["objects"] == 2 and s["objects_per_image"]["histogram"] == {"1": 1, "3": 1}
    assert sorted(round(a * 2688) for c, a in image_stats(mask, inst)["objects"]) == [112, 112, 160]
    text = format_stats(s)
    assert "instance masks (SegmentationObject)" in text and "horse + person" in text


def test_components_merge_touching_and_split_occluded_instances():
    mask = np.zeros((6, 10), dtype=np.uint8)
    mask[1:3, 0:4] = 12  # two dogs side by side: one component
    mask[1:3, 4:8] = 12
    mask[4, 0:3] = 8  # a cat cut in two by a pole
    mask[4, 5:9] = 8
    mask[5, 9] = 255
    assert sorted(connected_objects(mask)) == [(8, 3), (8, 4), (12, 16)]
    inst = np.zeros_like(mask)
    inst[1:3, 0:4], inst[1:3, 4:8], inst[4, 0:3], inst[4, 5:9], inst[5, 9] = 1, 2, 3, 3, 255
    assert sorted(instance_objects(mask, inst)) == [(8, 7), (12, 8), (12, 8)]
    diagonal = np.zeros((3, 3), dtype=np.uint8)
    diagonal[0, 0] = diagonal[1, 1] = 15  # 8-connected: one object
    assert connected_objects(diagonal) == [(15, 2)]


def test_cli_table_json_and_errors(tiny_voc, tmp_path, capsys):
    out = tmp_path / "stats.json"
    assert main(["data", "stats", "--root", str(tiny_voc.parent.parent), "--split", "train", "--json", str(out),
                 "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "connected components" in printed and "foreground (of non-void)" in printed
    assert f"{100 * 1152 / 7040:.1f} %" in printed
    assert json.loads(out.read_text())["objects"] == 6
    assert main(["data", "stats", "--root", str(tiny_voc), "--split", "test", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "SegmentationClass" in err and "no class mask" in err
    assert len(err.splitlines()) == 1
    with pytest.raises(DatasetError, match="split list"):
        dataset_stats(tiny_voc, "train_aug", progress=False)


def test_readme_table_script_writes_known_numbers_between_markers(tiny_voc, tmp_path):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "update_readme_stats", Path(__file__).resolve().parent.parent / "scripts" / "update_readme_stats.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- dataset-stats:begin -->\nold\n<!-- dataset-stats:end -->\noutro\n")
    train_json = tmp_path / "train.json"
    assert main(["data", "stats", "--root", str(tiny_voc), "--json", str(train_json), "--quiet"]) == 0
    assert script.main(["--root", str(tiny_voc), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("intro\n<!-- dataset-stats:begin -->\n| statistic | built-in train | built-in val |")
    assert "old" not in text and text.endswith("<!-- dataset-stats:end -->\noutro\n")
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert rows["objects per image"].startswith("| objects per image | 2.00 | 1.50 | 2.40 train")
    assert f"| {100 * 1152 / 7040:.1f} % | {100 * 608 / 5248:.1f} % | 26.6 % trainval [2] |" in rows[
        "foreground (of non-void pixels)"]
    assert "devkit_doc.html" in text and "dataset-ninja/pascal-voc-2012" in text
    readme.write_text("<!-- dataset-stats:begin -->\n<!-- dataset-stats:end -->\n")
    assert script.main(["--json", str(train_json), "--readme", str(readme)]) == 0
    assert "| statistic | built-in train | VOC 2012 segmentation |" in readme.read_text()
