"""A run folder read back: the typed records its stages wrote (:mod:`sharpen_core.stage_records`), gathered
into the ``summary`` the report is built from (:func:`collect_summary`), and the config and seeds a
folder was made with (:func:`run_config`, :func:`run_seeds`). Nothing here writes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from sharpen_core.config import Config, ConfigError, load_config
from sharpen_core.errors import DatasetError
from sharpen_core.layout import FULL_SUPERVISION, RunLayout, segmenter_name
from sharpen_core.stage_records import (EvaluationRecord, MetricsHistory, PredictRecord, QualityRecord, StageRecord,
                                        SubmissionRecord)

from .aggregate import CLASSIFIER_FIELDS
from .plan import STAGES, cue_split, cue_sets, segmenters


def read_json_file(path: Path) -> dict[str, Any] | None:
    """A JSON file the run wrote (``run.json``, ``report.json``), or None when absent."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DatasetError(path, f"not valid JSON ({e}); expected the file `sharpen run` wrote") from None


def _history(path: Path) -> list[dict[str, Any]] | None:
    history = MetricsHistory.read(path)
    return history.entries if history is not None else None


def classifier_fields(evaluation: EvaluationRecord | None) -> dict[str, float | None]:
    """A classifier's own numbers for each of its rows (:data:`pipeline.aggregate.CLASSIFIER_FIELDS`): the
    attention overlap of Grad-CAM and channel-weighted maps at the last and the inner layer (docs/method.md
    §2.7), the KS distance (§6.3); None where the evaluation did not measure it."""
    out: dict[str, float | None] = dict.fromkeys(CLASSIFIER_FIELDS)
    if evaluation is None:
        return out
    for layer, overlaps in (("last", evaluation.attention_overlap), ("inner", evaluation.attention_overlap_inner)):
        for mechanism in ("gradcam", "channel"):
            out[f"overlap_{mechanism}_{layer}"] = (overlaps or {}).get(mechanism)
    out["cls_ks"] = evaluation.ks_target_vs_confusing
    return out


def _seeds_at_best_tau(quality: QualityRecord) -> dict[str, float | None]:
    """The mean seed precision/recall with the foreground threshold at the maps' own τ* (docs/method.md §6.2;
    None in a record written before they were measured)."""
    star = quality.seeds_at_best_tau or {}
    return {"seed_precision_at_tau": star.get("mean_precision"), "seed_recall_at_tau": star.get("mean_recall")}


def collect_floors(layout: RunLayout) -> list[dict[str, Any]]:
    """The floors the cues stage scored (``RUN/cues/floors/<floor>/quality.json``, docs/method.md §6.2), in
    :data:`cues.quality.FLOORS` order: name, best τ and mIoU, the τ curve, seed precision/recall at
    ``cues.fg_threshold`` and at τ*; those the run lacks are left out."""
    from cues.quality import FLOORS

    floors = []
    for name in FLOORS:
        quality = QualityRecord.read(layout.floor_quality(name))
        if quality is None:
            continue
        floors.append({"name": name, "best_tau": quality.best_tau, "best_miou": quality.best_miou,
                       "tau_at_edge": bool(quality.tau_at_edge),
                       "tau_curve": {"tau": quality.tau, "miou": quality.miou},
                       "seed_precision": quality.seed_precision, "seed_recall": quality.seed_recall,
                       **_seeds_at_best_tau(quality), "split": quality.split, "images": quality.images})
    return floors


