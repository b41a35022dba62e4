"""How good attention maps are as localization cues (docs/method.md §6.2): the τ-sweep, SEC seed
precision/recall, and the floors (maps that do not localize).

- τ-sweep (the WSSS protocol): per image, the max-normalised maps of its ground-truth classes and
  a constant background plane τ give a pseudo-label by argmax (:func:`cues.sec.pseudo_label`);
  one 21×21 confusion matrix per τ is accumulated over the split (void 255 skipped), each scored
  with :func:`eval.segmentation.scores_from_confusion` (mIoU over the classes present). τ runs
  over ``[eval.tau_min, eval.tau_max]`` by ``eval.tau_step`` (0..1 by 0.01, both ends included). A
  pixel is foreground at τ when its best map value is strictly above τ (a tie with the plane is
  background): at τ = 0 every pixel where some class's map is positive takes that class, pixels
  where all maps are 0 stay background; at τ = 1 every pixel is background (maps lie in [0, 1]).
  The best τ is the one with the highest mIoU (the smallest such τ on a tie). It is flagged
  (``tau_at_edge``) when that mIoU is reached only at an end of the sweep.
- Seeds: the SEC cues (:func:`cues.sec.cues_on_grid`, on ``cues.grid``, at ``cues.fg_threshold``)
  brought back to image size by nearest neighbour and compared with the ground truth, per label
  (background included): precision = seeded pixels of the right class / seeded pixels, recall =
  seeded pixels of the right class / ground-truth pixels of the class (void pixels left out of
  both). A pixel with several cues counts for each of them. Beside them, ``seeds_at_best_tau``:
  the same seeds with the foreground threshold set to the maps' own best τ (background cue unchanged).
- Floors (:func:`evaluate_floors`): pseudo-mechanisms whose maps come from the image-level labels
  and the image size alone (no classifier), scored by the same code: ``floor-uniform`` (every
  present class's map is 1 everywhere) and ``floor-centre`` (a centred Gaussian, the same for every
  present class). Between equal maps the tie rule gives every pixel to the image's smallest label.

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

from .extract import gt_maps, image_labels, load_maps, map_path, missing_maps, read_extract_params
from .sec import (best_class, cue_params, grid_size, image_cues, max_normalize, nearest_resize,
                  resize_maps)

# the floors (docs/method.md §6.2): name -> kind of map
FLOORS: tuple[str, ...] = ("floor-uniform", "floor-centre")
# the centre prior's Gaussian σ as a fraction of the image side (per axis: σ_y = s·H, σ_x = s·W). The τ sweep
# picks the ellipse {g > τ} = {Σ (d/σ)² < −2 ln τ}, so σ only sets which τ gives which ellipse: with 0.25 the
# ellipse's half-axes run from the image's half-sides at τ = e⁻² ≈ 0.14 down to 3.5 % of the sides at τ = 0.99.
CENTRE_SIGMA = 0.25


# --------------------------------------------------------------------------- pure parts

def tau_values(tau_min: float = 0.0, tau_max: float = 1.0, tau_step: float = 0.01) -> np.ndarray:
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


def seed_sweep_counts(grid_maps: np.ndarray, classes: Sequence[int], background: np.ndarray, gt: np.ndarray,
                      taus: np.ndarray, num_labels: int = NUM_CLASSES,
                      ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """(T, 3, L) :func:`seed_counts` of the SEC seeds with the foreground threshold set to each τ.

    ``grid_maps`` are the maps on the cue grid, re-normalised (as :func:`cues.sec.cues_on_grid` makes them),
    ``background`` the background cue on the same grid (it does not depend on τ). Class ``c``'s seed at τ is
    where its grid map exceeds ``τ · max`` (float32, :func:`cues.sec.foreground_cues`'s comparison; an all-zero
    map gives none), brought to the ground truth's size by nearest neighbour. At ``τ = cues.fg_threshold``
    this is :func:`seed_counts` of the SEC cues.
    """
    grid_maps = np.asarray(grid_maps, dtype=np.float32)
    background = np.asarray(background, dtype=bool)
    gt = np.asarray(gt).astype(np.int64)
    taus = np.asarray(taus, dtype=np.float32)
    t = taus.size
    valid = gt != ignore_index
    truth = np.bincount(gt[valid], minlength=num_labels)[:num_labels]
    out = np.zeros((t, 3, num_labels), dtype=np.int64)
    out[:, 2] = truth[None]
    bg = nearest_resize(background, gt.shape) & valid
    out[:, 0, 0] = bg.sum()
    out[:, 1, 0] = (bg & (gt == 0)).sum()
    for m, c in zip(grid_maps, np.asarray(classes, dtype=np.int64).reshape(-1)):
        peak = m.max() if m.size else np.float32(0)
        if not peak > 0:
            continue
        thresholds = taus * np.float32(peak)  # float32 products, as foreground_cues
        v = nearest_resize(m, gt.shape)[valid]
        below = np.searchsorted(thresholds, v, side="left")  # thresholds strictly below the value
        for row, sel in ((0, slice(None)), (1, gt[valid] == c)):
            hist = np.bincount(below[sel], minlength=t + 1)
            out[:, row, c] += hist[::-1].cumsum()[::-1][1:]  # pixels above τ_i
    return out


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
            "seeded_pixels": np.asarray(counts[0]).tolist(), "correct_pixels": np.asarray(counts[1]).tolist(),
            "truth_pixels": np.asarray(counts[2]).tolist()}


def best_tau(taus: np.ndarray, mious: Sequence[float]) -> int:
    """Index of the highest mIoU (the first, i.e. smallest τ, on a tie; NaN never wins)."""
    values = np.asarray(mious, dtype=np.float64)
    if np.all(np.isnan(values)):
        return 0
    return int(np.nanargmax(values))


def tau_at_edge(taus: np.ndarray, best: int, mious: Sequence[float] | None = None) -> bool:
    """Whether the best τ (index ``best``) is the first or last of a sweep of more than one τ
    (docs/method.md §6.2). With ``mious`` (the curve), only when no τ inside the sweep reaches the same
    mIoU: a curve flat from an end inwards (the uniform floor's) is not flagged."""
    n = int(np.asarray(taus).size)
    if n <= 1 or best not in (0, n - 1):
        return False
    if mious is None:
        return True
    values = np.asarray(mious, dtype=np.float64)
    return not bool(np.any(values[1:-1] == values[best]))


def image_quality(maps: np.ndarray, classes: Sequence[int], gt: np.ndarray, taus: np.ndarray,
                  params: dict[str, Any], image_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(T, L, L) τ-sweep confusions, (3, L) SEC seed counts and (T, 3, L) seed counts at every τ of one image."""
    value, label = best_class(maps, classes)
    confusions = sweep_confusions(value, label, gt, taus)
    cues = image_cues(maps, classes, image_id, params)
    small = max_normalize(resize_maps(maps, grid_size(params["grid"], maps.shape[1:])))  # as cues_on_grid
    sweep = seed_sweep_counts(small, classes, cues[0], gt, taus)
    if cues.shape[1:] != gt.shape:
        cues = nearest_resize(cues, gt.shape)
    return confusions, seed_counts(cues, gt), sweep


def floor_maps(kind: str, classes: Sequence[int], size: tuple[int, int],
               sigma: float = CENTRE_SIGMA) -> np.ndarray:
    """(C, h, w) float32 maps of a floor (docs/method.md §6.2), one per entry of ``classes``, all equal.

    ``"floor-uniform"``: 1 everywhere. ``"floor-centre"``: the Gaussian
    ``exp(−((y − H/2)/(σH))²/2 − ((x − W/2)/(σW))²/2)`` at the pixel centres ``(i + ½, j + ½)``, divided by its
    largest value (peak exactly 1).
    """
    h, w = int(size[0]), int(size[1])
    n = len(classes)
    if kind == "floor-uniform":
        plane = np.ones((h, w), dtype=np.float32)
    elif kind == "floor-centre":
        if not sigma > 0:
            raise ValueError(f"centre prior σ must be positive, got {sigma}")
        y = ((np.arange(h) + 0.5 - h / 2) / (sigma * h)) ** 2
        x = ((np.arange(w) + 0.5 - w / 2) / (sigma * w)) ** 2
        g = np.exp(-0.5 * (y[:, None] + x[None, :])).astype(np.float32)
        plane = g / g.max()
    else:
        raise ValueError(f"unknown floor {kind!r}; expected one of {list(FLOORS)}")
    return np.broadcast_to(plane, (n, h, w)).copy()


def gain_over_floors(best_miou: float | None, floors: Sequence[dict[str, Any]]) -> float | None:
    """A mechanism's best cue mIoU minus the highest best mIoU of the floors (None when either is missing)."""
    values = [f["best_miou"] for f in floors if f.get("best_miou") is not None]
    if best_miou is None or not values:
        return None
    return float(best_miou) - max(values)


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
        conf, seeds, sweep = image_quality(maps, classes, sample["mask"], self.taus, self.params, sample["id"])
        return {"": {"confusions": conf, "seeds": seeds, "seed_sweep": sweep}}


class _FloorItems(torch.utils.data.Dataset):
    def __init__(self, dataset: VOCSegmentation, taus: np.ndarray, params: dict[str, Any], kinds: Sequence[str]):
        self.dataset, self.taus, self.params, self.kinds = dataset, taus, params, list(kinds)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, Any]:
        sample = self.dataset.load(i)
        classes = image_labels(sample)  # ascending, as cues extract stores them
        out = {}
        for kind in self.kinds:
            maps = floor_maps(kind, classes, sample["mask"].shape)
            conf, seeds, sweep = image_quality(maps, classes, sample["mask"], self.taus, self.params, sample["id"])
            out[kind] = {"confusions": conf, "seeds": seeds, "seed_sweep": sweep}
        return out


def _accumulate(items: torch.utils.data.Dataset, keys: Sequence[str], taus: np.ndarray, workers: int,
                desc: str, progress: bool) -> dict[str, dict[str, np.ndarray]]:
    """Sum each key's per-image confusions and seed counts over ``items``."""
    loader = torch.utils.data.DataLoader(items, batch_size=None, shuffle=False, num_workers=workers)
    sums = {k: {"confusions": np.zeros((taus.size, NUM_CLASSES, NUM_CLASSES), dtype=np.int64),
                "seeds": np.zeros((3, NUM_CLASSES), dtype=np.int64),
                "seed_sweep": np.zeros((taus.size, 3, NUM_CLASSES), dtype=np.int64)} for k in keys}
    for item in tqdm(loader, total=len(items), desc=desc, unit="img", disable=not progress, leave=False):
        for k in keys:
            for part, total in sums[k].items():
                total += np.asarray(item[k][part])
    return sums


def _scored(sums: dict[str, np.ndarray], taus: np.ndarray, params: dict[str, Any]) -> dict[str, Any]:
    """The QualityRecord fields that come from the summed counts: curve, best τ, IoU, seeds at both thresholds."""
    confusions = sums["confusions"]
    curve = [scores_from_confusion(cm).miou for cm in confusions]
    best = best_tau(taus, curve)
    scores = scores_from_confusion(confusions[best])
    tau_star = round(float(taus[best]), 6)
    return dict(
        tau=[round(float(t), 6) for t in taus], miou=[None if np.isnan(v) else float(v) for v in curve],
        best_tau=tau_star, best_miou=scores.miou, tau_at_edge=tau_at_edge(taus, best, curve),
        per_class_iou={n: None if np.isnan(v) else float(v) for n, v in zip(VOC_CLASSES, scores.iou)},
        seeds={"fg_threshold": params["fg_threshold"], **seed_scores(sums["seeds"])},
        seeds_at_best_tau={"fg_threshold": tau_star, **seed_scores(sums["seed_sweep"][best])},
    )


def _write_outputs(record: QualityRecord, out_dir: Path, figure: bool = True) -> dict[str, Any]:
    """``quality.json``, ``tau_curve.csv`` (its exact numbers) and, with ``figure``, ``tau_curve.png``/``.pdf``
    in ``out_dir``."""
    from sharpen_core.plots import Line, line_figure, write_csv

    record.write(out_dir / QualityRecord.FILE)
    result = record.to_json()
    best = result["tau"].index(result["best_tau"])
    write_csv(out_dir / "tau_curve.csv", ("tau", "miou"), list(zip(result["tau"], result["miou"])))
    if not figure:
        return result
    line_figure(out_dir / "tau_curve", [Line(record.mechanism, result["tau"], result["miou"], mark=best,
                                             mark_label=f"(best τ={result['tau'][best]:.2f}: "
                                                        f"{100 * (result['best_miou'] or 0.0):.1f})")],
                title=f"Pseudo-label mIoU against the background threshold ({record.mechanism}, {record.split})",
                xlabel="background threshold τ (fraction of the map maximum)", ylabel="pseudo-label mIoU (%)",
                scale=100.0)
    return result


def _split_with_masks(cfg: Any, split: str) -> VOCSegmentation:
    dataset = VOCSegmentation(cfg.data.root, split)
    if not dataset.masks:
        raise DatasetError(dataset.list_path, f"split {split!r} has no ground-truth masks; cue quality needs a "
                                              "split with masks (e.g. train or val)")
    return dataset


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
                  progress: bool = True, figure: bool = True) -> dict[str, Any]:
    """Score the maps of ``maps_dir`` on ``split`` (default: the split they were extracted for).

    Writes ``quality.json``, ``tau_curve.csv`` (its exact numbers) and, with ``figure``,
    ``tau_curve.png``/``.pdf`` to ``out_dir`` (default MAPS_DIR/quality) and returns the result. ``sharpen
    run`` passes ``figure=False``: its report draws every cue set's curve in one figure.
    """
    maps_dir = Path(maps_dir)
    extract = read_extract_params(maps_dir)
    split = split or extract["split"]
    params = cue_params(cfg.cues)
    taus = tau_values(cfg.eval.tau_min, cfg.eval.tau_max, cfg.eval.tau_step)
    dataset = _split_with_masks(cfg, split)
    missing = missing_maps(maps_dir, dataset.ids)
    if missing:
        raise DatasetError(map_path(maps_dir, missing[0]),
                           f"{len(missing)} of {len(dataset)} images of split {split!r} have no map file here; "
                           f"run `sharpen cues extract --split {split}` into {maps_dir} (it resumes)")
    items = _QualityItems(dataset, maps_dir, taus, params)
    workers = cfg.data.num_workers if len(dataset) > 16 else 0
    t0 = time.perf_counter()
    sums = _accumulate(items, [""], taus, workers, f"cue quality {extract['mechanism']} on {split}", progress)[""]
    record = QualityRecord(
        stage="cues evaluate", maps_dir=str(maps_dir), split=split, images=len(dataset),
        mechanism=extract["mechanism"], variant=extract.get("variant"), extract=extract, cues=params,
        **_scored(sums, taus, params), extract_images_per_second=_throughput(maps_dir),
        seconds=time.perf_counter() - t0, config=cfg.to_dict(),
    )
    return _write_outputs(record, Path(out_dir) if out_dir is not None else maps_dir / QUALITY_SUBDIR, figure)


