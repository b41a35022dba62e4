"""How good attention maps are as localization cues (docs/method.md §6): the τ-sweep and SEC seed precision/recall.

- τ-sweep (the WSSS protocol): per image, the max-normalised maps of its ground-truth classes and
  a constant background plane τ give a pseudo-label by argmax (:func:`cues.sec.pseudo_label`);
  one 21×21 confusion matrix per τ is accumulated over the split (void 255 skipped), each scored
  with :func:`eval.segmentation.scores_from_confusion` (mIoU over the classes present). τ runs
  over ``[eval.tau_min, eval.tau_max]`` by ``eval.tau_step`` (0.05..0.95 by 0.01); the best τ is
  the one with the highest mIoU (the smallest such τ on a tie). A best τ at either end of the
  sweep is flagged (``tau_at_edge``): the sweep is too narrow to show where the maps' best τ lies.
- Seeds: the SEC cues (:func:`cues.sec.cues_on_grid`, on ``cues.grid``) brought back to image size
  by nearest neighbour and compared with the ground truth, per label (background included):
  precision = seeded pixels of the right class / seeded pixels, recall = seeded pixels of the
  right class / ground-truth pixels of the class (void pixels left out of both). A pixel with
  several cues counts for each of them.

The per-image work runs in DataLoader workers; everything is summed in the main process.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm import tqdm

from data.classes import IGNORE_INDEX, NUM_CLASSES, VOC_CLASSES
from sharpen_core.errors import ConfigError, DatasetError
from data.voc import VOCSegmentation
from eval.segmentation import scores_from_confusion
from sharpen_core.layout import QUALITY_SUBDIR
from sharpen_core.stage_records import QualityRecord

from .extract import gt_maps, load_maps, map_path, missing_maps, read_extract_params
from .sec import best_class, cue_params, image_cues, nearest_resize



# --------------------------------------------------------------------------- pure parts

def tau_values(tau_min: float = 0.05, tau_max: float = 0.60, tau_step: float = 0.01) -> np.ndarray:
    """The thresholds ``tau_min, tau_min + step, ..., tau_max`` as float32 (the maps' precision)."""
    if tau_step <= 0 or tau_min > tau_max or tau_min < 0:
        raise ConfigError(f"eval.tau_min/tau_max/tau_step: τ range [{tau_min}, {tau_max}] by {tau_step}: "
                          "expected 0 <= tau_min <= tau_max and tau_step > 0")
    n = int(np.floor((tau_max - tau_min) / tau_step + 1e-6)) + 1
    return np.round(tau_min + tau_step * np.arange(n), 6).astype(np.float32)


def sweep_confusions(value: np.ndarray, label: np.ndarray, gt: np.ndarray, taus: np.ndarray,
                     num_labels: int = NUM_CLASSES, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """(T, L, L) confusion matrices (rows truth, columns prediction) of the pseudo-labels at every τ.

    ``value``/``label`` are :func:`cues.sec.best_class`'s: the prediction at τ is ``label`` where
    ``value > τ``, else background, exactly :func:`cues.sec.pseudo_label`. One ``bincount`` per image:
    each pixel is binned by how many thresholds lie below its value.
    """
    gt = np.asarray(gt).astype(np.int64).ravel()
    keep = gt != ignore_index
    g = gt[keep]
    if g.size and (g.min() < 0 or g.max() >= num_labels):
        bad = np.unique(g[(g < 0) | (g >= num_labels)])
        raise ValueError(f"ground truth values {bad.tolist()} outside 0..{num_labels - 1} and not {ignore_index}")
    v = np.asarray(value, dtype=np.float32).ravel()[keep]
    lab = np.asarray(label, dtype=np.int64).ravel()[keep]
    taus = np.asarray(taus, dtype=np.float32)
    t = taus.size
    below = np.searchsorted(taus, v, side="left")  # how many τ lie strictly below the value
    hist = np.bincount((below * num_labels + g) * num_labels + lab,
                       minlength=(t + 1) * num_labels * num_labels).reshape(t + 1, num_labels, num_labels)
    at_least = hist[::-1].cumsum(0)[::-1]  # at_least[s] = pixels with at least s thresholds below them
    fg = at_least[1:].copy()  # fg[i]: value > τ_i
    truth = np.bincount(g, minlength=num_labels)
    fg[:, :, 0] += truth[None, :] - fg.sum(2)
    return fg


def seed_counts(cues: np.ndarray, gt: np.ndarray, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """(3, L) counts per label: seeded pixels, correctly seeded pixels, ground-truth pixels (void left out)."""
    cues = np.asarray(cues, dtype=bool)
    gt = np.asarray(gt).astype(np.int64)
    if cues.shape[1:] != gt.shape:
        raise ValueError(f"cues are {cues.shape[1:]}, the ground truth {gt.shape}; expected the same size")
    num_labels = cues.shape[0]
    valid = gt != ignore_index
    seeded = (cues & valid).reshape(num_labels, -1).sum(1)
    g = np.where(valid, gt, 0)
    hit = np.take_along_axis(cues, g[None], 0)[0] & valid
    correct = np.bincount(g[hit], minlength=num_labels)
    truth = np.bincount(gt[valid], minlength=num_labels)
    return np.stack([seeded, correct[:num_labels], truth[:num_labels]]).astype(np.int64)


def seed_scores(counts: np.ndarray, class_names: Sequence[str] = VOC_CLASSES) -> dict[str, Any]:
    """Per-class seed precision and recall (None where undefined) and their means over defined classes."""
    seeded, correct, truth = (np.asarray(c, dtype=np.float64) for c in counts)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(seeded > 0, correct / np.where(seeded > 0, seeded, 1), np.nan)
        recall = np.where(truth > 0, correct / np.where(truth > 0, truth, 1), np.nan)

    def mean(x: np.ndarray) -> float | None:
        return float(np.nanmean(x)) if np.any(~np.isnan(x)) else None

    def listed(x: np.ndarray) -> dict[str, float | None]:
        return {n: None if np.isnan(v) else float(v) for n, v in zip(class_names, x)}

    return {"precision": listed(precision), "recall": listed(recall),
            "mean_precision": mean(precision), "mean_recall": mean(recall),
            "mean_precision_fg": mean(precision[1:]), "mean_recall_fg": mean(recall[1:]),
            "seeded_pixels": counts[0].tolist(), "correct_pixels": counts[1].tolist(),
            "truth_pixels": counts[2].tolist()}


def best_tau(taus: np.ndarray, mious: Sequence[float]) -> int:
    """Index of the highest mIoU (the first, i.e. smallest τ, on a tie; NaN never wins)."""
    values = np.asarray(mious, dtype=np.float64)
    if np.all(np.isnan(values)):
        return 0
    return int(np.nanargmax(values))


def tau_at_edge(taus: np.ndarray, best: int) -> bool:
    """Whether the best τ (index ``best``) is the first or last of a sweep of more than one τ
    (docs/method.md §6): the curve may still rise beyond it, so the sweep is too narrow."""
    n = int(np.asarray(taus).size)
    return n > 1 and best in (0, n - 1)


def image_quality(maps: np.ndarray, classes: Sequence[int], gt: np.ndarray, taus: np.ndarray,
                  params: dict[str, Any], image_id: str) -> tuple[np.ndarray, np.ndarray]:
    """(T, L, L) τ-sweep confusions and (3, L) seed counts of one image."""
    value, label = best_class(maps, classes)
    confusions = sweep_confusions(value, label, gt, taus)
    cues = image_cues(maps, classes, image_id, params)
    if cues.shape[1:] != gt.shape:
        cues = nearest_resize(cues, gt.shape)
    return confusions, seed_counts(cues, gt)


# --------------------------------------------------------------------------- the stage

class _QualityItems(torch.utils.data.Dataset):
    def __init__(self, dataset: VOCSegmentation, maps_dir: Path, taus: np.ndarray, params: dict[str, Any]):
        self.dataset, self.maps_dir, self.taus, self.params = dataset, maps_dir, taus, params

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, Any]:
        sample = self.dataset.load(i)
        path = map_path(self.maps_dir, sample["id"])
        m = load_maps(path)
        if m["id"] != sample["id"] or m["maps"].shape[1:] != sample["mask"].shape:
            raise DatasetError(path, f"maps of {m['id']!r} are {m['maps'].shape[1:]}; expected those of "
                                     f"{sample['id']!r} at its mask's size {sample['mask'].shape}")
        maps, classes = gt_maps(m, path)
        conf, seeds = image_quality(maps, classes, sample["mask"], self.taus, self.params, sample["id"])
        return {"confusions": conf, "seeds": seeds}


def _throughput(maps_dir: Path) -> float | None:
    """Images/s of the extraction runs recorded in ``maps_dir`` (all extracted images / all their seconds)."""
    images, seconds = 0, 0.0
    for path in maps_dir.glob("extract_run*.json"):
        try:
            rec = json.loads(path.read_text())
        except ValueError:
            continue
        if rec.get("extracted"):
            images += rec["extracted"]
            seconds += rec["seconds"]
    return images / seconds if seconds > 0 else None


def evaluate_cues(cfg: Any, maps_dir: str | Path, split: str | None = None, out_dir: str | Path | None = None,
                  progress: bool = True) -> dict[str, Any]:
    """Score the maps of ``maps_dir`` on ``split`` (default: the split they were extracted for).

    Writes ``quality.json``, ``tau_curve.csv`` (its exact numbers) and ``tau_curve.png``/``.pdf`` to
    ``out_dir`` (default MAPS_DIR/quality) and returns the result.
    """
    from sharpen_core.plots import Line, line_figure, write_csv

    maps_dir = Path(maps_dir)
    extract = read_extract_params(maps_dir)
    split = split or extract["split"]
    params = cue_params(cfg.cues)
    taus = tau_values(cfg.eval.tau_min, cfg.eval.tau_max, cfg.eval.tau_step)
    dataset = VOCSegmentation(cfg.data.root, split)
    if not dataset.masks:
        raise DatasetError(dataset.list_path, f"split {split!r} has no ground-truth masks; cue quality needs a "
                                              "split with masks (e.g. train or val)")
    missing = missing_maps(maps_dir, dataset.ids)
    if missing:
        raise DatasetError(map_path(maps_dir, missing[0]),
                           f"{len(missing)} of {len(dataset)} images of split {split!r} have no map file here; "
                           f"run `sharpen cues extract --split {split}` into {maps_dir} (it resumes)")
    items = _QualityItems(dataset, maps_dir, taus, params)
    workers = cfg.data.num_workers if len(dataset) > 16 else 0
    loader = torch.utils.data.DataLoader(items, batch_size=None, shuffle=False, num_workers=workers)
    t0 = time.perf_counter()
    confusions = np.zeros((taus.size, NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    seeds = np.zeros((3, NUM_CLASSES), dtype=np.int64)
    for item in tqdm(loader, total=len(items), desc=f"cue quality {extract['mechanism']} on {split}", unit="img",
                     disable=not progress, leave=False):
        confusions += np.asarray(item["confusions"])
        seeds += np.asarray(item["seeds"])
    curve = [scores_from_confusion(cm).miou for cm in confusions]
    best = best_tau(taus, curve)
    scores = scores_from_confusion(confusions[best])
    record = QualityRecord(
        stage="cues evaluate", maps_dir=str(maps_dir), split=split, images=len(dataset),
        mechanism=extract["mechanism"], variant=extract.get("variant"), extract=extract, cues=params,
        tau=[round(float(t), 6) for t in taus], miou=[None if np.isnan(v) else float(v) for v in curve],
        best_tau=round(float(taus[best]), 6), best_miou=scores.miou, tau_at_edge=tau_at_edge(taus, best),
        per_class_iou={n: None if np.isnan(v) else float(v) for n, v in zip(VOC_CLASSES, scores.iou)},
        seeds=seed_scores(seeds), extract_images_per_second=_throughput(maps_dir),
        seconds=time.perf_counter() - t0, config=cfg.to_dict(),
    )
    out_dir = Path(out_dir) if out_dir is not None else maps_dir / QUALITY_SUBDIR
    record.write(out_dir / QualityRecord.FILE)
    result = record.to_json()
    write_csv(out_dir / "tau_curve.csv", ("tau", "miou"), list(zip(result["tau"], result["miou"])))
    line_figure(out_dir / "tau_curve", [Line(extract["mechanism"], result["tau"], result["miou"], mark=best,
                                             mark_label=f"(best τ={result['tau'][best]:.2f}: "
                                                        f"{100 * result['best_miou']:.1f})")],
                title=f"Pseudo-label mIoU against the background threshold ({extract['mechanism']}, {split})",
                xlabel="background threshold τ (fraction of the map maximum)", ylabel="pseudo-label mIoU (%)",
                scale=100.0)
    return result


# --------------------------------------------------------------------------- tables

def _pct(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{100 * v:.2f}"


def format_quality(result: dict[str, Any]) -> str:
    """Per-class IoU at the best τ and seed precision/recall, then the summary."""
    seeds = result["seeds"]
    lines = [f"{result['mechanism']} ({result.get('variant')}) on {result['split']}, {result['images']} images", "",
             f"{'class':<12} {'IoU@best':>8} {'seed P':>7} {'seed R':>7}", "-" * 37]
    for name in VOC_CLASSES:
        iou, p, r = result["per_class_iou"][name], seeds["precision"][name], seeds["recall"][name]
        if iou is None and p is None and r is None:
            continue
        lines.append(f"{name:<12} {_pct(iou):>8} {_pct(p):>7} {_pct(r):>7}")
    lines.append("-" * 37)
    lines.append(f"{'mean':<12} {_pct(result['best_miou']):>8} {_pct(seeds['mean_precision']):>7} "
                 f"{_pct(seeds['mean_recall']):>7}")
    lines.append(f"best tau {result['best_tau']:.2f}: mIoU {_pct(result['best_miou'])}" +
                 (f" -- {EDGE_NOTE}" if result.get("tau_at_edge") else ""))
    return "\n".join(lines)


EDGE_NOTE = "at an edge of the sweep: widen eval.tau_min..eval.tau_max"


def comparison_table(results: Sequence[dict[str, Any]]) -> str:
    """Side-by-side: mechanism, best τ, mIoU, mean seed precision and recall, extraction images/s."""
    lines = [f"{'mechanism':<12} {'variant':<14} {'best tau':>8} {'mIoU':>6} {'seed P':>7} {'seed R':>7} "
             f"{'images/s':>8}", "-" * 68]
    for r in results:
        ips = r.get("extract_images_per_second")
        edge = "*" if r.get("tau_at_edge") else " "
        lines.append(f"{r['mechanism']:<12} {str(r.get('variant')):<14} {r['best_tau']:>7.2f}{edge} "
                     f"{_pct(r['best_miou']):>6} {_pct(r['seeds']['mean_precision']):>7} "
                     f"{_pct(r['seeds']['mean_recall']):>7} {'-' if ips is None else f'{ips:.1f}':>8}")
    if any(r.get("tau_at_edge") for r in results):
        lines.append(f"* best tau {EDGE_NOTE}")
    return "\n".join(lines)
