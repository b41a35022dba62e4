"""Training data that uses a small machine well: the decoded-once cache under its memory cap, the
batched random-resized crop and flip (known answers, determinism per (seed, epoch, image)), and the
split of cores between torch and loader workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from classify.augment import crop_boxes, random_resized_crop
from classify.data import DecodedImages
from data.cache import DecodedCache
from sharpen_core.threads import plan_threads, plan_workers

MEAN, STD = [0.5, 0.25, 0.125], [0.5, 0.5, 0.25]


def test_cache_prepares_each_item_once_when_it_fits(capsys):
    calls = []

    def prepare(i: int) -> np.ndarray:
        calls.append(i)
        return np.full((4, 4, 3), i, dtype=np.uint8)

    cache = DecodedCache(prepare, 5, 48, cap_mib=1)
    assert cache.enabled and cache.needed_mib == pytest.approx(240 / 2**20)
    for _ in range(3):
        assert [int(cache.get(i)[0, 0, 0]) for i in range(5)] == [0, 1, 2, 3, 4]
    assert calls == [0, 1, 2, 3, 4] and cache.prepared == 5
    cache.report()
    assert capsys.readouterr().err == ""
    # 5 items of 1 MiB do not fit under 4 MiB: prepared on every read, said once
    big = DecodedCache(prepare, 5, 2**20, cap_mib=4, name="imgs")
    assert not big.enabled
    calls.clear()
    big.get(1), big.get(1)
    assert calls == [1, 1]
    big.report()
    assert "imgs: 5 items, 5 MiB decoded, data.cache_mib = 4: decoded on every read" in capsys.readouterr().err
    assert not DecodedCache(prepare, 5, 48, cap_mib=0).enabled  # 0 turns it off, silently
    with pytest.raises(ValueError, match="data.cache_mib must be >= 0"):
        DecodedCache(prepare, 5, 48, cap_mib=-1)


def test_whole_image_boxes_give_the_input_exactly():
    images = torch.randint(0, 256, (3, 3, 6, 6), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    boxes = crop_boxes(seed=1, epoch=0, indices=[4, 5, 6], hflip=True)
    assert boxes[:, :4].tolist() == [[0.5, 0.5, 1.0, 1.0]] * 3
    out = random_resized_crop(images, boxes, 6, MEAN, STD)
    m, s = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    flip = boxes[:, 4].bool()
    expected = torch.where(flip[:, None, None, None], images.flip(-1), images).float() / 255
    torch.testing.assert_close(out, (expected - m) / s)


def test_crop_box_resamples_the_right_pixels():
    # A 4x4 image, the box = its left half (cx 0.25, w 0.5), full height, output 2x4: bilinear
    # sampling at the output pixel centres hits x = 0.5 and 1.5 in input pixels, so each output
    # pixel is the mean of two neighbouring columns; flipped, the columns come in reverse order.
    image = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4).expand(1, 3, 4, 4).contiguous() * 10
    box = torch.tensor([[0.25, 0.5, 0.5, 1.0, 0.0]], dtype=torch.float64)
    out = random_resized_crop(image, box, 4, [0, 0, 0], [1 / 255] * 3)  # no normalisation: pixel values
    rows = image[0, 0].float()
    # output x centres map to input x = 0.25 * (2*j + 1) - 0.5 for j = 0..3 (border-clamped): -0.25, 0.25, 0.75, 1.25
    xs = [0.0, 0.25, 0.75, 1.25]
    expected = torch.stack([rows[:, int(x)] * (1 - (x - int(x))) + rows[:, min(int(x) + 1, 3)] * (x - int(x))
                            for x in xs], 1)
    torch.testing.assert_close(out[0, 0], expected, rtol=0, atol=1e-4)
    flipped = random_resized_crop(image, torch.tensor([[0.25, 0.5, 0.5, 1.0, 1.0]]), 4, [0, 0, 0], [1 / 255] * 3)
    torch.testing.assert_close(flipped[0, 0], expected.flip(-1), rtol=0, atol=1e-4)


def test_crop_boxes_are_a_function_of_seed_epoch_and_image():
    a = crop_boxes(0, 3, [7, 2, 9], crop_scale=(0.3, 1.0), crop_ratio=(0.75, 4 / 3))
    assert torch.equal(a[1:2], crop_boxes(0, 3, [2], crop_scale=(0.3, 1.0), crop_ratio=(0.75, 4 / 3)))
    assert not torch.equal(a, crop_boxes(0, 4, [7, 2, 9], crop_scale=(0.3, 1.0), crop_ratio=(0.75, 4 / 3)))
    many = crop_boxes(0, 0, range(400), crop_scale=(0.3, 1.0), crop_ratio=(0.75, 4 / 3))
    cx, cy, w, h, flip = many.unbind(1)
    assert (w <= 1).all() and (h <= 1).all() and (w * h >= 0.3 * 0.75 - 1e-9).all()
    assert (cx - w / 2 >= -1e-12).all() and (cx + w / 2 <= 1 + 1e-12).all() and (cy + h / 2 <= 1 + 1e-12).all()
    assert 0.4 < flip.mean().item() < 0.6 and (crop_boxes(0, 0, range(50), hflip=False)[:, 4] == 0).all()
    with pytest.raises(ValueError, match="crop scale"):
        crop_boxes(0, 0, [0], crop_scale=(0.5, 1.5))


def test_decoded_images_resize_once(tiny_voc):
    from data.voc import VOCSegmentation

    voc = VOCSegmentation(tiny_voc, "train")
    ds = DecodedImages(voc, 16, cache_mib=1)
    first = ds[1]
    assert first["image"].dtype == torch.uint8 and first["image"].shape == (3, 16, 16) and first["index"] == 1
    assert ds[1] is first and ds.cache.prepared == 1  # kept, not decoded again
    assert not DecodedImages(voc, 16, cache_mib=0).cache.enabled


def test_cores_go_to_torch_when_the_split_is_cached(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert plan_workers(-1, 2, cached=True) == 0 and plan_workers(-1, 2, cached=False) == 2
    assert plan_workers(3, 2, cached=True) == 3  # explicit wins
    assert plan_threads(0, 0, cores=2) == 2 and plan_threads(0, 1, cores=2) == 1 and plan_threads(0, 4, cores=2) == 1
    assert plan_threads(3, 0, cores=2) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert plan_threads(0, 0, cores=2) == 1 and plan_threads(2, 0, cores=2) == 2


def test_segmenter_samples_are_the_same_cached_or_not(tiny_voc):
    from data.voc import VOCSegmentation
    from segment.data import SegTrainDataset

    voc = VOCSegmentation(tiny_voc, "train")
    plain = SegTrainDataset(voc, 24, supervision="full", seed=3)
    cached = SegTrainDataset(voc, 24, supervision="full", seed=3, cache_mib=1)
    assert cached.cache.enabled and not plain.cache.enabled
    assert len(voc) == 3
    keys = [(e, i) for e in range(3) for i in range(len(voc))]
    for key in keys:
        a, b = plain[key], cached[key]
        assert a["flipped"] == b["flipped"] and torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    assert cached.cache.prepared == len(voc) and plain.cache.prepared == len(keys)
    assert any(plain[k]["flipped"] for k in keys) and not all(plain[k]["flipped"] for k in keys)
