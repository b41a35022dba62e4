"""Prediction: multi-scale + flip probabilities with known answers, predict_split round trips
(CRF on/off/both, resume, refusal of mixed parameters), test-split submissions and the CLI path.

The segmenter is a stand-in (a pooled 1x1 convolution) served by a stand-in ``segment.models``
module with the real one's ``load_segmenter`` signature, so these tests stay fast.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from data.io import read_image, read_mask, write_mask
from data.transforms import IMAGENET_MEAN, IMAGENET_STD
from data.voc import VOCSegmentation
from eval.predictions import HELD_BACK_TEST_MASKS, evaluate_prediction_folder
from pipeline.cli import main
from sharpen_core.config import Config
from segment.crf import CRFParams, dense_crf
from tiny_voc import tiny_ids
from segment.predict import (CRF_SUBDIR, PRED_SUBDIR, batch_probabilities, crf_labels, predict_probabilities,
                             predict_split)
from eval.submission import SUBMISSION_SUBDIR, validate_submission


def _sigmoid(v: np.ndarray | float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(v, dtype=np.float64)))


# --------------------------------------------------------------------------- predict_probabilities

def test_constant_image_through_1x1_conv_gives_its_softmax():
    """A constant colour c: every pixel's logits are W·((c/255 - mean)/std) + b, whatever the scale or flip."""
    conv = nn.Conv2d(3, 3, 1)
    w = torch.tensor([[1.0, -2.0, 0.5], [0.0, 1.0, 1.0], [-1.0, 0.0, 2.0]])
    b = torch.tensor([0.1, -0.3, 0.2])
    with torch.no_grad():
        conv.weight.copy_(w.view(3, 3, 1, 1))
        conv.bias.copy_(b)
    colour = np.array([200, 30, 90], dtype=np.uint8)
    image = np.broadcast_to(colour, (30, 20, 3)).copy()
    x = (colour / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    logits = w.double().numpy() @ x + b.double().numpy()
    expected = np.exp(logits) / np.exp(logits).sum()
    for scales, flip in (([1.0], False), ([0.5, 1.0, 1.25], True)):
        p = predict_probabilities(conv.eval(), image, 16, scales, flip, "cpu")
        assert p.shape == (3, 30, 20) and p.dtype == np.float32
        np.testing.assert_allclose(p, np.broadcast_to(expected[:, None, None], p.shape), atol=1e-5)


class Ramp(nn.Module):
    """Ignores the input: class 1's logit is ``slope × column``, class 0's is 0."""

    def __init__(self, slope: float):
        super().__init__()
        self.slope = slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        ramp = self.slope * torch.arange(w, dtype=torch.float32).view(1, 1, 1, w).expand(b, 1, h, w)
        return torch.cat([torch.zeros_like(ramp), ramp], 1)


def test_flip_pass_is_flipped_back_and_averaged():
    """Ramp at the image size (no resize): p1(x) = sigmoid(a·x) unflipped; with flip the mean with sigmoid(a·(W-1-x))."""
    size, a = 8, 0.7
    image = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    cols = np.arange(size)
    plain = predict_probabilities(Ramp(a), image, size, [1.0], False, "cpu")
    np.testing.assert_allclose(plain[1], np.broadcast_to(_sigmoid(a * cols), (size, size)), atol=1e-6)
    flipped = predict_probabilities(Ramp(a), image, size, [1.0], True, "cpu")
    expected = (_sigmoid(a * cols) + _sigmoid(a * (size - 1 - cols))) / 2
    np.testing.assert_allclose(flipped[1], np.broadcast_to(expected, (size, size)), atol=1e-6)
    np.testing.assert_allclose(flipped[1], flipped[1][:, ::-1], atol=1e-6)  # symmetric, as it must be
    np.testing.assert_allclose(flipped.sum(0), 1.0, atol=1e-6)


class SideLogit(nn.Module):
    """Class 1's logit is the input side / 10 everywhere; records the input shapes it saw."""

    def __init__(self):
        super().__init__()
        self.seen: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(tuple(x.shape))
        b, _, h, w = x.shape
        one = torch.full((b, 1, h // 2, w // 2), h / 10.0)  # half resolution: the caller upsamples
        return torch.cat([torch.zeros_like(one), one], 1)


def test_scales_resize_to_input_size_squares_and_average():
    model = SideLogit()
    image = np.zeros((37, 23, 3), dtype=np.uint8)
    p = predict_probabilities(model, image, 20, [0.5, 1.0, 1.5], True, "cpu")
    assert model.seen == [(2, 3, 10, 10), (2, 3, 20, 20), (2, 3, 30, 30)]  # each scale: image + flipped copy
    assert p.shape == (2, 37, 23)
    np.testing.assert_allclose(p[1], np.mean(_sigmoid([1.0, 2.0, 3.0])), atol=1e-6)
    with pytest.raises(ValueError, match="scales is empty"):
        predict_probabilities(model, image, 20, [], True, "cpu")


def test_batched_images_match_one_at_a_time():
    torch.manual_seed(0)
    model = nn.Sequential(nn.AvgPool2d(4), nn.Conv2d(3, 5, 1)).eval()
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((30, 41), (52, 17), (24, 24))]
    from segment.predict import scaled_square_inputs

    batch = batch_probabilities(model, [scaled_square_inputs(im, 24, [0.75, 1.0]) for im in images],
                                [im.shape[:2] for im in images], True, "cpu")
    assert len(batch) == len(images) == 3
    for im, p in zip(images, batch):
        np.testing.assert_allclose(p, predict_probabilities(model, im, 24, [0.75, 1.0], True, "cpu"), atol=1e-5)


def test_crf_labels_are_background_and_argmax_winners():
    assert crf_labels(np.array([[3, 3], [15, 3]], dtype=np.uint8)) == [0, 3, 15]
    assert crf_labels(np.zeros((2, 2), dtype=np.uint8)) == [0]


# --------------------------------------------------------------------------- predict_split

def _standin_model() -> nn.Module:
    """Pooled 1x1 conv to 21 labels: background, person (R) and car (G) compete, the rest far behind."""
    model = nn.Sequential(nn.AvgPool2d(2), nn.Conv2d(3, 21, 1))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.fill_(-20.0)
        model[1].bias[0] = 0.5
        model[1].weight[15, 0] = 3.0
        model[1].weight[7, 1] = 3.0
        model[1].bias[15] = model[1].bias[7] = 0.0
    return model.eval()


@pytest.fixture
def standin(monkeypatch, tmp_path) -> Path:
    """A checkpoint of the stand-in model, and a ``segment.models`` serving it through load_segmenter."""
    path = tmp_path / "seg" / "checkpoint.pt"
    path.parent.mkdir()
    meta = {"model": "standin", "encoder": "none", "num_classes": 21, "input_size": 24, "supervision": "sec",
            "iteration": 7, "class_names": None}
    torch.save({"meta": meta, "model": _standin_model().state_dict()}, path)
    fake = types.ModuleType("segment.models")

    def load_segmenter(p, device="cpu", num_classes=None):
        state = torch.load(p, map_location="cpu", weights_only=True)
        if num_classes is not None and state["meta"]["num_classes"] != num_classes:
            raise ValueError("class count mismatch")
        net = nn.Sequential(nn.AvgPool2d(2), nn.Conv2d(3, 21, 1))
        net.load_state_dict(state["model"])
        return net.to(device).eval(), state["meta"]

    fake.load_segmenter = load_segmenter
    monkeypatch.setitem(sys.modules, "segment.models", fake)
    return path


def _cfg(voc: Path, **segment) -> Config:
    cfg = Config()
    cfg.data.root = str(voc)
    cfg.data.num_workers = 0
    cfg.run.device = "cpu"
    cfg.segment.batch_size = 2
    cfg.segment.crf_processes = 1
    cfg.segment.predict_scales = [0.75, 1.0]
    cfg.segment.predict_flip = True
    for k, v in segment.items():
        setattr(cfg.segment, k, v)
    return cfg


def _mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.glob("*.png"))}


