"""Score a folder of predicted masks against a split's ground truth (one confusion matrix)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from data.classes import NUM_CLASSES
from data.errors import DatasetError
from data.voc import VOCSegmentation

from .segmentation import SegmentationMeter, SegmentationScores


def read_prediction(path: Path, shape: tuple[int, int], num_classes: int = NUM_CLASSES) -> np.ndarray:
    """A predicted label PNG, checked: present, readable, single channel, the image's size, values < num_classes."""
    if not path.is_file():
        raise DatasetError(path, "prediction missing; expected one <id>.png per image of the split")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode not in ("P", "L"):
                raise DatasetError(path, f"prediction has PIL mode {im.mode!r}; expected a palette or grey PNG")
            pred = np.array(im, dtype=np.uint8)
    except DatasetError:
        raise
    except (OSError, SyntaxError, ValueError) as e:
        raise DatasetError(path, f"corrupt prediction PNG ({e})") from None
    if pred.shape != shape:
        raise DatasetError(path, f"prediction is {pred.shape[1]}x{pred.shape[0]} (WxH); expected the image size "
                                 f"{shape[1]}x{shape[0]}")
    if pred.max(initial=0) >= num_classes:
        bad = np.unique(pred[pred >= num_classes])
        raise DatasetError(path, f"prediction values {bad[:10].tolist()} out of range; expected 0-{num_classes - 1}")
    return pred


def evaluate_prediction_folder(pred_dir: str | Path, root: str | Path, split: str = "val",
                               progress: bool = True) -> SegmentationScores:
    """mIoU of ``pred_dir/<id>.png`` over every image of ``split`` (which must have ground truth)."""
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise DatasetError(pred_dir, "prediction folder not found")
    ds = VOCSegmentation(root, split)
    if not ds.masks:
        raise DatasetError(ds.root, f"split {split!r} has no ground-truth masks to evaluate against")
    meter = SegmentationMeter(ds.num_classes, class_names=ds.class_names)
    for i in tqdm(range(len(ds)), desc=f"eval {split}", disable=not progress, leave=False):
        image_id = ds.ids[i]
        gt = ds.load(i)["mask"]
        meter.update(read_prediction(pred_dir / f"{image_id}.png", gt.shape, ds.num_classes), gt)
    return meter.scores()
