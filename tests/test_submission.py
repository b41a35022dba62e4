"""VOC test-server submissions: layout, determinism, every validation error; scoring tarballs,
submission folders and plain folders alike; the built-in dataset's held-back test masks."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data.classes import VOC_PALETTE
from sharpen_core.errors import DatasetError
from data.io import encode_palette_png, read_mask, write_mask
from data.voc import VOCSegmentation
from eval.predictions import (HELD_BACK_TEST_MASKS, evaluate_prediction_folder, evaluate_predictions,
                              ground_truth)
from pipeline.cli import main
from eval.submission import SUBMISSION_SUBDIR, read_submission, validate_submission
from segment.submission import pack_submission, write_submission

from tiny_voc import TINY, make_tiny_voc

TEST_IDS = [i for i, (s, _) in TINY.items() if s == "test"]  # 2008_000001 (class 10), 2008_000002 (17, 3)


def _rect_mask(shape: tuple[int, int], classes: list[int]) -> np.ndarray:
    """The mask make_tiny_voc draws: a 14x16 rectangle per class, a void row under each."""
    mask = np.zeros(shape, dtype=np.uint8)
    for j, c in enumerate(classes):
        top, left = 2 + 6 * j, 3 + 8 * j
        mask[top:top + 14, left:left + 16] = c
        mask[top + 14, left:left + 16] = 255
    return mask


@pytest.fixture
def voc(tmp_path: Path) -> Path:
    """The tiny VOC set plus held-back test masks in SegmentationClassTest/ (as data.builtin writes them)."""
    root = make_tiny_voc(tmp_path)
    ds = VOCSegmentation(root, "test")
    for image_id in ds.ids:
        h, w = ds.load(ds.ids.index(image_id))["image"].shape[:2]
        write_mask(root / HELD_BACK_TEST_MASKS / f"{image_id}.png", _rect_mask((h, w), TINY[image_id][1]))
    return root


def _perfect(voc: Path, split: str, out: Path) -> Path:
    """Predictions equal to the ground truth, void pixels called background."""
    gt = ground_truth(voc, split)
    for image_id in gt.ids:
        m = gt.mask(image_id)
        write_mask(out / f"{image_id}.png", np.where(m == 255, 0, m).astype(np.uint8))
    return out


def _tar_members(path: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(path, "r:gz") as tar:
        return tar.getmembers()


# --------------------------------------------------------------------------- writing

def test_write_submission_layout_values_sizes(voc, tmp_path):
    pred = _perfect(voc, "test", tmp_path / "pred")
    ds = VOCSegmentation(voc, "test")
    tarball = write_submission(pred, ds, tmp_path / "sub")
    assert tarball == tmp_path / "sub" / "results.tar.gz"
    members = _tar_members(tarball)
    assert [m.name for m in members] == [
        "results", "results/VOC2012", "results/VOC2012/Segmentation", SUBMISSION_SUBDIR,
        f"{SUBMISSION_SUBDIR}/2008_000001.png", f"{SUBMISSION_SUBDIR}/2008_000002.png"]
    assert SUBMISSION_SUBDIR == "results/VOC2012/Segmentation/comp6_test_cls"
    assert all(m.isdir() for m in members[:4]) and all(m.isfile() for m in members[4:])
    with tarfile.open(tarball, "r:gz") as tar:
        for image_id in TEST_IDS:
            data = tar.extractfile(f"{SUBMISSION_SUBDIR}/{image_id}.png").read()
            with Image.open(io.BytesIO(data)) as im:
                assert im.mode == "P"  # a palette PNG with the VOC colours
                assert np.array_equal(np.array(im.getpalette()[:63]).reshape(21, 3), VOC_PALETTE[:21])
                arr = np.array(im)
            expected = read_mask(pred / f"{image_id}.png")
            assert np.array_equal(arr, expected) and arr.max() <= 20
            image = ds.load(ds.ids.index(image_id))["image"]
            assert arr.shape == image.shape[:2]
    # the folder layout is written too, with the same PNGs
    for image_id in TEST_IDS:
        assert np.array_equal(read_mask(tmp_path / "sub" / SUBMISSION_SUBDIR / f"{image_id}.png"),
                              read_mask(pred / f"{image_id}.png"))
    assert validate_submission(tarball, ds) == {"path": str(tarball), "split": "test", "images": 2}
    assert validate_submission(tmp_path / "sub", ds)["images"] == 2
    read = read_submission(tarball)
    assert sorted(read) == TEST_IDS and np.array_equal(read[TEST_IDS[1]], read_mask(pred / f"{TEST_IDS[1]}.png"))


def test_write_submission_is_byte_identical_on_rerun(voc, tmp_path):
    pred = _perfect(voc, "test", tmp_path / "pred")
    ds = VOCSegmentation(voc, "test")
    first = write_submission(pred, ds, tmp_path / "a").read_bytes()
    # re-written predictions (new mtimes) and another folder: the same bytes
    _perfect(voc, "test", pred)
    assert write_submission(pred, ds, tmp_path / "b").read_bytes() == first
    assert write_submission(pred, ds, tmp_path / "a").read_bytes() == first
    assert {m.mtime for m in _tar_members(tmp_path / "a" / "results.tar.gz")} == {1_325_376_000}
    assert not list((tmp_path / "a").glob(".*.tmp"))


def test_write_submission_removes_stale_pngs(voc, tmp_path):
    pred = _perfect(voc, "test", tmp_path / "pred")
    stale = tmp_path / "sub" / SUBMISSION_SUBDIR / "2007_999999.png"
    write_mask(stale, np.zeros((4, 4), dtype=np.uint8))
    write_submission(pred, VOCSegmentation(voc, "test"), tmp_path / "sub")
    assert not stale.exists()
    validate_submission(tmp_path / "sub", VOCSegmentation(voc, "test"))


@pytest.mark.parametrize("fault, message", [
    ("missing", "prediction missing; expected one <id>.png per image of split 'test' (2 images)"),
    ("size", "prediction is 3x2 (WxH); expected the image size 44x64"),
    ("value", "prediction values [21] out of range; expected 0-20"),
    ("void", "prediction has void (255) pixels; expected values 0-20 only"),
    ("rgb", "prediction has PIL mode 'RGB'; expected a palette or grey PNG"),
])
def test_write_submission_checks_every_prediction(voc, tmp_path, fault, message):
    pred = _perfect(voc, "test", tmp_path / "pred")
    victim = pred / "2008_000002.png"  # 44x64 (WxH)
    good = read_mask(victim)
    if fault == "missing":
        victim.unlink()
    elif fault == "size":
        write_mask(victim, np.zeros((2, 3), dtype=np.uint8))
    elif fault == "value":
        write_mask(victim, np.where(good == 3, 21, good).astype(np.uint8))
    elif fault == "void":
        bad = good.copy()
        bad[0, 0] = 255
        write_mask(victim, bad)
    else:
        Image.fromarray(np.zeros((*good.shape, 3), dtype=np.uint8)).save(victim)
    with pytest.raises(DatasetError) as e:
        write_submission(pred, VOCSegmentation(voc, "test"), tmp_path / "sub")
    assert e.value.path == victim and message in str(e.value)
    assert not (tmp_path / "sub" / "results.tar.gz").exists()


# --------------------------------------------------------------------------- validation

def _payloads(voc: Path, split: str = "test") -> dict[str, bytes]:
    gt = ground_truth(voc, split)
    return {i: encode_palette_png(np.where(gt.mask(i) == 255, 0, gt.mask(i)).astype(np.uint8)) for i in gt.ids}


def _raw_tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_validate_submission_errors_name_the_member(voc, tmp_path):
    ds = VOCSegmentation(voc, "test")
    good = _payloads(voc)
    tarball = tmp_path / "s.tar.gz"
    m2 = f"{SUBMISSION_SUBDIR}/2008_000002.png"

    def fails(files: dict[str, bytes] | None = None, raw: dict[str, bytes] | None = None) -> str:
        if raw is not None:
            _raw_tar(tarball, raw)
        else:
            pack_submission(files.items(), tarball)
        with pytest.raises(DatasetError) as e:
            validate_submission(tarball, ds)
        assert e.value.path == tarball
        return str(e.value)

    assert validate_submission(pack_submission(good.items(), tarball), ds)["images"] == 2
    assert f"{m2} missing: 1 of the 2 images of split 'test' have no prediction" in fails(
        {"2008_000001": good["2008_000001"]})
    assert f"member {m2}: prediction is 3x2 (WxH); expected the image size 44x64" in fails(
        {**good, "2008_000002": encode_palette_png(np.zeros((2, 3), np.uint8))})
    assert f"member {m2}: prediction values [21] out of range; expected 0-20" in fails(
        {**good, "2008_000002": encode_palette_png(np.full((64, 44), 21, np.uint8))})
    assert f"member {m2}: prediction has void (255) pixels" in fails(
        {**good, "2008_000002": encode_palette_png(np.full((64, 44), 255, np.uint8))})
    extra = f"{SUBMISSION_SUBDIR}/2007_000001.png"
    assert f"member {extra}: image id '2007_000001' is not in split 'test'; expected only its 2 images" in fails(
        {**good, "2007_000001": good["2008_000001"]})
    stray = "results/VOC2012/Segmentation/readme.txt"
    assert f"member {stray}: unexpected entry" in fails(raw={stray: b"hello"})
    wrong_dir = "results/VOC2012/Segmentation/comp5_test_cls/2008_000001.png"
    assert f"member {wrong_dir}: unexpected entry" in fails(raw={wrong_dir: good["2008_000001"]})
    assert "image id '2008_000001' appears twice" in fails(
        raw={f"{SUBMISSION_SUBDIR}/2008_000001.png": good["2008_000001"],
             f"./{SUBMISSION_SUBDIR}/2008_000001.png": good["2008_000001"]})
    assert f"member {m2}: corrupt prediction PNG" in fails(raw={m2: b"not a png"})
    tarball.write_bytes(b"this is not a tarball at all" * 40)
    with pytest.raises(DatasetError, match=r"not a tar archive \(unrecognised content\)"):
        validate_submission(tarball, ds)
    with pytest.raises(DatasetError, match="submission not found"):
        validate_submission(tmp_path / "nowhere.tar.gz", ds)


def test_validate_submission_folder_errors_name_the_file(voc, tmp_path):
    pred = _perfect(voc, "test", tmp_path / "pred")
    ds = VOCSegmentation(voc, "test")
    write_submission(pred, ds, tmp_path / "sub")
    folder = tmp_path / "sub" / SUBMISSION_SUBDIR
    (folder / "notes.txt").write_text("x")
    with pytest.raises(DatasetError) as e:
        validate_submission(tmp_path / "sub", ds)
    assert e.value.path == folder / "notes.txt" and "unexpected entry" in str(e.value)
    (folder / "notes.txt").unlink()
    write_mask(folder / "2008_000001.png", np.zeros((5, 5), np.uint8))
    with pytest.raises(DatasetError) as e:
        validate_submission(tmp_path / "sub", ds)
    assert e.value.path == folder / "2008_000001.png" and "expected the image size 46x60" in str(e.value)
    with pytest.raises(DatasetError, match="not a submission folder"):
        validate_submission(tmp_path / "pred", ds)


# --------------------------------------------------------------------------- scoring

def test_tarball_scores_equal_folder_scores(voc, tmp_path):
    """val predictions with errors: the plain folder, the submission folder and its tarball agree."""
    pred = _perfect(voc, "val", tmp_path / "pred")
    m = read_mask(pred / "2007_000005.png")
    write_mask(pred / "2007_000005.png", np.where(m == 15, 4, m).astype(np.uint8))  # person called boat
    write_mask(pred / "2007_000004.png", np.zeros_like(read_mask(pred / "2007_000004.png")))
    tarball = write_submission(pred, VOCSegmentation(voc, "val"), tmp_path / "sub")
    folder = evaluate_predictions(pred, voc, "val", progress=False)
    packed = evaluate_predictions(tarball, voc, "val", progress=False)
    unpacked = evaluate_predictions(tmp_path / "sub", voc, "val", progress=False)
    assert np.array_equal(folder.confusion, packed.confusion) and np.array_equal(folder.confusion, unpacked.confusion)
    assert folder.miou == packed.miou < 1.0
    assert evaluate_prediction_folder(tarball, voc, "val", progress=False).miou == folder.miou
    # boat (2007_000004) called background, person (2007_000005) called boat: both never right; horse intact
    assert folder.iou[4] == 0.0 and folder.iou[15] == 0.0 and folder.iou[13] == 1.0


def test_held_back_test_masks_score_the_test_split(voc, tmp_path):
    assert not VOCSegmentation(voc, "test").masks  # readers never see them
    gt = ground_truth(voc, "test")
    assert gt.mask_dir == voc / HELD_BACK_TEST_MASKS and "held-back" in gt.source
    pred = _perfect(voc, "test", tmp_path / "pred")
    tarball = write_submission(pred, VOCSegmentation(voc, "test"), tmp_path / "sub")
    perfect = evaluate_predictions(tarball, voc, "test", progress=False)
    assert perfect.miou == 1.0 and np.isnan(perfect.iou[1])
    # 2008_000001 (60x46, one 14x16 cow, 16 void pixels) all background; 2008_000002 perfect
    write_mask(pred / "2008_000001.png", np.zeros((60, 46), np.uint8))
    tarball = write_submission(pred, VOCSegmentation(voc, "test"), tmp_path / "sub")
    scores = evaluate_predictions(tarball, voc, "test", progress=False)
    bg2 = int((gt.mask("2008_000002") == 0).sum())
    bg_iou = (2520 + bg2) / (2520 + bg2 + 224)  # TP / (TP + FP): the cow's 224 pixels predicted background
    assert scores.iou[10] == 0.0 and scores.iou[17] == 1.0 and scores.iou[3] == 1.0
    assert scores.iou[0] == pytest.approx(bg_iou)
    assert scores.miou == pytest.approx((bg_iou + 0 + 1 + 1) / 4)


def test_held_back_mask_missing_and_voc_test_without_masks(voc, tmp_path):
    (voc / HELD_BACK_TEST_MASKS / "2008_000002.png").unlink()
    with pytest.raises(DatasetError) as e:
        ground_truth(voc, "test")
    assert e.value.path == voc / HELD_BACK_TEST_MASKS / "2008_000002.png" and "held-back test mask" in str(e.value)
    plain = make_tiny_voc(tmp_path / "plain")
    with pytest.raises(DatasetError, match="split 'test' has no ground-truth masks.*evaluation server"):
        ground_truth(plain, "test")


def test_cli_eval_scores_a_tarball_against_held_back_masks(voc, tmp_path, capsys):
    pred = _perfect(voc, "test", tmp_path / "pred")
    tarball = write_submission(pred, VOCSegmentation(voc, "test"), tmp_path / "sub")
    out_json = tmp_path / "scores.json"
    assert main(["eval", "segmentation", "--pred", str(tarball), "--gt", str(voc), "--split", "test", "--quiet",
                 "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "submission" in out and HELD_BACK_TEST_MASKS in out and "100.00" in out
    record = json.loads(out_json.read_text())
    assert record["miou"] == 1.0 and record["submission"] is True and record["split"] == "test"
    # a malformed submission: one member the wrong size -> exit 2 naming the tarball and the member
    payloads = _payloads(voc)
    payloads["2008_000001"] = encode_palette_png(np.zeros((7, 7), np.uint8))
    bad = pack_submission(payloads.items(), tmp_path / "bad.tar.gz")
    assert main(["eval", "segmentation", "--pred", str(bad), "--gt", str(voc), "--split", "test", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: member {SUBMISSION_SUBDIR}/2008_000001.png: prediction is 7x7 (WxH); expected the image size" in err


@pytest.mark.parametrize("kind, expected", [
    ("random", "not a tar archive (unrecognised content)"),
    ("png", "a PNG image, not a tar archive"),
    ("truncated", "truncated gzip file"),
    ("empty", "an empty file, not a tar archive"),
])
def test_cli_eval_a_file_that_is_no_tarball_is_one_line_naming_it(voc, tmp_path, capsys, kind, expected):
    """`sharpen eval segmentation --pred FILE` on something tarfile cannot open: exit 2, one line naming the file
    and what it is (tarfile's own message lists one line per compression method it tried)."""
    bad = tmp_path / f"{kind}.tar.gz"
    if kind == "random":
        bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif kind == "png":
        bad.write_bytes(encode_palette_png(np.zeros((8, 8), np.uint8)))
    elif kind == "truncated":
        whole = write_submission(_perfect(voc, "test", tmp_path / "pred"), VOCSegmentation(voc, "test"), tmp_path / "s")
        data = whole.read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    else:
        bad.write_bytes(b"")
    assert main(["eval", "segmentation", "--pred", str(bad), "--gt", str(voc), "--split", "test", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {bad}: ") and expected in err, err
