"""Hand-made report summaries (the input of ``pipeline.report``) with known numbers: a test helper, not a test."""

from __future__ import annotations

from sharpen_core.config import Config

REQUIRED_ROW_KEYS = ("classifier", "mechanism", "cls_map", "cls_auc", "attention_overlap", "overlap_gradcam_last",
                     "overlap_channel_last", "overlap_gradcam_inner", "overlap_channel_inner", "cls_ks", "cue_best_tau",
                     "cue_miou", "seed_precision", "seed_recall", "seg_miou", "seg_miou_crf")
CLASSES = ["background", "aeroplane", "bicycle", "bird"]
TAUS = [0.1, 0.2, 0.3, 0.4]


def row(classifier: str, mechanism: str | None, base: float, maps_dir: str | None = None) -> dict:
    """A row of one cue set whose numbers all follow from ``base``."""
    return {"classifier": classifier, "mechanism": mechanism, "cls_map": 0.8 + base / 10, "cls_auc": 0.9512,
            "attention_overlap": 0.1234, "overlap_gradcam_last": 0.15, "overlap_channel_last": 0.82,
            "overlap_gradcam_inner": 0.3, "overlap_channel_inner": 0.5, "cls_ks": 0.6, "cue_best_tau": 0.2,
            "cue_miou": base, "seed_precision": 0.71,
            "seed_recall": 0.42, "seg_miou": base + 0.1, "seg_miou_crf": base + 0.12,
            "per_class_iou": {c: base + 0.1 * k for k, c in enumerate(CLASSES)},
            "tau_curve": {"tau": TAUS, "miou": [base - 0.05, base, base - 0.02, base - 0.1]}, "maps_dir": maps_dir}


def none_row() -> dict:
    """A classifier without a cue set: only classification numbers."""
    out = {k: None for k in REQUIRED_ROW_KEYS}
    out.update({"classifier": "icasc", "mechanism": None, "cls_map": 0.85, "cls_auc": 0.97, "per_class_iou": {},
                "tau_curve": None, "maps_dir": None})
    return out


def summary(rows: list[dict] | None = None, **extra) -> dict:
    """A whole run summary as the report reads it: two cue-set rows and a classifier-only row by default."""
    s = {
        "name": "demo", "config": Config().to_dict(), "config_source": "configs/demo.toml", "seeds": [0],
        "rows": rows if rows is not None else [row("baseline", "gradcam", 0.40), row("baseline", "channel", 0.45),
                                               none_row()],
        "full_supervision_miou": 0.70, "full_supervision_miou_crf": 0.75,
        "full_per_class_iou": {c: 0.8 for c in CLASSES},
        "stages": {"data": {"wall_seconds": 3.5, "peak_rss_mib": 120.0, "status": "done"},
                   "classify": {"wall_seconds": 125.0, "peak_rss_mib": 900.5, "status": "done"},
                   "report": {"status": "skipped"}},
        "total_wall_seconds": 128.5, "peak_rss_mib": 900.5,
        "submission": {"tarball": "runs/demo/submission.tar.gz", "segmenter": "baseline/channel", "test_miou": 0.5},
        "dataset_root": "builtin_data", "val_split": "val", "cue_split": "train",
    }
    s.update(extra)
    return s


def floor(name: str, best: float, seed_p: float = 0.3, seed_r: float = 0.9) -> dict:
    """A floor as ``summary["floors"]`` holds it (pipeline.collect.collect_floors), its numbers from ``best``:
    the uniform floor's curve flat over the τ < 1 of TAUS (best at the first τ), the centre prior's peaked."""
    curve = [best] * len(TAUS) if name == "floor-uniform" else [best - 0.1, best, best - 0.05, best - 0.2]
    return {"name": name, "best_tau": TAUS[curve.index(best)], "best_miou": best, "tau_at_edge": False,
            "tau_curve": {"tau": TAUS, "miou": curve}, "seed_precision": seed_p, "seed_recall": seed_r,
            "seed_precision_at_tau": seed_p + 0.1, "seed_recall_at_tau": seed_r - 0.2, "split": "train", "images": 8}


def floors(uniform: float = 0.20, centre: float = 0.30) -> list[dict]:
    """Both floors of one run (cues.quality.FLOORS order)."""
    return [floor("floor-uniform", uniform), floor("floor-centre", centre)]