def test_predict_split_both_outputs_known_answers_and_resume(tiny_voc, standin, tmp_path):
    cfg = _cfg(tiny_voc)
    out = tmp_path / "out"
    record = predict_split(cfg, standin, "trainval", out, crf="both", progress=False)
    ds = VOCSegmentation(tiny_voc, "trainval")
    model = _standin_model()
    params = CRFParams.from_config(cfg.segment)
    crf_ran = 0
    assert ds.ids == tiny_ids("trainval")  # the images of the split's list, every one checked below
    for image_id in ds.ids:
        image = read_image(ds.image_path(image_id))
        p = predict_probabilities(model, image, 24, [0.75, 1.0], True, "cpu")
        plain = p.argmax(0)
        assert np.array_equal(read_mask(out / PRED_SUBDIR / f"{image_id}.png"), plain)
        labels = crf_labels(plain)
        expected = plain if len(labels) == 1 else dense_crf(image, p, labels, 1.0, params).argmax(0)
        crf_ran += len(labels) > 1
        got = read_mask(out / CRF_SUBDIR / f"{image_id}.png")
        assert np.array_equal(got, expected) and set(np.unique(got)) <= set(labels)
    assert crf_ran >= 3  # the CRF really ran (several labels win pixels)
    assert record.counts == {"images": 5, "predicted": 5, "skipped": 0}
    assert record.meta["iteration"] == 7 and record.params["input_size"] == 24
    for sub in (PRED_SUBDIR, CRF_SUBDIR):
        ref = evaluate_prediction_folder(out / sub, tiny_voc, "trainval", progress=False)
        assert record.scores[sub]["miou"] == pytest.approx(ref.miou) and record.miou[sub] == pytest.approx(ref.miou)
        assert set(record.scores[sub]["per_class_iou"]) >= {"background", "person", "car"}
    on_disk = json.loads((out / "predict.json").read_text())
    assert on_disk["status"] == "done" and on_disk["counts"]["predicted"] == 5 and "config" in on_disk

    before = {sub: _mtimes(out / sub) for sub in (PRED_SUBDIR, CRF_SUBDIR)}
    again = predict_split(cfg, standin, "trainval", out, crf="both", progress=False)
    assert again.counts == {"images": 5, "predicted": 0, "skipped": 5}
    assert {sub: _mtimes(out / sub) for sub in before} == before
    assert again.scores["pred_crf"]["miou"] == record.scores["pred_crf"]["miou"]

    # a missing CRF output and a corrupt plain one: those two images are redone, identically
    saved = {sub: {p.name: p.read_bytes() for p in (out / sub).glob("*.png")} for sub in before}
    (out / CRF_SUBDIR / f"{ds.ids[0]}.png").unlink()
    (out / PRED_SUBDIR / f"{ds.ids[3]}.png").write_bytes(b"half a png")
    (out / PRED_SUBDIR / f".{ds.ids[3]}.png.abc.tmp").write_bytes(b"left by a killed run")
    third = predict_split(cfg, standin, "trainval", out, crf="both", progress=False)
    assert third.counts == {"images": 5, "predicted": 2, "skipped": 3}
    assert {sub: {p.name: p.read_bytes() for p in (out / sub).glob("*.png")} for sub in before} == saved
    assert not list((out / PRED_SUBDIR).glob(".*.tmp"))


