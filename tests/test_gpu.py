"""The CUDA paths (marker ``gpu``: skipped without CUDA, run by ``scripts/gpu_check.sh`` as ``pytest -m gpu``):
attention maps on the GPU equal the CPU's, and both trainers run with AMP and channels-last on the GPU,
keeping float32 weights that load on the CPU, with predictions that agree with the CPU's."""

from __future__ import annotations

import json
import math
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from sharpen_core.config import load_config
from tiny_voc import tiny_ids

pytestmark = pytest.mark.gpu
REPO = Path(__file__).resolve().parent.parent


@contextmanager
def full_float32():
    """No TF32 in convolutions and matmuls while comparing with the CPU (torch allows it in cuDNN by default)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _float_weights_ok(state: dict[str, torch.Tensor]) -> int:
    """Every floating tensor float32, finite and on the CPU; returns how many there are."""
    floats = [(k, v) for k, v in state.items() if v.is_floating_point()]
    for k, v in floats:
        assert v.dtype == torch.float32 and v.device.type == "cpu" and torch.isfinite(v).all(), k
    return len(floats)


@pytest.mark.parametrize("mechanism", ["gradcam", "gradcampp", "channel"])
def test_attention_maps_on_cuda_equal_the_cpu(mechanism):
    from sharpen_attention.attention import attention_maps
    from sharpen_attention.classifiers import build_classifier

    torch.manual_seed(0)
    model = build_classifier("resnet18", 20).eval()
    images = torch.randn(2, 3, 64, 64)
    classes = [[1, 4], [7, 15]]
    cpu = attention_maps(model, images, classes=classes, layers=("last", "inner"), mechanism=mechanism)
    with full_float32():
        gpu = attention_maps(model.cuda(), images.cuda(), classes=classes, layers=("last", "inner"),
                             mechanism=mechanism)
    assert set(gpu.maps) == set(cpu.maps) == {"last", "inner"}
    for key in cpu.maps:
        assert gpu.maps[key].device.type == "cuda" and gpu.maps[key].shape == cpu.maps[key].shape
        torch.testing.assert_close(gpu.maps[key].cpu(), cpu.maps[key], rtol=1e-3, atol=1e-4, msg=key)
        assert cpu.maps[key].amax() > 0  # maps with something in them
    torch.testing.assert_close(gpu.logits.cpu(), cpu.logits, rtol=1e-4, atol=1e-4)


def test_classifier_trains_on_cuda_with_amp(builtin_small, tmp_path):
    from classify.evaluate import evaluate_classifier
    from classify.train import load_checkpoint, train_classifier

    cfg = load_config(REPO / "configs" / "quick.toml", [
        f"data.root={builtin_small[0]}", "run.device=cuda", "data.num_workers=0", "classify.image_size=64",
        "classify.batch_size=8", "classify.epochs=2", "classify.amp=true", "classify.channels_last=true"])
    train_classifier(cfg, "icasc", tmp_path, progress=False, max_batches=3)
    history = json.loads((tmp_path / "metrics.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    for h in history:
        assert all(math.isfinite(h[k]) for k in ("train_loss", "train_cls", "train_as_inner", "train_as_last"))
    state = load_checkpoint(tmp_path / "checkpoint.pt")  # on the CPU
    assert state["epoch"] == 2 and _float_weights_ok(state["model"]) > 60
    result = evaluate_classifier(cfg, tmp_path / "checkpoint.pt", progress=False)
    assert 0 <= result["map"] <= 1 and result["images"] == json.loads(
        (builtin_small[0] / "builtin.json").read_text())["counts"][cfg.data.val_split]


def test_segmenter_trains_and_predicts_on_cuda_with_amp(tiny_voc, tmp_path):
    from data.io import read_image, read_mask
    from segment.models import load_segmenter
    from segment.predict import PRED_SUBDIR, predict_probabilities, predict_split
    from segment.train import train_segmenter

    cfg = load_config(None, [
        f"data.root={tiny_voc}", "run.device=cuda", "data.num_workers=0", "segment.model=deeplabv3plus",
        "segment.encoder=resnet18", "segment.crop_size=64", "segment.batch_size=3", "segment.iterations=4",
        "segment.amp=true", "segment.crf_processes=1", "segment.predict_scales=[1.0]"])
    record = train_segmenter(cfg, tmp_path / "seg", supervision="full", progress=False)
    assert record["iterations"] == 4
    checkpoint = tmp_path / "seg" / "checkpoint.pt"
    assert _float_weights_ok(torch.load(checkpoint, map_location="cpu", weights_only=True)["model"]) > 50
    out = predict_split(cfg, checkpoint, "val", tmp_path / "pred", crf="off", progress=False)
    assert out["counts"] == {"images": 2, "predicted": 2, "skipped": 0}
    assert sorted(p.stem for p in (tmp_path / "pred" / PRED_SUBDIR).glob("*.png")) == tiny_ids("val")
    # the GPU's AMP probabilities are the CPU's float32 ones up to float16 rounding; its labels are theirs
    gpu_model, meta = load_segmenter(checkpoint, "cuda")
    cpu_model, _ = load_segmenter(checkpoint, "cpu")
    for image_id in tiny_ids("val"):
        image = read_image(tiny_voc / "JPEGImages" / f"{image_id}.jpg")
        flip = cfg.segment.predict_flip
        p_gpu = predict_probabilities(gpu_model, image, meta["input_size"], [1.0], flip, "cuda", amp=True)
        p_cpu = predict_probabilities(cpu_model, image, meta["input_size"], [1.0], flip, "cpu")
        assert p_gpu.shape == p_cpu.shape == (21, *image.shape[:2])
        np.testing.assert_allclose(p_gpu, p_cpu, atol=3e-3)  # 4 iterations: still near 1/21 each, differences ~1e-2
        # where the CPU's winner leads by more than twice that rounding, the GPU's prediction file agrees
        written = read_mask(tmp_path / "pred" / PRED_SUBDIR / f"{image_id}.png")
        top2 = np.sort(p_cpu, axis=0)[-2:]
        clear = top2[1] - top2[0] > 6e-3
        assert clear.any() and np.array_equal(written[clear], p_cpu.argmax(0)[clear]), image_id
