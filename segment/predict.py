"""Stage 3 prediction: multi-scale + flip class probabilities, dense-CRF refinement, palette PNGs.

For each image (docs/method.md §5, §7):

1. the whole image is resized to ``round(input_size · s)`` square for each scale ``s`` (training
   resizes the whole image to ``input_size`` square, with the same PIL bilinear filter), normalised
   with the ImageNet mean/std; the horizontally flipped copy goes in the same batch. Images of a
   chunk share each scale's batch (they all have the same square size);
2. the logits are upsampled bilinearly to the image size, soft-maxed, the flipped pass flipped
   back, and all passes averaged: ``p`` (L, H, W);
3. ``OUT/pred/<id>.png`` is ``argmax p`` (no CRF); ``OUT/pred_crf/<id>.png`` the argmax of the
   dense CRF (docs/method.md §5 parameters, full resolution, shrink factor ``segment.crf_predict_scale``:
   1 = DeepLab's VOC values, "image" = 500 / the image's long side) of ``p`` and the image.

The CRF runs over the labels present only (docs/method.md §5). At test time there are no image-level
labels, so "present" means: background plus every label that wins at least one pixel of the
un-refined argmax (the CRF can then only remove a label or move its boundaries, not invent one).
An image whose argmax holds a single label keeps it everywhere (a one-label CRF is the identity).
The CRF runs in a process pool (``segment.crf_processes``) on chunk ``k`` while the network
works on chunk ``k + 1``.

Outputs are written atomically; a rerun skips images whose wanted outputs exist and load (right
size, values in range). ``OUT/predict.json`` holds the parameters (written first: a rerun with
another checkpoint or other settings is refused rather than mixed) and, at the end, the record:
config, checkpoint and its meta, split, counts, seconds, images/s and, where the split has
ground truth, the scores of each output (mIoU, per-class IoU). The test split is never scored
here, even where its masks exist (the built-in ``SegmentationClassTest/``): score a submission
with ``sharpen eval segmentation`` as the evaluation server would.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass
from collections import deque
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from tqdm import tqdm

from sharpen_core.errors import CheckpointMismatch, ConfigError, DatasetError, UsageError
from data.io import write_mask
from sharpen_core.io import file_sha256
from data.transforms import IMAGENET_MEAN, IMAGENET_STD
from data.voc import VOCSegmentation
from eval.prediction_files import read_prediction
from sharpen_core.output_folder import claim_folder, remove_partial, sample_loader
from sharpen_core.stage_records import PredictRecord, read_predict_params, write_predict_running

PRED_SUBDIR = "pred"
CRF_SUBDIR = "pred_crf"
RECORD_NAME = PredictRecord.FILE
CRF_MODES = ("on", "off", "both")
MAX_PENDING_CHUNKS = 2  # CRF chunks in flight while the network runs ahead
_PATH_KEYS = ("checkpoint", "dataset")  # recorded, but not compared on a rerun


# --------------------------------------------------------------------------- probabilities

def scaled_square_inputs(image: np.ndarray, input_size: int, scales: Sequence[float],
                         mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> list[Tensor]:
    """The whole image resized to ``round(input_size · s)`` square per scale (PIL bilinear), normalised: (3, S, S)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.dtype} {image.shape}")
    pil = Image.fromarray(image)
    m = torch.tensor(list(mean), dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(list(std), dtype=torch.float32).view(3, 1, 1)
    out = []
    for scale in scales:
        side = max(1, round(input_size * scale))
        arr = image if image.shape[:2] == (side, side) else np.asarray(pil.resize((side, side), Image.BILINEAR))
        x = torch.from_numpy(np.array(arr, dtype=np.uint8, copy=True)).permute(2, 0, 1).float().div_(255)
        out.append((x - m) / s)
    return out


def _autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    if amp and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    return contextlib.nullcontext()


@torch.inference_mode()
def batch_probabilities(model: nn.Module, scaled: Sequence[Sequence[Tensor]], sizes: Sequence[tuple[int, int]],
                        flip: bool, device: torch.device | str, amp: bool = False) -> list[np.ndarray]:
    """Averaged softmax (L, H_i, W_i) float32 of each image from its scaled inputs ``scaled[i][k]`` (scale k).

    One forward per scale over all images (and their flipped copies); logits upsampled bilinearly
    to each image's size, soft-maxed, flipped passes flipped back, passes averaged.
    """
    device = torch.device(device)
    n = len(scaled)
    if n == 0:
        return []
    num_scales = len(scaled[0])
    acc: list[Tensor | None] = [None] * n
    for k in range(num_scales):
        x = torch.stack([scaled[i][k] for i in range(n)]).to(device, non_blocking=True)
        if flip:
            x = torch.cat([x, x.flip(-1)])
        with _autocast(device, amp):
            logits = model(x)
        if logits.ndim != 4 or logits.shape[0] != x.shape[0]:
            raise ValueError(f"the model returned {tuple(logits.shape)} for an input of {tuple(x.shape)}; "
                             "expected logits (B, L, h, w)")
        logits = logits.float()
        for i, (h, w) in enumerate(sizes):
            rows = logits[[i, n + i]] if flip else logits[i:i + 1]
            p = F.interpolate(rows, size=(h, w), mode="bilinear", align_corners=False).softmax(1)
            total = p[0] + p[1].flip(-1) if flip else p[0]
            acc[i] = total if acc[i] is None else acc[i] + total
    passes = num_scales * (2 if flip else 1)
    return [(a / passes).cpu().numpy().astype(np.float32, copy=False) for a in acc]


def predict_probabilities(model: nn.Module, image: np.ndarray, input_size: int, scales: Sequence[float],
                          flip: bool, device: torch.device | str, mean: Sequence[float] = IMAGENET_MEAN,
                          std: Sequence[float] = IMAGENET_STD, amp: bool = False) -> np.ndarray:
    """Class probabilities (L, H, W) float32 of one (H, W, 3) uint8 image, averaged over scales and flip.

    ``model`` should be in eval mode; it maps normalised (B, 3, S, S) to logits (B, L, h, w).
    """
    if not scales:
        raise ValueError("predict scales is empty; expected at least one scale, e.g. [1.0]")
    inputs = scaled_square_inputs(image, input_size, scales, mean, std)
    return batch_probabilities(model, [inputs], [image.shape[:2]], flip, device, amp)[0]


def crf_labels(argmax: np.ndarray) -> list[int]:
    """The labels the CRF runs over at test time: background plus every label winning a pixel."""
    return sorted({0, *np.unique(argmax).tolist()})


# --------------------------------------------------------------------------- the split

class _Items(torch.utils.data.Dataset):
    """Images to predict: id, the image, and its scaled inputs (made in loader workers)."""

    def __init__(self, dataset: VOCSegmentation, indices: Sequence[int], input_size: int, scales: Sequence[float],
                 mean: Sequence[float], std: Sequence[float]):
        self.dataset, self.indices = dataset, list(indices)
        self.input_size, self.scales, self.mean, self.std = input_size, list(scales), list(mean), list(std)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        from data.io import read_image

        image_id = self.dataset.ids[self.indices[i]]
        image = read_image(self.dataset.image_path(image_id))
        return {"id": image_id, "image": image,
                "scaled": scaled_square_inputs(image, self.input_size, self.scales, self.mean, self.std)}


def _image_shape(dataset: VOCSegmentation, image_id: str) -> tuple[int, int]:
    from eval.submission import image_size

    return image_size(dataset, image_id)


def _output_ok(path: Path, shape: tuple[int, int], num_classes: int) -> bool:
    if not path.is_file():
        return False
    try:
        read_prediction(path, shape, num_classes)
    except DatasetError:
        return False
    return True


def _jsonable(obj: Any) -> Any:
    """``obj`` with anything JSON cannot hold turned into its repr (checkpoint meta may hold objects)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return repr(obj)


def _crf_params_dict(params: Any) -> Any:
    if dataclasses.is_dataclass(params):
        return dataclasses.asdict(params)
    return _jsonable(getattr(params, "__dict__", params))


@dataclass
class Prediction:
    """What one prediction run of a split holds (from :func:`set_up_prediction`)."""

    cfg: Any
    checkpoint: Path
    dataset: VOCSegmentation
    out_dir: Path
    crf: str
    device: torch.device
    model: nn.Module
    meta: dict[str, Any]
    num_classes: int
    input_size: int
    scales: list[float]
    amp: bool
    crf_params: Any
    params: dict[str, Any]

    @property
    def folders(self) -> dict[str, bool]:
        """Output subfolder -> whether this run writes it."""
        return {PRED_SUBDIR: self.crf in ("off", "both"), CRF_SUBDIR: self.crf in ("on", "both")}


def set_up_prediction(cfg: Any, checkpoint: str | Path, split: str, out_dir: str | Path, crf: str) -> Prediction:
    """Check the settings, load the segmenter, and claim ``out_dir`` (its ``predict.json`` parameters)."""
    from sharpen_core.device import resolve_device

    from .crf import CRFParams
    from .models import load_segmenter

    if crf not in CRF_MODES:
        raise UsageError(f"crf {crf!r}: expected one of {', '.join(CRF_MODES)}")
    sc = cfg.segment
    scales = [float(s) for s in sc.predict_scales]
    if not scales or any(s <= 0 for s in scales):
        raise ConfigError(f"segment.predict_scales = {sc.predict_scales!r}; expected positive scales, e.g. [1.0]")
    out_dir = Path(out_dir)
    dataset = VOCSegmentation(cfg.data.root, split)
    device = resolve_device(cfg.run.device)
    model, meta = load_segmenter(checkpoint, device=device, num_classes=dataset.num_classes)
    model.to(device).eval()
    num_classes = int(meta.get("num_classes", dataset.num_classes))
    if num_classes != dataset.num_classes:
        raise CheckpointMismatch(f"{checkpoint}: the segmenter has {num_classes} classes; the dataset has "
                                 f"{dataset.num_classes}")
    input_size = int(meta.get("input_size") or sc.crop_size)
    amp = bool(sc.amp) and device.type == "cuda"
    crf_params = CRFParams.from_config(sc)
    params = {
        "checkpoint": str(Path(checkpoint).resolve()), "checkpoint_sha256": file_sha256(checkpoint),
        "dataset": str(dataset.root.resolve()), "split": split, "images": len(dataset),
        "input_size": input_size, "scales": scales, "flip": bool(sc.predict_flip),
        "mean": list(cfg.data.mean), "std": list(cfg.data.std), "crf_params": _crf_params_dict(crf_params),
        "crf_scale": sc.crf_predict_scale, "crf_labels": "background + labels of the un-refined argmax",
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    # paths may change (a moved run folder); the checkpoint's content (sha256) and settings may not
    claim_folder(out_dir, out_dir / RECORD_NAME, params, read_predict_params, "predictions",
                 [out_dir / PRED_SUBDIR, out_dir / CRF_SUBDIR], "*.png", ignore=_PATH_KEYS)
    # until this run ends, the record says so (an earlier run's counts and scores no longer hold)
    write_predict_running(out_dir / RECORD_NAME, params)
    p = Prediction(cfg, Path(checkpoint), dataset, out_dir, crf, device, model, meta, num_classes, input_size, scales,
                   amp, crf_params, params)
    for sub, wanted in p.folders.items():
        if wanted:
            (out_dir / sub).mkdir(exist_ok=True)
    return p


def images_to_predict(p: Prediction) -> list[int]:
    """Resume: the images whose outputs are missing or broken (a killed run's temp files removed)."""
    todo: list[int] = []
    for i, image_id in enumerate(p.dataset.ids):
        shape = _image_shape(p.dataset, image_id)
        if not all(_output_ok(p.out_dir / sub / f"{image_id}.png", shape, p.num_classes)
                   for sub, wanted in p.folders.items() if wanted):
            for sub, wanted in p.folders.items():
                if wanted:
                    remove_partial(p.out_dir / sub / f"{image_id}.png")
            todo.append(i)
    return todo


def predict_chunk(p: Prediction, batch: list[dict[str, Any]], pool: Any, bar: tqdm) -> tuple[list[str], Any] | None:
    """One step: the network on a chunk of images; write ``pred``; queue their CRF (the pending job, or None)."""
    want_plain, want_crf = p.folders[PRED_SUBDIR], p.folders[CRF_SUBDIR]
    probs = batch_probabilities(p.model, [s["scaled"] for s in batch], [s["image"].shape[:2] for s in batch],
                                bool(p.cfg.segment.predict_flip), p.device, p.amp)
    crf_ids, crf_images, crf_probs, crf_sets = [], [], [], []
    for sample, prob in zip(batch, probs):
        image_id = sample["id"]
        plain = prob.argmax(0).astype(np.uint8)
        if want_plain:
            write_mask(p.out_dir / PRED_SUBDIR / f"{image_id}.png", plain)
        if not want_crf:
            bar.update(1)
            continue
        labels = crf_labels(plain)
        if len(labels) == 1:  # background everywhere: a one-label CRF is the identity
            write_mask(p.out_dir / CRF_SUBDIR / f"{image_id}.png", plain)
            bar.update(1)
            continue
        crf_ids.append(image_id)
        crf_images.append(sample["image"])
        crf_probs.append(prob)
        crf_sets.append(labels)
    if not crf_ids:
        return None
    from .crf import predict_scale

    scales = [predict_scale(p.cfg.segment.crf_predict_scale, *image.shape[:2]) for image in crf_images]
    return crf_ids, pool.map_async(crf_images, crf_probs, crf_sets, scales)


def write_crf_chunk(p: Prediction, ids: list[str], job: Any, bar: tqdm) -> float:
    """Wait for a chunk's CRF and write ``pred_crf``; return the seconds spent waiting."""
    t = time.perf_counter()
    refined = job.get()
    waited = time.perf_counter() - t
    for image_id, q in zip(ids, refined):
        write_mask(p.out_dir / CRF_SUBDIR / f"{image_id}.png", np.asarray(q).argmax(0).astype(np.uint8))
        bar.update(1)
    return waited


def save_prediction(p: Prediction, record: PredictRecord, submission: bool, progress: bool) -> PredictRecord:
    """Score the outputs (splits with masks), write the submission if asked, and ``predict.json``."""
    split = p.dataset.split
    if p.dataset.masks:
        from eval.predictions import evaluate_prediction_folders

        scores = evaluate_prediction_folders({sub: p.out_dir / sub for sub, w in p.folders.items() if w},
                                             p.cfg.data.root, split, progress)
        record.miou = {sub: s.to_dict()["miou"] for sub, s in scores.items()}
        record.scores = {sub: s.to_dict() for sub, s in scores.items()}
        if progress:
            for sub, s in scores.items():
                print(f"[segment predict] {split} {sub}:\n{s.table()}")
    if submission:
        from .submission import write_submission

        source = p.out_dir / (CRF_SUBDIR if p.folders[CRF_SUBDIR] else PRED_SUBDIR)
        record.submission = str(write_submission(source, p.dataset, p.out_dir, progress=progress))
        record.submission_source = str(source)
    record.config = p.cfg.to_dict()
    record.write(p.out_dir / RECORD_NAME)
    return record


def predict_split(cfg: Any, checkpoint: str | Path, split: str, out_dir: str | Path, crf: str = "both",
                  submission: bool = False, progress: bool = True) -> PredictRecord:
    """Predict every image of ``split`` into ``out_dir/pred`` and/or ``out_dir/pred_crf``; return the record
    (as ``predict.json`` holds it).

    ``crf``: "off" writes ``pred`` only, "on" ``pred_crf`` only, "both" both. ``submission`` then
    writes the VOC test-server layout and tarball from ``pred_crf`` (``pred`` when crf is "off").
    """
    from .crf import CRFPool

    p = set_up_prediction(cfg, checkpoint, split, out_dir, crf)
    sc, out_dir = cfg.segment, p.out_dir
    todo = images_to_predict(p)
    skipped = len(p.dataset) - len(todo)

    chunk = max(1, int(sc.batch_size))
    items = _Items(p.dataset, todo, p.input_size, p.scales, cfg.data.mean, cfg.data.std)
    loader, workers = sample_loader(items, chunk, cfg.data.num_workers)
    bar = tqdm(total=len(todo), desc=f"predict {split}", unit="img", disable=not progress, leave=False)
    t0 = time.perf_counter()
    crf_seconds_waited = 0.0
    pending: deque[tuple[list[str], Any]] = deque()
    try:
        with (CRFPool(int(sc.crf_processes), p.crf_params) if p.folders[CRF_SUBDIR]
              else contextlib.nullcontext()) as pool:
            for batch in loader:
                job = predict_chunk(p, batch, pool, bar)
                if job is not None:
                    pending.append(job)
                while len(pending) > MAX_PENDING_CHUNKS:
                    crf_seconds_waited += write_crf_chunk(p, *pending.popleft(), bar)
            while pending:
                crf_seconds_waited += write_crf_chunk(p, *pending.popleft(), bar)
    finally:
        bar.close()
    seconds = time.perf_counter() - t0

    record = PredictRecord(
        stage="segment predict", status="done", params=p.params,
        checkpoint=str(checkpoint), meta=_jsonable(p.meta), split=split, crf=crf,
        outputs={sub: str(out_dir / sub) for sub, wanted in p.folders.items() if wanted},
        counts={"images": len(p.dataset), "predicted": len(todo), "skipped": skipped},
        seconds=seconds, images_per_second=len(todo) / seconds if todo and seconds > 0 else None,
        crf_wait_seconds=crf_seconds_waited, device=str(p.device), amp=p.amp,
        crf_processes=int(sc.crf_processes), loader_workers=workers, chunk=chunk,
    )
    save_prediction(p, record, submission, progress)
    if progress:
        rate = f", {record.images_per_second:.2f} images/s" if record.images_per_second else ""
        miou = "".join(f", mIoU {sub} {100 * v:.2f}" for sub, v in (record.miou or {}).items() if v is not None)
        print(f"[segment predict] {split}: {len(todo)} images predicted, {skipped} already done{rate}{miou} -> {out_dir}"
              + (f"; submission {record.submission}" if submission else ""))
    return record