def test_predict_split_crf_off_and_on_write_one_folder(tiny_voc, standin, tmp_path):
    cfg = _cfg(tiny_voc)
    off = predict_split(cfg, standin, "val", tmp_path / "off", crf="off", progress=False)
    assert sorted(p.stem for p in (tmp_path / "off" / PRED_SUBDIR).glob("*.png")) == tiny_ids("val") == [
        "2007_000004", "2007_000005"]
    assert not (tmp_path / "off" / CRF_SUBDIR).exists() and list(off.scores) == [PRED_SUBDIR]
    on = predict_split(cfg, standin, "val", tmp_path / "on", crf="on", progress=False)
    assert not (tmp_path / "on" / PRED_SUBDIR).exists() and list(on.scores) == [CRF_SUBDIR]
    # adding the other output to a folder later is a resume, not a conflict
    both = predict_split(cfg, standin, "val", tmp_path / "off", crf="both", progress=False)
    assert both.counts["predicted"] == 2 and (tmp_path / "off" / CRF_SUBDIR / "2007_000004.png").is_file()
    with pytest.raises(ValueError, match="crf 'maybe'"):
        predict_split(cfg, standin, "val", tmp_path / "x", crf="maybe", progress=False)


def test_predict_split_refuses_to_mix_parameters(tiny_voc, standin, tmp_path):
    predict_split(_cfg(tiny_voc), standin, "val", tmp_path / "out", crf="off", progress=False)
    with pytest.raises(ValueError, match=r"other parameters \(scales: \[0.75, 1.0\] there, \[1.0\] now\)"):
        predict_split(_cfg(tiny_voc, predict_scales=[1.0]), standin, "val", tmp_path / "out", crf="off",
                      progress=False)
    state = torch.load(standin, weights_only=True)
    state["model"]["1.bias"][0] += 1.0  # other weights in the same checkpoint file
    torch.save(state, standin)
    with pytest.raises(ValueError, match="other parameters \\(checkpoint_sha256: "):
        predict_split(_cfg(tiny_voc), standin, "val", tmp_path / "out", crf="off", progress=False)
    (tmp_path / "out" / "predict.json").unlink()
    with pytest.raises(ValueError, match="predictions without predict.json"):
        predict_split(_cfg(tiny_voc), standin, "val", tmp_path / "out", crf="off", progress=False)


