"""mIoU from one confusion matrix: hand-computed cases, scikit-learn agreement, edge cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import jaccard_score

from eval.segmentation import SegmentationMeter, confusion_matrix, iou_per_class, scores_from_confusion


def test_hand_computed_confusion_and_iou():
    gt = np.array([[0, 0, 1], [1, 2, 255]])
    pred = np.array([[0, 1, 1], [2, 2, 0]])
    cm = confusion_matrix(pred, gt, num_classes=3)
    # rows = truth, columns = prediction; the 255 pixel is not counted
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 1, 1], [0, 0, 1]])
    s = scores_from_confusion(cm, ("bg", "a", "b"))
    np.testing.assert_allclose(s.iou, [1 / 2, 1 / 3, 1 / 2])
    assert s.miou == pytest.approx(4 / 9)
    assert s.pixel_accuracy == pytest.approx(3 / 5)
    assert s.mean_class_accuracy == pytest.approx((1 / 2 + 1 / 2 + 1) / 3)
    assert s.pixels == 5


def test_class_absent_from_truth_and_prediction_is_left_out():
    gt = np.array([0, 0, 2, 2])
    pred = np.array([0, 2, 2, 2])
    s = scores_from_confusion(confusion_matrix(pred, gt, 21))
    assert np.isnan(s.iou[1]) and np.isnan(s.iou[20])
    assert s.miou == pytest.approx((1 / 2 + 2 / 3) / 2)
    d = s.to_dict()
    assert d["per_class_iou"]["aeroplane"] is None and d["per_class_iou"]["background"] == pytest.approx(0.5)
    assert "aeroplane" in s.table() and "mIoU" in s.table()


def test_class_only_predicted_counts_as_zero():
    gt = np.array([0, 0, 0, 0])
    pred = np.array([0, 0, 0, 5])
    s = scores_from_confusion(confusion_matrix(pred, gt, 21))
    assert s.iou[5] == 0.0 and s.miou == pytest.approx((3 / 4 + 0) / 2)


def test_all_pixels_ignored():
    gt = np.full((4, 4), 255)
    pred = np.zeros((4, 4), dtype=int)
    meter = SegmentationMeter()
    meter.update(pred, gt)
    s = meter.scores()
    assert s.pixels == 0 and np.isnan(s.miou) and np.isnan(s.pixel_accuracy)
    assert s.to_dict()["miou"] is None


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_sklearn_jaccard(seed):
    rng = np.random.default_rng(seed)
    gt = rng.integers(0, 6, size=(3, 17, 23))
    gt[rng.random(gt.shape) < 0.15] = 255
    pred = rng.integers(0, 6, size=gt.shape)
    meter = SegmentationMeter(num_classes=6)
    for p, g in zip(pred, gt):  # accumulated image by image
        meter.update(torch.from_numpy(p), torch.from_numpy(g))
    keep = gt != 255
    ref = jaccard_score(gt[keep], pred[keep], labels=list(range(6)), average=None)
    np.testing.assert_allclose(meter.scores().iou, ref)
    assert meter.scores().miou == pytest.approx(ref.mean())
    # one matrix over the split, not a mean of per-image mIoUs
    np.testing.assert_array_equal(meter.confusion, confusion_matrix(pred, gt, 6))


def test_merge_adds_counts():
    a, b = SegmentationMeter(3), SegmentationMeter(3)
    a.update(np.array([0, 1]), np.array([0, 1]))
    b.update(np.array([2]), np.array([1]))
    a.merge(b)
    np.testing.assert_array_equal(a.confusion, confusion_matrix(np.array([0, 1, 2]), np.array([0, 1, 1]), 3))


def test_bad_inputs():
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"predicted values \[21\] outside 0..20"):
        confusion_matrix(np.array([21]), np.array([0]))
    with pytest.raises(ValueError, match=r"ground truth values \[30\]"):
        confusion_matrix(np.array([0]), np.array([30]))
    # a prediction outside range at an ignored pixel is not counted
    assert confusion_matrix(np.array([21]), np.array([255])).sum() == 0


def test_iou_per_class_nan_only_when_union_empty():
    cm = np.array([[2, 0, 0], [0, 0, 0], [0, 0, 0]])
    iou = iou_per_class(cm)
    assert iou[0] == 1.0 and np.isnan(iou[1]) and np.isnan(iou[2])
