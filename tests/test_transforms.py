"""Joint image/mask transforms keep the two aligned; crops pad masks with 255."""

from __future__ import annotations

import numpy as np
import torch

from data.transforms import (Normalize, RandomCrop, RandomHorizontalFlip, RandomScale, Resize, denormalize,
                             eval_transform, train_transform)


def _sample(h=30, w=40):
    mask = np.zeros((h, w), dtype=np.uint8)
    mask[5:20, 10:30] = 7
    mask[:, :3] = 255
    image = np.zeros((h, w, 3), dtype=np.uint8)
    image[..., 0] = np.where(mask == 255, 250, mask * 30)  # red channel encodes the mask
    image[..., 1] = np.arange(w)[None, :] * 5  # green encodes the column
    return {"id": "x", "image": image, "mask": mask, "label": np.eye(20, dtype=np.float32)[6]}


def _aligned(s):
    expected = np.where(s["mask"] == 255, 250, s["mask"].astype(int) * 30)
    return np.array_equal(s["image"][..., 0].astype(int), expected)


def test_crop_pads_mask_with_void_and_image_with_fill():
    torch.manual_seed(0)
    out = RandomCrop(50, fill=(1, 2, 3))(_sample())
    assert out["image"].shape == (50, 50, 3) and out["mask"].shape == (50, 50)
    pad = np.all(out["image"] == [1, 2, 3], axis=-1)
    assert pad.sum() == 50 * 50 - 30 * 40
    assert np.all(out["mask"][pad] == 255)


def test_crop_within_and_alignment():
    torch.manual_seed(1)
    out = RandomCrop(20)(_sample())
    assert out["image"].shape == (20, 20, 3) and _aligned(out)


def test_flip_moves_image_and_mask_together():
    s = _sample()
    out = RandomHorizontalFlip(p=1.0)(s)
    assert _aligned(out)
    np.testing.assert_array_equal(out["mask"], s["mask"][:, ::-1])
    assert out["image"][0, 0, 1] == s["image"][0, -1, 1]
    assert RandomHorizontalFlip(p=0.0)(s) is s


def test_scale_keeps_mask_labels():
    torch.manual_seed(2)
    s = _sample()
    out = RandomScale(1.5, 1.5)(s)
    assert out["image"].shape[:2] == out["mask"].shape == (45, 60)
    assert set(np.unique(out["mask"])) == {0, 7, 255}  # nearest: no new labels
    out = Resize((15, 20))(s)
    assert out["mask"].shape == (15, 20)


def test_normalize_and_inverse():
    s = _sample()
    t = Normalize()(s)
    assert t["image"].shape == (3, 30, 40) and t["image"].dtype == torch.float32
    assert t["mask"].dtype == torch.int64 and t["label"].dtype == torch.float32
    back = denormalize(t["image"])
    assert np.abs(back.astype(int) - s["image"].astype(int)).max() <= 1


def test_train_transform_is_reproducible_from_seed():
    torch.manual_seed(3)
    a = train_transform(24)(_sample())
    torch.manual_seed(3)
    b = train_transform(24)(_sample())
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    assert a["image"].shape == (3, 24, 24)
    e = eval_transform()(_sample())
    assert e["image"].shape == (3, 30, 40)
