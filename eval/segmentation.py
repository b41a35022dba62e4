"""Segmentation metrics from one confusion matrix accumulated over a split (docs/method.md §6).

``IoU_c = TP / (TP + FP + FN)``; mIoU is the mean over the classes present in the ground
truth or the prediction (a class absent from both has no IoU and is left out); ground-truth
pixels labelled 255 are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from data.classes import IGNORE_INDEX, NUM_CLASSES, VOC_CLASSES


def _as_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def confusion_matrix(
    pred: Any, gt: Any, num_classes: int = NUM_CLASSES, ignore_index: int = IGNORE_INDEX
) -> np.ndarray:
    """(num_classes, num_classes) int64 counts, rows = ground truth, columns = prediction.

    Pixels whose ground truth is ``ignore_index`` are skipped. A prediction outside
    ``0..num_classes-1`` at a counted pixel, or a ground-truth value that is neither a class nor
    ``ignore_index``, is an error.
    """
    pred, gt = _as_numpy(pred), _as_numpy(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth shape {gt.shape}")
    gt = gt.astype(np.int64).ravel()
    pred = pred.astype(np.int64).ravel()
    keep = gt != ignore_index
    gt, pred = gt[keep], pred[keep]
    if gt.size and (gt.min() < 0 or gt.max() >= num_classes):
        bad = np.unique(gt[(gt < 0) | (gt >= num_classes)])
        raise ValueError(f"ground truth values {bad.tolist()} outside 0..{num_classes - 1} and not {ignore_index}")
    if pred.size and (pred.min() < 0 or pred.max() >= num_classes):
        bad = np.unique(pred[(pred < 0) | (pred >= num_classes)])
        raise ValueError(f"predicted values {bad.tolist()} outside 0..{num_classes - 1}")
    return np.bincount(gt * num_classes + pred, minlength=num_classes**2).reshape(num_classes, num_classes)


def iou_per_class(cm: np.ndarray) -> np.ndarray:
    """IoU of each class from a confusion matrix; NaN for a class absent from truth and prediction."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan)


@dataclass
class SegmentationScores:
    """The result over a split: per-class IoU (NaN = class absent), mIoU, pixel accuracy."""

    iou: np.ndarray
    miou: float
    pixel_accuracy: float
    mean_class_accuracy: float
    pixels: int
    class_names: tuple[str, ...]
    confusion: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        return {
            "miou": _nan_to_none(self.miou),
            "pixel_accuracy": _nan_to_none(self.pixel_accuracy),
            "mean_class_accuracy": _nan_to_none(self.mean_class_accuracy),
            "pixels": int(self.pixels),
            "per_class_iou": {n: _nan_to_none(v) for n, v in zip(self.class_names, self.iou.tolist())},
            "confusion_matrix": self.confusion.tolist(),
        }

    def table(self) -> str:
        """A printed per-class table, then the summary rows."""
        width = max(len(n) for n in self.class_names)
        lines = [f"{'class':<{width}}  {'IoU':>6}", "-" * (width + 8)]
        for name, v in zip(self.class_names, self.iou):
            lines.append(f"{name:<{width}}  {'-':>6}" if np.isnan(v) else f"{name:<{width}}  {100 * v:6.2f}")
        lines.append("-" * (width + 8))
        lines.append(f"{'mIoU':<{width}}  {_pct(self.miou):>6}")
        lines.append(f"{'pixel acc':<{width}}  {_pct(self.pixel_accuracy):>6}")
        return "\n".join(lines)


def _pct(v: float) -> str:
    return "-" if np.isnan(v) else f"{100 * v:.2f}"


def _nan_to_none(v: float) -> float | None:
    return None if v is None or np.isnan(v) else float(v)


def scores_from_confusion(cm: np.ndarray, class_names: Sequence[str] = VOC_CLASSES) -> SegmentationScores:
    """mIoU (over classes present in truth or prediction), pixel and mean class accuracy."""
    cm = np.asarray(cm, dtype=np.int64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion matrix must be square, got shape {cm.shape}")
    if len(class_names) != cm.shape[0]:
        raise ValueError(f"{len(class_names)} class names for a {cm.shape[0]}-class confusion matrix")
    iou = iou_per_class(cm)
    total = int(cm.sum())
    gt_count = cm.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        class_acc = np.where(gt_count > 0, np.diag(cm) / np.where(gt_count > 0, gt_count, 1), np.nan)
    miou = float(np.nanmean(iou)) if np.any(~np.isnan(iou)) else float("nan")
    pixel_acc = float(np.trace(cm) / total) if total else float("nan")
    mean_acc = float(np.nanmean(class_acc)) if np.any(~np.isnan(class_acc)) else float("nan")
    return SegmentationScores(iou, miou, pixel_acc, mean_acc, total, tuple(class_names), cm)


class SegmentationMeter:
    """Accumulates one confusion matrix over a split: ``update`` per image, ``scores`` at the end."""

    def __init__(self, num_classes: int = NUM_CLASSES, ignore_index: int = IGNORE_INDEX,
                 class_names: Sequence[str] | None = None):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names = tuple(class_names) if class_names is not None else (
            VOC_CLASSES if num_classes == NUM_CLASSES else tuple(f"class_{i}" for i in range(num_classes))
        )
        self.confusion = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, pred: Any, gt: Any) -> None:
        self.confusion += confusion_matrix(pred, gt, self.num_classes, self.ignore_index)

    def merge(self, other: "SegmentationMeter") -> None:
        """Add another meter's counts (e.g. from another process)."""
        self.confusion += other.confusion

    def scores(self) -> SegmentationScores:
        return scores_from_confusion(self.confusion, self.class_names)
