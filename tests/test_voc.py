"""The VOC reader, palette PNG helpers, and every bad input naming its file (also via `sharpen data check`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data.check import check_dataset
from data.classes import VOC_CLASSES, VOC_PALETTE, class_index
from sharpen_core.errors import DatasetError
from data.io import read_mask, write_mask
from data.voc import VOCSegmentation, labels_from_mask, resolve_voc_root
from pipeline.cli import main

from tiny_voc import TINY, make_tiny_voc, tiny_ids


def expected_label(image_id: str) -> np.ndarray:
    label = np.zeros(20, dtype=np.float32)
    label[np.array(TINY[image_id][1]) - 1] = 1
    return label


def test_palette_known_colours():
    assert VOC_PALETTE[0].tolist() == [0, 0, 0]
    assert VOC_PALETTE[1].tolist() == [128, 0, 0]
    assert VOC_PALETTE[2].tolist() == [0, 128, 0]
    assert VOC_PALETTE[3].tolist() == [128, 128, 0]
    assert VOC_PALETTE[15].tolist() == [192, 128, 128]  # person
    assert VOC_PALETTE[255].tolist() == [224, 224, 192]  # void
    assert len(VOC_CLASSES) == 21 and class_index("person") == 15
    with pytest.raises(KeyError, match="unknown class 'unicorn'"):
        class_index("unicorn")


def test_mask_png_round_trip(tmp_path):
    mask = np.array([[0, 1, 20], [255, 15, 0]], dtype=np.uint8)
    write_mask(tmp_path / "m.png", mask)
    with Image.open(tmp_path / "m.png") as im:
        assert im.mode == "P"
        assert im.getpalette()[3:6] == [128, 0, 0]
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png"), mask)
    assert [p.name for p in tmp_path.iterdir()] == ["m.png"]  # no temporary file left behind


@pytest.mark.parametrize("level", ["parent", "devkit", "voc2012"])
def test_root_may_be_any_level(tmp_path, level):
    voc = make_tiny_voc(tmp_path)
    root = {"parent": tmp_path, "devkit": tmp_path / "VOCdevkit", "voc2012": voc}[level]
    assert resolve_voc_root(root) == voc
    assert len(VOCSegmentation(root, "train")) == 3


def test_samples_have_image_mask_label_id(tiny_voc):
    ds = VOCSegmentation(tiny_voc, "trainval")
    assert ds.masks and ds.ids == tiny_ids("trainval")
    for i, image_id in enumerate(ds.ids):
        s = ds[i]
        assert s["id"] == image_id
        assert s["image"].dtype == np.uint8 and s["image"].ndim == 3 and s["image"].shape[2] == 3
        assert s["mask"].shape == s["image"].shape[:2]
        np.testing.assert_array_equal(s["label"], expected_label(image_id))
        assert set(np.unique(s["mask"])) <= {0, 255, *TINY[image_id][1]}


def test_test_split_has_no_mask_or_label(tiny_voc):
    ds = VOCSegmentation(tiny_voc, "test")
    s = ds[0]
    assert "mask" not in s and "label" not in s and not ds.masks and not ds.has_labels


def test_labels_from_annotations_when_no_masks(tmp_path):
    voc = make_tiny_voc(tmp_path, with_masks=False, with_annotations=True)
    ds = VOCSegmentation(voc, "train")
    assert not ds.masks and ds.ids == tiny_ids("train")
    for i, image_id in enumerate(ds.ids):
        s = ds[i]
        assert "mask" not in s
        np.testing.assert_array_equal(s["label"], expected_label(image_id))


def test_train_aug_reads_sbd_masks(tiny_voc):
    shutil.copytree(tiny_voc / "SegmentationClass", tiny_voc / "SegmentationClassAug")
    (tiny_voc / "ImageSets" / "SegmentationAug").mkdir()
    # SBD-style list lines: "<image path> <mask path>"
    (tiny_voc / "ImageSets" / "SegmentationAug" / "train_aug.txt").write_text(
        "/JPEGImages/2007_000001.jpg /SegmentationClassAug/2007_000001.png\n"
        "/JPEGImages/2007_000005.jpg /SegmentationClassAug/2007_000005.png\n")
    ds = VOCSegmentation(tiny_voc, "train_aug")
    assert ds.ids == ["2007_000001", "2007_000005"]
    assert ds.mask_dir.name == "SegmentationClassAug"
    np.testing.assert_array_equal(ds[1]["label"], expected_label("2007_000005"))


def test_labels_from_mask_ignores_void_and_background():
    mask = np.array([[0, 255, 3], [3, 20, 0]], dtype=np.uint8)
    label = labels_from_mask(mask)
    assert label.shape == (20,) and label.sum() == 2 and label[2] == 1 and label[19] == 1


# ---------------------------------------------------------------- bad inputs
def _corrupt_image(voc: Path) -> Path:
    path = voc / "JPEGImages" / "2007_000002.jpg"
    path.write_bytes(path.read_bytes()[:200])  # truncated JPEG
    return path


def _wrong_size_mask(voc: Path) -> Path:
    path = voc / "SegmentationClass" / "2007_000002.png"
    write_mask(path, np.zeros((10, 10), dtype=np.uint8))
    return path


def _bad_value_mask(voc: Path) -> Path:
    path = voc / "SegmentationClass" / "2007_000003.png"
    mask = read_mask(path)
    mask[0, 0] = 21
    write_mask(path, mask)
    return path


def _rgb_mask(voc: Path) -> Path:
    path = voc / "SegmentationClass" / "2007_000001.png"
    Image.new("RGB", (4, 4)).save(path)
    return path


def _missing_image(voc: Path) -> Path:
    path = voc / "JPEGImages" / "2007_000003.jpg"
    path.unlink()
    return path


def _missing_mask(voc: Path) -> Path:
    path = voc / "SegmentationClass" / "2007_000001.png"
    path.unlink()
    return path


def _missing_list(voc: Path) -> Path:
    path = voc / "ImageSets" / "Segmentation" / "train.txt"
    path.unlink()
    return path


def _no_jpeg_folder(voc: Path) -> Path:
    shutil.rmtree(voc / "JPEGImages")
    return voc.parent.parent


BAD_INPUTS = {
    "corrupt image": (_corrupt_image, "corrupt or unreadable image"),
    "mask of wrong size": (_wrong_size_mask, "expected the same size"),
    "mask value out of range": (_bad_value_mask, "mask values 21 out of range; expected 0-20 or 255"),
    "RGB mask": (_rgb_mask, "expected a single-channel palette"),
    "image listed but missing": (_missing_image, "listed in train.txt is missing"),
    "mask listed but missing": (_missing_mask, "listed in train.txt is missing"),
    "split list missing": (_missing_list, "split list for 'train' not found"),
    "incomplete dataset folder": (_no_jpeg_folder, "incomplete dataset: no JPEGImages folder"),
}


@pytest.mark.parametrize("fault", list(BAD_INPUTS))
def test_bad_input_names_file_and_expectation(tmp_path, capsys, fault):
    voc = make_tiny_voc(tmp_path)
    breaker, expected = BAD_INPUTS[fault]
    path = breaker(voc)
    with pytest.raises(DatasetError) as err:
        ds = VOCSegmentation(tmp_path, "train")
        for i in range(len(ds)):
            ds[i]
    assert str(path) in str(err.value) and expected in str(err.value)
    # `sharpen data check` reports the same error and exits 2
    assert main(["data", "check", "--root", str(tmp_path), "--quiet"]) == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith("error: ") and str(path) in stderr and expected in stderr
    with pytest.raises(DatasetError, match="|".join([expected.replace("(", r"\(")])):
        check_dataset(tmp_path, progress=False)


def test_missing_dataset_folder(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetError, match="dataset folder not found"):
        VOCSegmentation(missing, "train")
    assert main(["data", "check", "--root", str(missing)]) == 2
    assert f"error: {missing}: dataset folder not found" in capsys.readouterr().err


def test_unknown_class_in_annotation(tmp_path):
    voc = make_tiny_voc(tmp_path, with_masks=False, with_annotations=True)
    xml = voc / "Annotations" / "2007_000002.xml"
    xml.write_text("<annotation><object><name>unicorn</name></object></annotation>")
    ds = VOCSegmentation(voc, "train")
    with pytest.raises(DatasetError, match="unknown class 'unicorn'; expected one of: aeroplane") as err:
        ds[1]
    assert str(xml) in str(err.value)


def test_unknown_split(tiny_voc):
    with pytest.raises(ValueError, match="unknown split 'tain'; expected one of: train, val"):
        VOCSegmentation(tiny_voc, "tain")


def test_check_summary_counts(tiny_voc, capsys):
    summary = check_dataset(tiny_voc, progress=False)
    assert summary["splits"]["train"]["images"] == 3
    assert summary["splits"]["train"]["images_with_2plus_classes"] == 2
    assert summary["splits"]["trainval"]["images_per_class"]["person"] == 3
    assert summary["splits"]["test"]["masks"] == 0
    assert main(["data", "check", "--root", str(tiny_voc), "--quiet", "--json", str(tiny_voc / "s.json")]) == 0
    out = capsys.readouterr().out
    assert "trainval" in out and "person" in out
    assert (tiny_voc / "s.json").is_file()
