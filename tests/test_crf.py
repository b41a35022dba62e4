"""Dense CRF wrapper and pool (docs/method.md §5): region recovery, label selection, pool == inline, errors,
the spatial scale options (docs/method.md §5.1)."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

from sharpen_core.config import ConfigError, SegmentConfig, load_config
from segment.crf import CRFParams, CRFPool, dense_crf, predict_scale, train_scale


def _two_regions(h: int = 40, w: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Left half red, right half blue; 3 label planes, the right region's label at 0.6 ± noise."""
    rng = np.random.default_rng(seed)
    image = np.zeros((h, w, 3), dtype=np.uint8)
    image[:, : w // 2] = (200, 40, 30)
    image[:, w // 2:] = (30, 40, 200)
    truth = np.zeros((h, w), dtype=np.int64)
    truth[:, w // 2:] = 1
    right = 0.6 + rng.uniform(-0.25, 0.25, size=(h, w))  # 60/40 on average, many pixels flipped
    probs = np.empty((3, h, w), dtype=np.float32)
    probs[0] = np.where(truth == 0, right, 1 - right) * 0.95
    probs[1] = np.where(truth == 1, right, 1 - right) * 0.95
    probs[2] = 0.05
    return image, probs, truth


def test_two_region_image_is_recovered():
    image, probs, truth = _two_regions()
    raw = (probs.argmax(0) == truth).mean()
    assert raw < 0.8  # the noise flips a fair share of the pixels
    out = dense_crf(image, probs)
    assert out.shape == probs.shape and out.dtype == np.float32
    np.testing.assert_allclose(out.sum(0), 1.0, atol=1e-5)
    assert (out.argmax(0) == truth).mean() == 1.0


def test_present_labels_zero_the_other_planes():
    image, probs, truth = _two_regions()
    probs4 = np.concatenate([probs, np.full((1, *probs.shape[1:]), 0.3, np.float32)])
    out = dense_crf(image, probs4, labels=[1, 0])
    assert out.shape == (4, *truth.shape)
    assert (out[2] == 0).all() and (out[3] == 0).all()
    np.testing.assert_allclose(out.sum(0), 1.0, atol=1e-5)
    assert (out.argmax(0) == truth).mean() == 1.0


def test_read_only_and_strided_inputs():
    image, probs, _ = _two_regions(16, 20)
    expect = dense_crf(image, probs)
    ro_image, ro_probs = image.copy(), probs.copy()
    ro_image.flags.writeable = False  # as images decoded by PIL come
    ro_probs.flags.writeable = False
    np.testing.assert_array_equal(dense_crf(ro_image, ro_probs), expect)
    wide = np.zeros((16, 40, 3), np.uint8)
    wide[:, ::2] = image
    np.testing.assert_array_equal(dense_crf(wide[:, ::2], np.asfortranarray(probs)), expect)


def test_single_label_is_certain():
    image, probs, _ = _two_regions()
    out = dense_crf(image, probs, labels=[2])
    assert (out[2] == 1).all() and (out[[0, 1]] == 0).all()


def test_zero_iterations_return_renormalised_selected_probs():
    image, probs, _ = _two_regions()
    out = dense_crf(image, probs, labels=[0, 1], params=CRFParams(iterations=0))
    sel = probs[[0, 1]] / probs[[0, 1]].sum(0)
    np.testing.assert_allclose(out[[0, 1]], sel, rtol=1e-5, atol=1e-6)
    # a pixel where every selected plane is 0 becomes uniform over them; the input is not modified
    zeroed = probs.copy()
    zeroed[:2, 3, 4] = 0
    keep = zeroed.copy()
    out = dense_crf(image, zeroed, labels=[0, 1], params=CRFParams(iterations=0))
    np.testing.assert_allclose(out[:, 3, 4], [0.5, 0.5, 0.0], atol=1e-6)
    np.testing.assert_array_equal(zeroed, keep)


def test_scale_divides_spatial_deviations():
    image, probs, _ = _two_regions(20, 24, seed=3)
    p = CRFParams(bilateral_sxy=60.0, gaussian_sxy=6.0)
    shrunk = dataclasses.replace(p, bilateral_sxy=15.0, gaussian_sxy=1.5)
    np.testing.assert_array_equal(dense_crf(image, probs, scale=4.0, params=p),
                                  dense_crf(image, probs, scale=1.0, params=shrunk))


def test_params_from_config():
    cfg = SegmentConfig(crf_bilateral_weight=5.0, crf_bilateral_sxy=50.0, crf_bilateral_srgb=7.0,
                        crf_gaussian_weight=2.0, crf_gaussian_sxy=1.0, crf_iterations=4)
    assert CRFParams.from_config(cfg) == CRFParams(5.0, 50.0, 7.0, 2.0, 1.0, 4)
    assert CRFParams.from_config(SegmentConfig()) == CRFParams()
    with CRFPool.from_config(SegmentConfig(crf_processes=1, crf_iterations=4)) as pool:
        assert pool.processes == 1 and pool.params.iterations == 4


def test_errors_name_the_problem():
    image, probs, _ = _two_regions(10, 12)
    with pytest.raises(ValueError, match=r"\(3, 10, 11\).*\(10, 12, 3\)"):
        dense_crf(image, probs[:, :, :11])
    with pytest.raises(ValueError, match="uint8"):
        dense_crf(image.astype(np.float32), probs)
    with pytest.raises(ValueError, match=r"outside 0\.\.2"):
        dense_crf(image, probs, labels=[0, 3])
    with pytest.raises(ValueError, match="repeat"):
        dense_crf(image, probs, labels=[1, 1])
    with pytest.raises(ValueError, match="scale"):
        dense_crf(image, probs, scale=0.0)


def test_pool_matches_inline():
    batch = [_two_regions(12 + i, 16, seed=i) for i in range(5)]
    images = [b[0] for b in batch]
    probs = [b[1] for b in batch]
    labels = [[0, 1], None, [1, 2], [2], [0, 1, 2]]
    inline = [dense_crf(im, p, lab, scale=2.0) for im, p, lab in zip(images, probs, labels)]
    with CRFPool(1) as one:
        same = one.map(images, probs, labels, scale=2.0)
    with CRFPool(2) as pool:
        pooled = pool.map(images, probs, labels, scale=2.0)
        pending = pool.map_async(images[::-1], probs[::-1], labels[::-1], scale=2.0)
        reversed_ = pending.get()
        with pytest.raises(ValueError, match=r"image 1 of the batch.*\(3, 12, 16\)"):
            pool.map(images[:2], [probs[0], probs[0]], scale=2.0)
    assert len(inline) == len(same) == len(pooled) == len(reversed_) == 5
    for a, b, c, d in zip(inline, same, pooled, reversed_[::-1]):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(a, d)
    with pytest.raises(ValueError, match="closed"):
        pool.map(images, probs)


def test_pool_length_mismatch():
    image, probs, _ = _two_regions(8, 8)
    with CRFPool(1) as pool, pytest.raises(ValueError, match="2 images, 1 probability maps"):
        pool.map([image, image], [probs])


# --------------------------------------------------------------------------- spatial scale (docs/method.md §5.1)
def test_predict_scale_fits_the_image():
    # "image": s = 500 / long side; a number is s itself
    assert predict_scale("image", 125, 100) == 4.0
    assert predict_scale("image", 96, 160) == 3.125
    assert predict_scale("image", 500, 375) == 1.0  # a VOC-sized image keeps DeepLab's values
    assert predict_scale(1.0, 96, 160) == 1.0 and predict_scale(2, 10, 10) == 2.0
    for bad in ("imag", "grid", 0.0, -1.0, float("nan"), float("inf"), True):
        with pytest.raises(ValueError, match="segment.crf_predict_scale"):
            predict_scale(bad, 10, 10)


def test_train_scale_keeps_secs_fraction_of_the_grid():
    # SEC: bilateral sxy 80/12 = 6.67 cells of a 41-cell grid; "grid": s = 12 * 41 / g
    assert train_scale("grid", 41) == 12.0
    assert train_scale("grid", 16) == 30.75 and train_scale("grid", (16, 16)) == 30.75
    assert train_scale("grid", 82) == 6.0
    assert (80 / train_scale("grid", 16)) / 16 == pytest.approx((80 / 12) / 41)
    assert train_scale(8.0, 16) == 8.0 and train_scale(12, 41) == 12.0
    for bad in ("image", 0, -3.0, float("nan")):
        with pytest.raises(ValueError, match="segment.crf_train_scale"):
            train_scale(bad, 16)


def _densecrf_reference(image: np.ndarray, probs: np.ndarray, sxy_bilateral: float, sxy_gaussian: float) -> np.ndarray:
    """pydensecrf called directly with DeepLab's other values (10, 13, 3; 10 iterations): all labels, no floor hit."""
    import pydensecrf.densecrf as dcrf

    k, h, w = probs.shape
    crf = dcrf.DenseCRF2D(w, h, k)
    unary = np.ascontiguousarray(-np.log(probs / probs.sum(0, keepdims=True)), dtype=np.float32)
    crf.setUnaryEnergy(unary.reshape(k, -1))
    crf.addPairwiseGaussian(sxy=sxy_gaussian, compat=3.0)
    crf.addPairwiseBilateral(sxy=sxy_bilateral, srgb=13.0, rgbim=np.ascontiguousarray(image), compat=10.0)
    return np.asarray(crf.inference(10), dtype=np.float32).reshape(k, h, w)


def test_default_scale_reproduces_the_voc_crf_bit_for_bit():
    # crf_predict_scale = 1.0 (the default) through the pool gives pydensecrf's output at sxy 80 and 3 exactly;
    # "image" on a 125 px image gives it at 80/4 = 20 and 3/4 = 0.75 exactly.
    image, probs, _ = _two_regions(100, 125, seed=5)
    cfg = SegmentConfig(crf_processes=1)
    assert cfg.crf_predict_scale == 1.0 and cfg.crf_train_scale == 12.0
    s = predict_scale(cfg.crf_predict_scale, *image.shape[:2])
    with CRFPool.from_config(cfg) as pool:
        (voc,) = pool.map([image], [probs], None, [s])
        (fitted,) = pool.map([image], [probs], None, [predict_scale("image", *image.shape[:2])])
    np.testing.assert_array_equal(voc, _densecrf_reference(image, probs, 80.0, 3.0))
    np.testing.assert_array_equal(fitted, _densecrf_reference(image, probs, 20.0, 0.75))
    assert not np.array_equal(voc, fitted)


def test_pool_takes_one_scale_per_image():
    batch = [_two_regions(12 + i, 16, seed=i) for i in range(3)]
    images, probs = [b[0] for b in batch], [b[1] for b in batch]
    scales = [1.0, 4.0, 0.5]
    with CRFPool(1) as pool:
        out = pool.map(images, probs, None, scales)
        with pytest.raises(ValueError, match="3 images, 3 probability maps, 3 label lists and 2 scales"):
            pool.map(images, probs, None, scales[:2])
        with pytest.raises(ValueError, match="image 2 of the batch: scale"):
            pool.map(images, probs, None, [1.0, 1.0, 0.0])
    for im, p, s, o in zip(images, probs, scales, out):
        np.testing.assert_array_equal(o, dense_crf(im, p, None, s))


def test_sec_losses_run_the_crf_at_the_configured_scale():
    # segment.train.sec_losses hands the pool s = train_scale(crf_train_scale, grid): 12 * 41 / 16 on a 16 grid
    import torch

    from segment.train import sec_losses

    seen = []

    class Recorder(CRFPool):
        def map_async(self, images, probs, labels=None, scale=1.0):
            seen.append(scale)
            return super().map_async(images, probs, labels, scale)

    rng = np.random.default_rng(0)
    batch = {"cues": torch.zeros(1, 21, 16, 16), "labels": torch.zeros(1, 21),
             "small_image": torch.from_numpy(rng.integers(0, 256, (1, 16, 16, 3), dtype=np.uint8))}
    batch["cues"][0, 0] = 1
    batch["labels"][0, 0] = 1
    logits = torch.randn(1, 21, 16, 16, generator=torch.Generator().manual_seed(0))
    with Recorder(1, CRFParams(iterations=1)) as pool:
        for setting in (12.0, "grid", 8.0):
            sec_losses(logits, batch, SegmentConfig(crf_train_scale=setting), pool)
    assert seen == [12.0, 30.75, 8.0]


def test_config_validates_the_scales(tmp_path):
    cfg = load_config(None, ["segment.crf_predict_scale=image", "segment.crf_train_scale=grid"])
    assert (cfg.segment.crf_predict_scale, cfg.segment.crf_train_scale) == ("image", "grid")
    cfg = load_config(None, ["segment.crf_predict_scale=2", "segment.crf_train_scale=30.75"])
    assert (cfg.segment.crf_predict_scale, cfg.segment.crf_train_scale) == (2.0, 30.75)
    assert isinstance(cfg.segment.crf_predict_scale, float)
    for override, key in (("segment.crf_predict_scale=imag", "crf_predict_scale"),
                          ("segment.crf_predict_scale=grid", "crf_predict_scale"),
                          ("segment.crf_predict_scale=0", "crf_predict_scale"),
                          ("segment.crf_predict_scale=nan", "crf_predict_scale"),
                          ("segment.crf_predict_scale=true", "crf_predict_scale"),
                          ("segment.crf_train_scale=image", "crf_train_scale"),
                          ("segment.crf_train_scale=-12", "crf_train_scale"),
                          ("segment.crf_train_scale=inf", "crf_train_scale")):
        with pytest.raises(ConfigError, match=f"segment.{key}"):
            load_config(None, [override])
    path = tmp_path / "c.toml"
    path.write_text('[segment]\ncrf_train_scale = "grd"\n')
    with pytest.raises(ConfigError, match=re.escape(f"{path}: segment.crf_train_scale = 'grd'; expected a positive number or 'grid'")):
        load_config(path)