def collect_summary(cfg: Config, layout: RunLayout, skip_stages: Sequence[str] = ()) -> dict[str, Any]:
    """Everything the report shows, read back from the stages' outputs (paths in it relative to the run
    folder; the stage records of ``skip_stages`` left out)."""
    split = cfg.data.val_split
    rows = []
    sets = cue_sets(cfg)
    evaluations = {v: EvaluationRecord.read(layout.classifier_evaluation(v)) for v in cfg.classify.variants}
    for variant in cfg.classify.variants:
        evaluation = evaluations[variant]
        mechanisms = [m for v, m in sets if v == variant] or [None]
        for mechanism in mechanisms:
            row: dict[str, Any] = {
                "classifier": variant, "mechanism": mechanism,
                "cls_map": evaluation.map if evaluation else None,
                "cls_auc": evaluation.macro_auc if evaluation else None,
                "attention_overlap": (evaluation.attention_overlap or {}).get(mechanism)
                if evaluation and mechanism else None,
                **classifier_fields(evaluation),
                "cue_best_tau": None, "cue_miou": None, "seed_precision": None, "seed_recall": None,
                "seed_precision_at_tau": None, "seed_recall_at_tau": None,
                "seg_miou": None, "seg_miou_crf": None, "per_class_iou": {}, "tau_curve": None, "maps_dir": None,
            }
            if mechanism is not None:
                maps_dir = layout.maps(variant, mechanism, cfg.data.train_split)
                quality = QualityRecord.read(layout.quality(variant, mechanism, cfg.data.train_split))
                if quality:
                    row.update(cue_best_tau=quality.best_tau, cue_miou=quality.best_miou,
                               cue_tau_at_edge=bool(quality.tau_at_edge),
                               seed_precision=quality.seed_precision, seed_recall=quality.seed_recall,
                               **_seeds_at_best_tau(quality),
                               tau_curve={"tau": quality.tau, "miou": quality.miou},
                               maps_dir=str(maps_dir.relative_to(layout.root)))
                predicted = PredictRecord.read(layout.prediction(segmenter_name(variant, mechanism), split) /
                                               PredictRecord.FILE)
                if predicted:
                    row["seg_miou"] = predicted.miou_of(crf=False)
                    row["seg_miou_crf"] = predicted.miou_of(crf=True)
                    row["per_class_iou"] = predicted.best_scores().get("per_class_iou") or {}
            rows.append(row)
    full = PredictRecord.read(layout.prediction(FULL_SUPERVISION, split) / PredictRecord.FILE) \
        if cfg.run.full_supervision else None
    stages = {}
    for stage in STAGES:
        rec = None if stage in skip_stages else StageRecord.read(layout.stage_record(stage))
        if rec:
            stages[stage] = rec.timings()
    submission = SubmissionRecord.read(layout.submission())
    full_best = full.best_scores() if full else {}
    return {
        "name": cfg.run.name, "config": cfg.to_dict(), "config_source": cfg.source, "seeds": [cfg.run.seed],
        "rows": rows,
        "floors": collect_floors(layout),
        "pretrained": read_json_file(layout.root / "classify" / "pretrain.json"),
        "pretrained_segmenters": (layout.root / "segment" / "pretrain.json").is_file(),
        "full_supervision_miou": full.miou_of(crf=False) if full else None,
        "full_supervision_miou_crf": full.miou_of(crf=True) if full else None,
        "full_per_class_iou": full_best.get("per_class_iou") or {},
        "stages": stages,
        "total_wall_seconds": sum(s.get("wall_seconds", 0.0) for s in stages.values()),
        "peak_rss_mib": max([s.get("peak_rss_mib", 0.0) for s in stages.values()] or [0.0]),
        "submission": submission.to_json() if submission else None,
        "dataset_root": cfg.data.root, "val_split": split, "cue_split": cue_split(cfg),
        "classifiers": {v: {"map": e.map if e else None, "per_class_ap": (e.per_class_ap if e else None) or {},
                            "gradcampp_linearity": e.gradcampp_linearity if e else None,
                            "history": _history(layout.classifier_metrics(v))}
                        for v, e in evaluations.items()},
        "segmenters": {name: {"supervision": supervision, "history": _history(layout.segmenter_metrics(name))}
                       for name, _, supervision in segmenters(cfg, layout)},
    }


def run_config(run_dir: Path) -> Config:
    """The config a run folder was made with (its ``config.toml``), under the source the run recorded."""
    path = run_dir / "config.toml"
    if not path.is_file():
        raise ConfigError(f"{path}: not found; expected a run folder made by `sharpen run` (config.toml, stages/, "
                          "report.json), or the root of a --seeds run (seed-<s>/ folders)")
    cfg = load_config(path)
    for name in ("run.json", "report.json"):
        source = (read_json_file(run_dir / name) or {}).get("config_source")
        if source:
            cfg.source = source
            break
    return cfg


def run_seeds(run_dir: Path) -> list[int] | None:
    """The seeds of a ``--seeds N`` root folder (its run.json, else its seed-<s>/ folders); None for one run."""
    if (run_dir / "config.toml").is_file():
        return None
    listed = (read_json_file(run_dir / "run.json") or {}).get("seeds")
    if listed:
        return [int(s) for s in listed]
    found = sorted(int(p.parent.name[5:]) for p in run_dir.glob("seed-*/config.toml") if p.parent.name[5:].isdigit())
    return found or None
