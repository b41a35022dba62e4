"""Score predicted masks against a split's ground truth (one confusion matrix per split, docs/method.md §6).

Predictions come as

* a folder of ``<id>.png`` label maps (palette or grey PNG, values ``0..20``, the image's size);
  other files in it are ignored, so one folder may serve several splits;
* a VOC test-server submission (docs/method.md §7): a folder holding
  ``results/VOC2012/Segmentation/comp6_test_cls/<id>.png`` or the ``.tar.gz`` of it. A
  submission is checked as the evaluation server would: exactly the split's images, each the
  image's size, values 0-20 only (no 255); anything else is an error naming the member.

Ground truth: ``SegmentationClass/`` (``SegmentationClassAug/`` for ``train_aug``) through
:class:`data.voc.VOCSegmentation`. The ``test`` split has none in VOC (its masks stay on the
server); the built-in dataset holds its test masks back in ``SegmentationClassTest/``, which
no training reader uses; :func:`ground_truth` reads them only here, to score test predictions
as the server would.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
from tqdm import tqdm

from sharpen_core.errors import DatasetError
from data.io import read_mask
from data.voc import VOCSegmentation

from .prediction_files import read_prediction
from .segmentation import SegmentationMeter, SegmentationScores
from .submission import SUBMISSION_SUBDIR, scan_submission

HELD_BACK_TEST_MASKS = "SegmentationClassTest"
"""Folder of the built-in dataset's test masks (never read by training or cue code)."""


# --------------------------------------------------------------------------- ground truth

@dataclass
class GroundTruth:
    """The masks of a split: ``mask(id)`` reads one (values 0..num_classes-1 or 255)."""

    root: Path
    split: str
    ids: list[str]
    mask_dir: Path
    num_classes: int
    class_names: tuple[str, ...]
    source: str = field(default="")  # what the masks are, for records and messages

    def mask_path(self, image_id: str) -> Path:
        return self.mask_dir / f"{image_id}.png"

    def mask(self, image_id: str) -> np.ndarray:
        return read_mask(self.mask_path(image_id), self.num_classes)


def ground_truth(root: str | Path, split: str) -> GroundTruth:
    """The ground-truth masks of ``split``; for ``test``, the built-in dataset's held-back masks.

    Raises DatasetError when the split has none (VOC's test split: score it on the server).
    """
    ds = VOCSegmentation(root, split)
    if ds.masks:
        return GroundTruth(ds.root, split, list(ds.ids), ds.mask_dir, ds.num_classes, ds.class_names,
                           f"{ds.mask_dir.name}/")
    held = ds.root / HELD_BACK_TEST_MASKS
    if split == "test" and held.is_dir():
        present = {p.stem for p in held.glob("*.png")}
        for image_id in ds.ids:
            if image_id not in present:
                raise DatasetError(held / f"{image_id}.png", f"held-back test mask of id {image_id!r} listed in "
                                                             f"{ds.list_path.name} is missing")
        return GroundTruth(ds.root, split, list(ds.ids), held, ds.num_classes, ds.class_names,
                           f"{HELD_BACK_TEST_MASKS}/ (held-back test masks)")
    hint = (" (VOC keeps the test masks on its evaluation server: upload the .tar.gz written by "
            "`sharpen segment predict --submission` there)") if split == "test" else ""
    raise DatasetError(ds.root, f"split {split!r} has no ground-truth masks to evaluate against{hint}")


# --------------------------------------------------------------------------- scoring

def _new_meter(gt: GroundTruth) -> SegmentationMeter:
    return SegmentationMeter(gt.num_classes, class_names=gt.class_names)


def evaluate_prediction_folders(pred_dirs: Mapping[str, str | Path], root: str | Path | GroundTruth,
                                split: str = "val", progress: bool = True) -> dict[str, SegmentationScores]:
    """Scores of several folders of ``<id>.png`` over ``split`` at once (each mask read once)."""
    gt = root if isinstance(root, GroundTruth) else ground_truth(root, split)
    dirs = {name: Path(d) for name, d in pred_dirs.items()}
    for d in dirs.values():
        if not d.is_dir():
            raise DatasetError(d, "prediction folder not found")
    meters = {name: _new_meter(gt) for name in dirs}
    for image_id in tqdm(gt.ids, desc=f"eval {gt.split}", disable=not progress, leave=False):
        mask = gt.mask(image_id)
        for name, d in dirs.items():
            meters[name].update(read_prediction(d / f"{image_id}.png", mask.shape, gt.num_classes), mask)
    return {name: m.scores() for name, m in meters.items()}


def evaluate_prediction_folder(pred_dir: str | Path, root: str | Path, split: str = "val",
                               progress: bool = True) -> SegmentationScores:
    """mIoU of ``pred_dir/<id>.png`` over every image of ``split`` (which must have ground truth).

    ``pred_dir`` may also be a submission (tarball or folder): see :func:`evaluate_predictions`.
    """
    return evaluate_predictions(pred_dir, root, split, progress)


def evaluate_submission(path: str | Path, root: str | Path | GroundTruth, split: str = "test",
                        progress: bool = True) -> SegmentationScores:
    """mIoU of a test-server submission (folder or ``.tar.gz``), checked as the server would check it."""
    gt = root if isinstance(root, GroundTruth) else ground_truth(root, split)
    meter = _new_meter(gt)
    masks: dict[str, np.ndarray] = {}

    def shape_of(image_id: str) -> tuple[int, int]:
        masks[image_id] = gt.mask(image_id)
        return masks[image_id].shape

    bar = tqdm(total=len(gt.ids), desc=f"eval {gt.split}", disable=not progress, leave=False)
    try:
        for image_id, pred in scan_submission(path, gt.ids, shape_of, gt.num_classes, split=gt.split):
            meter.update(pred, masks.pop(image_id))
            bar.update(1)
    finally:
        bar.close()
    return meter.scores()


def is_submission(path: str | Path) -> bool:
    """Whether ``path`` is a submission (a file: the tarball; a folder holding the results/ layout)."""
    path = Path(path)
    return path.is_file() or (path / SUBMISSION_SUBDIR).is_dir()


def evaluate_predictions(pred: str | Path, root: str | Path, split: str = "val",
                         progress: bool = True) -> SegmentationScores:
    """Score ``pred``: a submission tarball or folder (strict, as the server), else a folder of ``<id>.png``."""
    pred = Path(pred)
    if not pred.exists():
        raise DatasetError(pred, "predictions not found; expected a folder of <id>.png or a submission .tar.gz")
    gt = ground_truth(root, split)
    if is_submission(pred):
        return evaluate_submission(pred, gt, split, progress)
    return evaluate_prediction_folders({"pred": pred}, gt, split, progress)["pred"]