def evaluate_floors(cfg: Any, split: str, out_dir: str | Path | None = None, progress: bool = True,
                    kinds: Sequence[str] = FLOORS, figure: bool = True) -> list[dict[str, Any]]:
    """The floor rows (docs/method.md §6.2) on ``split``: one QualityRecord JSON per entry of ``kinds``.

    Maps from each image's ground-truth labels and size only (:func:`floor_maps`), scored exactly as
    :func:`evaluate_cues` scores a mechanism (same τ sweep, seeds and record; ``mechanism`` is the floor's
    name, ``variant`` None, ``maps_dir`` "", ``extract`` says how the maps were made). With ``out_dir``,
    each floor's files go to ``out_dir/<floor name>/`` as :func:`evaluate_cues` writes them.
    """
    for kind in kinds:
        if kind not in FLOORS:
            raise ValueError(f"unknown floor {kind!r}; expected one of {list(FLOORS)}")
    params = cue_params(cfg.cues)
    taus = tau_values(cfg.eval.tau_min, cfg.eval.tau_max, cfg.eval.tau_step)
    dataset = _split_with_masks(cfg, split)
    items = _FloorItems(dataset, taus, params, kinds)
    workers = cfg.data.num_workers if len(dataset) > 16 else 0
    t0 = time.perf_counter()
    sums = _accumulate(items, kinds, taus, workers, f"cue floors on {split}", progress)
    seconds = (time.perf_counter() - t0) / max(len(kinds), 1)
    results = []
    for kind in kinds:
        extract = {"floor": kind, "split": split, "classes": "gt", "classifier": None,
                   "centre_sigma": CENTRE_SIGMA if kind == "floor-centre" else None,
                   "tie": "every pixel to the image's smallest label (equal maps)"}
        record = QualityRecord(
            stage="cues evaluate", maps_dir="", split=split, images=len(dataset), mechanism=kind, variant=None,
            extract=extract, cues=params, **_scored(sums[kind], taus, params), extract_images_per_second=None,
            seconds=seconds, config=cfg.to_dict(),
        )
        results.append(_write_outputs(record, Path(out_dir) / kind, figure) if out_dir is not None
                       else record.to_json())
    return results