def _held_back(voc: Path) -> None:
    """Test masks in SegmentationClassTest/, as the built-in dataset keeps them: background + a car square."""
    ds = VOCSegmentation(voc, "test")
    for i, image_id in enumerate(ds.ids):
        h, w = read_image(ds.image_path(image_id)).shape[:2]
        mask = np.zeros((h, w), dtype=np.uint8)
        mask[5:20, 5:20] = 7
        write_mask(voc / HELD_BACK_TEST_MASKS / f"{image_id}.png", mask)


def test_cli_predict_test_submission_then_eval(tiny_voc, standin, tmp_path, capsys):
    """`sharpen segment predict --submission` on test (CRF in a 2-process pool), then `sharpen eval` on the tarball."""
    _held_back(tiny_voc)
    config = tmp_path / "c.toml"
    config.write_text(f"[run]\ndevice = 'cpu'\n[data]\nroot = '{tiny_voc}'\nnum_workers = 0\n"
                      "[segment]\ncrf_processes = 2\nbatch_size = 1\npredict_scales = [1.0]\n")
    out = tmp_path / "pred_test"
    assert main(["segment", "predict", "--config", str(config), "--checkpoint", str(standin), "--split", "test",
                 "--out", str(out), "--crf", "on", "--submission", "--quiet"]) == 0
    record = json.loads((out / "predict.json").read_text())
    tarball = Path(record["submission"])
    assert tarball == out / "results.tar.gz" and "scores" not in record  # the test split is not scored here
    assert validate_submission(tarball, VOCSegmentation(tiny_voc, "test"))["images"] == 2
    assert sorted(p.stem for p in (out / SUBMISSION_SUBDIR).glob("*.png")) == tiny_ids("test")
    for image_id in tiny_ids("test"):
        assert np.array_equal(read_mask(out / SUBMISSION_SUBDIR / f"{image_id}.png"),
                              read_mask(out / CRF_SUBDIR / f"{image_id}.png"))
    capsys.readouterr()
    assert main(["eval", "segmentation", "--pred", str(tarball), "--gt", str(tiny_voc), "--split", "test",
                 "--quiet", "--json", str(tmp_path / "s.json")]) == 0
    scores = json.loads((tmp_path / "s.json").read_text())
    folder = evaluate_prediction_folder(out / CRF_SUBDIR, tiny_voc, "test", progress=False)
    assert scores["miou"] == pytest.approx(folder.miou) and scores["ground_truth"].startswith(HELD_BACK_TEST_MASKS)