# --------------------------------------------------------------------------- tables

def _pct(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{100 * v:.2f}"


def format_quality(result: dict[str, Any]) -> str:
    """Per-class IoU at the best τ and seed precision/recall (at cues.fg_threshold and at the best τ), then
    the summary."""
    seeds, star = result["seeds"], result.get("seeds_at_best_tau") or {}
    sp, sr = star.get("precision") or {}, star.get("recall") or {}
    lines = [f"{result['mechanism']} ({result.get('variant')}) on {result['split']}, {result['images']} images", "",
             f"{'class':<12} {'IoU@best':>8} {'seed P':>7} {'seed R':>7} {'P@best':>7} {'R@best':>7}", "-" * 53]
    for name in VOC_CLASSES:
        iou, p, r = result["per_class_iou"][name], seeds["precision"][name], seeds["recall"][name]
        if iou is None and p is None and r is None:
            continue
        lines.append(f"{name:<12} {_pct(iou):>8} {_pct(p):>7} {_pct(r):>7} {_pct(sp.get(name)):>7} "
                     f"{_pct(sr.get(name)):>7}")
    lines.append("-" * 53)
    lines.append(f"{'mean':<12} {_pct(result['best_miou']):>8} {_pct(seeds['mean_precision']):>7} "
                 f"{_pct(seeds['mean_recall']):>7} {_pct(star.get('mean_precision')):>7} "
                 f"{_pct(star.get('mean_recall')):>7}")
    lines.append(f"best tau {result['best_tau']:.2f}: mIoU {_pct(result['best_miou'])}" +
                 (f" -- {EDGE_NOTE}" if result.get("tau_at_edge") else ""))
    return "\n".join(lines)


EDGE_NOTE = ("at an edge of the sweep (eval.tau_min..eval.tau_max), reached nowhere inside it: widen the sweep, "
             "or at 0 or 1 the maps are too broad or too peaked")


def comparison_table(results: Sequence[dict[str, Any]], floors: Sequence[dict[str, Any]] = ()) -> str:
    """Side-by-side: mechanism, best τ, mIoU, its gain over the best floor (when ``floors`` are given), mean
    seed precision and recall at cues.fg_threshold and at the best τ, extraction images/s; floor rows last."""
    gain = bool(floors)
    lines = [f"{'mechanism':<14} {'variant':<14} {'best tau':>8} {'mIoU':>6} " + (f"{'gain':>6} " if gain else "")
             + f"{'seed P':>7} {'seed R':>7} {'P@best':>7} {'R@best':>7} {'images/s':>8}"]
    lines.append("-" * len(lines[0]))
    for r in [*results, *floors]:
        ips = r.get("extract_images_per_second")
        edge = "*" if r.get("tau_at_edge") else " "
        star = r.get("seeds_at_best_tau") or {}
        is_floor = r["mechanism"] in FLOORS
        g = None if is_floor else gain_over_floors(r["best_miou"], floors)
        lines.append(f"{r['mechanism']:<14} {str(r.get('variant')):<14} {r['best_tau']:>7.2f}{edge} "
                     f"{_pct(r['best_miou']):>6} " + (f"{_pct(g):>6} " if gain else "")
                     + f"{_pct(r['seeds']['mean_precision']):>7} {_pct(r['seeds']['mean_recall']):>7} "
                     f"{_pct(star.get('mean_precision')):>7} {_pct(star.get('mean_recall')):>7} "
                     f"{'-' if ips is None else f'{ips:.1f}':>8}")
    if any(r.get("tau_at_edge") for r in [*results, *floors]):
        lines.append(f"* best tau {EDGE_NOTE}")
    if gain:
        lines.append("gain: mIoU minus the best floor's (maps that do not localize: " + ", ".join(FLOORS) + ")")
    return "\n".join(lines)
