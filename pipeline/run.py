"""``sharpen run``: every stage in order from one config, each writing its outputs under the run folder.

Stages (``STAGES``), each a plain function below, readable top to bottom:

1. ``data``: build the built-in dataset if the config asks for it, then check every file.
2. ``classify``: train each classifier variant (``classify.variants``), then evaluate it on val
   (mAP, AUC, attention overlap of each mechanism the cue sets use).
3. ``cues``: for each cue set ``"<variant>:<mechanism>"`` (``run.cue_sets``), extract the maps of
   the training split, turn them into SEC cues, and score them (τ sweep, seed precision/recall)
   on ``eval.cue_split``.
4. ``segment``: one segmenter per cue set of ``run.segment_cue_sets`` (default: every cue set) from
   its SEC cues, plus the fully-supervised reference; the other cue sets are scored as cues only.
5. ``predict``: every segmenter on the val split without and with the dense CRF (scored), and a
   test-split submission of the best weakly-supervised one (scored against held-back masks when
   the dataset has them, as the built-in one does).
6. ``report``: ``report.md``, ``report.json`` and ``figures/`` (:mod:`pipeline.report`).

Skipping and resuming: each finished stage writes ``RUN/stages/<stage>.json`` with a hash of the
config part that affects it (its sections and the earlier stages'). A rerun skips a stage whose
record holds the same hash; an interrupted stage resumes, because each unit in it resumes
(classifier and segmenter checkpoints, map files) or is skipped when its output is there. A stage
finished (or started) with another config is refused with how to proceed: ``--from STAGE`` redoes
that stage and every later one (their folders are deleted first), or a new ``--run-dir``.
``--only STAGE`` runs one stage, the earlier ones must be finished.

``--seeds N`` runs the whole pipeline N times with seeds ``run.seed + k`` in ``RUN/seed-<s>/`` and
writes the report with mean ± std over seeds in ``RUN``.

Timings and memory: each stage's wall time, and its peak resident memory (the main process's
high-water mark if the stage raised it, else the largest size a thread sampling every 0.2 s saw: see
:mod:`pipeline.memory`; the kernel's mark is never reset, so ``/usr/bin/time -v`` on a run reads
its true peak), and the largest finished child process's (e.g. DataLoader workers, CRF processes).

A full disk (``ENOSPC``) stops the stage with a message saying so; every file is written
atomically, so nothing finished is lost and the same command resumes once space is back.
"""

from __future__ import annotations

import copy
import errno
import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from sharpen_core.errors import DatasetError, DiskFullError
from sharpen_core.io import write_bytes_atomic, write_json_atomic
from sharpen_core.lock import folder_lock, refuse_if_held
from sharpen_core.config import Config, ConfigError, dump_toml
from sharpen_core.layout import FULL_SUPERVISION, RunLayout, segmenter_name
from sharpen_core.records import DEPENDS, config_part, fingerprint
from sharpen_core.stage_records import PredictRecord, QualityRecord, StageRecord

from .memory import StagePeak, children_high_water_mib, high_water_mib

STAGES = ("data", "classify", "cues", "segment", "predict", "report")


# --------------------------------------------------------------------------- bookkeeping

#: The running stage's memory tracker (the report stage reads it to write its own row).
_STAGE_PEAK: StagePeak | None = None


def _stage_peak_mib() -> float:
    """The running stage's peak resident memory so far (MiB); the process's mark outside a stage."""
    return _STAGE_PEAK.peak_mib() if _STAGE_PEAK is not None else high_water_mib()


def stage_hash(cfg: Config, stage: str) -> str:
    """Hash of everything ``stage``'s outputs depend on: its config part and every earlier stage's, and
    the built-in generator's version when the run builds its data (a folder of another version is rebuilt)."""
    part = config_part(cfg, [f"run.{name}" for name in STAGES[: STAGES.index(stage) + 1]])
    if cfg.data.builtin:
        from data.builtin import GENERATOR_VERSION

        part["data.builtin_generator_version"] = GENERATOR_VERSION
    return fingerprint(part)


def check_run_config(cfg: Config) -> None:
    """Stage names, cue sets and mechanisms the config names must exist; list the valid ones."""
    from classify.train import VARIANTS, check_variant, variant_config
    from sharpen_attention.mechanisms import check_mechanism

    for stage in cfg.run.stages:
        if stage not in STAGES:
            raise ConfigError(f"{cfg.source}: run.stages names an unknown stage {stage!r}; "
                              f"valid stages: {', '.join(STAGES)}")
    for entry in cfg.run.cue_sets:
        if entry.count(":") != 1:
            raise ConfigError(f"{cfg.source}: run.cue_sets entry {entry!r}: expected '<classifier variant>:"
                              f"<mechanism>', e.g. 'baseline:gradcam'")
        variant, mechanism = entry.split(":")
        try:
            check_variant(variant)
        except ConfigError:
            raise ConfigError(f"{cfg.source}: run.cue_sets entry {entry!r}: unknown classifier variant "
                              f"{variant!r}; valid variants: {', '.join(VARIANTS)}, or an ICASC one + '@<label>'") from None
        if variant not in cfg.classify.variants:
            raise ConfigError(f"{cfg.source}: run.cue_sets entry {entry!r} needs the {variant!r} classifier, "
                              f"but classify.variants = {cfg.classify.variants}")
        try:
            check_mechanism(mechanism)
        except ValueError as e:
            raise ConfigError(f"{cfg.source}: run.cue_sets entry {entry!r}: {e}") from None
    segmented = cfg.run.segment_cue_sets
    if segmented != ["all"]:
        for entry in segmented:
            if entry not in cfg.run.cue_sets:
                raise ConfigError(f"{cfg.source}: run.segment_cue_sets entry {entry!r} is not one of run.cue_sets "
                                  f"({', '.join(cfg.run.cue_sets)}); list cue sets from there, or [\"all\"]")
    for variant in cfg.classify.variants:
        variant_config(cfg, variant)  # a known variant, and an overrides table for "<variant>@<label>"
    _check_cue_layer(cfg)


def _check_cue_layer(cfg: Config) -> None:
    """``cues.layer`` ("last", "inner" or a module name) must exist in ``classify.arch`` (built on the meta device)."""
    import torch

    from sharpen_attention.classifiers import ARCHS, build_classifier
    from sharpen_attention.attention import resolve_layers

    if cfg.classify.arch not in ARCHS:
        return  # the classify stage names the unknown architecture
    with torch.device("meta"):
        model = build_classifier(cfg.classify.arch, 20)
    try:
        resolve_layers(model, cfg.cues.layer)
    except ValueError as e:
        raise ConfigError(f"{cfg.source}: cues.layer: {str(e).split(' Available:')[0]}") from None


def cue_sets(cfg: Config) -> list[tuple[str, str]]:
    """``run.cue_sets`` as (classifier variant, mechanism) pairs."""
    return [tuple(entry.split(":")) for entry in cfg.run.cue_sets]  # type: ignore[misc]


def segmented_cue_sets(cfg: Config) -> list[tuple[str, str]]:
    """The cue sets of ``run.segment_cue_sets`` (every cue set for ``["all"]``), in ``run.cue_sets`` order."""
    chosen = cfg.run.segment_cue_sets
    return [(v, m) for v, m in cue_sets(cfg) if chosen == ["all"] or f"{v}:{m}" in chosen]


def cue_split(cfg: Config) -> str:
    return cfg.eval.cue_split or cfg.data.train_split


# --------------------------------------------------------------------------- stages

def run_data_stage(cfg: Config, layout: RunLayout, progress: bool = True) -> dict[str, Any]:
    """Build the built-in dataset if asked and missing, then check it; write ``data/summary.json``."""
    from data.check import check_dataset, format_summary

    root = Path(cfg.data.root)
    built = None
    if cfg.data.builtin:
        from data.builtin import build_builtin_dataset

        built = build_builtin_dataset(root, seed=cfg.data.builtin_seed, size=cfg.data.builtin_size,
                                      workers=None, progress=progress)
    elif not root.exists():
        raise DatasetError(root, "dataset folder not found; set data.root to a VOC2012 folder, or "
                                 "data.builtin = true to build the built-in dataset there")
    splits = [cfg.data.train_split, cfg.data.val_split, cue_split(cfg)]
    if cfg.run.submission:
        splits.append(cfg.data.test_split)
    summary = check_dataset(root, splits=list(dict.fromkeys(splits)), progress=progress)
    if progress:
        print(format_summary(summary))
    result = {"stage": "data", "config": cfg.to_dict()["data"], "built": built, "summary": summary}
    write_json_atomic(layout.root / "data" / "summary.json", result)
    return {"summary": str(layout.root / "data" / "summary.json")}


def _attention_mechanisms(cfg: Config, variant: str) -> list[str]:
    """The native mechanisms of the variant's cue sets, for the attention overlap (adapter ones: too slow)."""
    from sharpen_attention.mechanisms import MECHANISMS

    mechanisms = [m for v, m in cue_sets(cfg) if v == variant and m in MECHANISMS]
    return list(dict.fromkeys(mechanisms or ["gradcam", "channel"]))


def run_classify_stage(cfg: Config, layout: RunLayout, progress: bool = True) -> dict[str, Any]:
    """Train every classifier variant (resuming an interrupted one), then evaluate it on val."""
    from classify.evaluate import evaluate_classifier, format_evaluation
    from classify.train import train_classifier

    outputs = {}
    for i, variant in enumerate(cfg.classify.variants, 1):
        out = layout.classifier(variant)
        evaluation = out / "evaluation.json"
        print(f"  classify [{i}/{len(cfg.classify.variants)}] {variant}")
        if not evaluation.is_file():
            t0 = time.perf_counter()
            train_classifier(cfg, variant, out, resume=True, progress=progress)
            train_seconds = time.perf_counter() - t0
            result = evaluate_classifier(cfg, out / "checkpoint.pt", mechanisms=_attention_mechanisms(cfg, variant),
                                         progress=progress)
            result["train_wall_seconds"] = train_seconds
            write_json_atomic(evaluation, result)
            if progress:
                print(format_evaluation(result))
        outputs[variant] = str(evaluation)
    return outputs


def run_cues_stage(cfg: Config, layout: RunLayout, progress: bool = True) -> dict[str, Any]:
    """Extract, turn into SEC cues and score the maps of every cue set."""
    from cues.extract import extract_maps
    from cues.quality import comparison_table, evaluate_cues
    from cues.sec import write_sec_cues

    split = cfg.data.train_split
    outputs, results = {}, []
    sets = cue_sets(cfg)
    for i, (variant, mechanism) in enumerate(sets, 1):
        maps_dir = layout.maps(variant, mechanism, split)
        quality = layout.quality(variant, mechanism, split)
        print(f"  cues [{i}/{len(sets)}] {variant}:{mechanism}")
        existing = QualityRecord.read(quality)
        if existing is not None:
            result = existing.to_json()
        else:
            extract_maps(cfg, layout.classifier(variant) / "checkpoint.pt", mechanism, maps_dir, split=split,
                         progress=progress)
            write_sec_cues(maps_dir, cfg.cues, progress=progress)
            result = evaluate_cues(cfg, maps_dir, split=cue_split(cfg), progress=progress)
        results.append(result)
        outputs[f"{variant}:{mechanism}"] = str(quality)
    if progress and results:
        print(comparison_table(results))
    return outputs


def _segmenters(cfg: Config, layout: RunLayout) -> list[tuple[str, Path | None, str]]:
    """(name, cue folder or None, supervision) of every segmenter the run trains."""
    out: list[tuple[str, Path | None, str]] = [
        (segmenter_name(v, m), layout.cues(v, m, cfg.data.train_split), "sec") for v, m in segmented_cue_sets(cfg)]
    if cfg.run.full_supervision:
        out.append((FULL_SUPERVISION, None, "full"))
    return out


def run_segment_stage(cfg: Config, layout: RunLayout, progress: bool = True) -> dict[str, Any]:
    """Train one segmenter per cue set of ``run.segment_cue_sets``, and the fully-supervised reference."""
    from segment.train import train_segmenter

    outputs = {}
    segmenters = _segmenters(cfg, layout)
    for i, (name, cues_dir, supervision) in enumerate(segmenters, 1):
        out = layout.segmenter(name)
        print(f"  segment [{i}/{len(segmenters)}] {name}")
        train_segmenter(cfg, out, cues_dir=cues_dir, supervision=supervision,
                        resume=(out / "checkpoint.pt").is_file(), progress=progress)
        outputs[name] = str(out / "checkpoint.pt")
    return outputs


def run_predict_stage(cfg: Config, layout: RunLayout, progress: bool = True) -> dict[str, Any]:
    """Predict val with every segmenter (without and with CRF); submit the best one on the test split."""
    from segment.predict import predict_split

    split = cfg.data.val_split
    outputs: dict[str, Any] = {}
    records = {}
    segmenters = _segmenters(cfg, layout)
    for i, (name, _, _) in enumerate(segmenters, 1):
        print(f"  predict [{i}/{len(segmenters)}] {name} on {split}")
        out = layout.prediction(name, split)
        records[name] = PredictRecord.from_json(predict_split(cfg, layout.segmenter(name) / "checkpoint.pt", split,
                                                              out, crf=cfg.segment.predict_crf, progress=progress))
        outputs[name] = str(out / PredictRecord.FILE)
    weak = {n: r for n, r in records.items() if n != FULL_SUPERVISION}
    if cfg.run.submission and weak:
        def key(item: tuple[str, PredictRecord]) -> float:
            v = item[1].miou_of(crf=True)
            v = item[1].miou_of(crf=False) if v is None else v
            return -1.0 if v is None else v

        best = max(weak.items(), key=key)[0]
        test = cfg.data.test_split
        print(f"  predict: test-split submission of the best segmenter, {best}")
        out = layout.prediction(best, test)
        record = PredictRecord.from_json(predict_split(cfg, layout.segmenter(best) / "checkpoint.pt", test, out,
                                                       crf=cfg.segment.predict_crf, submission=True,
                                                       progress=progress))
        tarball = record.submission
        submission: dict[str, Any] = {"segmenter": best, "split": test, "tarball": tarball, "test_miou": None}
        if tarball:
            from eval.predictions import evaluate_prediction_folder

            if _has_ground_truth(cfg.data.root, test):
                scores = evaluate_prediction_folder(tarball, cfg.data.root, test, progress=progress)
                submission["test_miou"] = scores.miou
                submission["test_scores"] = scores.to_dict()
        write_json_atomic(layout.root / "predict" / "submission.json", submission)
        outputs["submission"] = str(layout.root / "predict" / "submission.json")
    return outputs


def _has_ground_truth(root: str | Path, split: str) -> bool:
    """Whether ``split`` can be scored: it has masks, or held-back ones (the built-in dataset's test split)."""
    from data.voc import VOCSegmentation, resolve_voc_root

    if VOCSegmentation(root, split).masks:
        return True
    return split == "test" and (resolve_voc_root(root) / "SegmentationClassTest").is_dir()


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def collect_summary(cfg: Config, layout: RunLayout, skip_stages: Sequence[str] = ()) -> dict[str, Any]:
    """Everything the report shows, read back from the stages' outputs (paths in it relative to the run
    folder; the stage records of ``skip_stages`` left out)."""
    split = cfg.data.val_split
    rows = []
    sets = cue_sets(cfg)
    for variant in cfg.classify.variants:
        evaluation = _read_json(layout.classifier(variant) / "evaluation.json") or {}
        mechanisms = [m for v, m in sets if v == variant] or [None]
        for mechanism in mechanisms:
            row: dict[str, Any] = {
                "classifier": variant, "mechanism": mechanism,
                "cls_map": evaluation.get("map"), "cls_auc": evaluation.get("macro_auc"),
                "attention_overlap": (evaluation.get("attention_overlap") or {}).get(mechanism) if mechanism else None,
                "cue_best_tau": None, "cue_miou": None, "seed_precision": None, "seed_recall": None,
                "seg_miou": None, "seg_miou_crf": None, "per_class_iou": {}, "tau_curve": None, "maps_dir": None,
            }
            if mechanism is not None:
                maps_dir = layout.maps(variant, mechanism, cfg.data.train_split)
                quality = QualityRecord.read(layout.quality(variant, mechanism, cfg.data.train_split))
                if quality:
                    row.update(cue_best_tau=quality.best_tau, cue_miou=quality.best_miou,
                               cue_tau_at_edge=bool(quality.tau_at_edge),
                               seed_precision=quality.seed_precision, seed_recall=quality.seed_recall,
                               tau_curve={"tau": quality.tau, "miou": quality.miou}, maps_dir=str(maps_dir.relative_to(layout.root)))
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
    submission = _read_json(layout.root / "predict" / "submission.json")
    full_best = full.best_scores() if full else {}
    return {
        "name": cfg.run.name, "config": cfg.to_dict(), "config_source": cfg.source, "seeds": [cfg.run.seed],
        "rows": rows,
        "full_supervision_miou": full.miou_of(crf=False) if full else None,
        "full_supervision_miou_crf": full.miou_of(crf=True) if full else None,
        "full_per_class_iou": full_best.get("per_class_iou") or {},
        "stages": stages,
        "total_wall_seconds": sum(s.get("wall_seconds", 0.0) for s in stages.values()),
        "peak_rss_mib": max([s.get("peak_rss_mib", 0.0) for s in stages.values()] or [0.0]),
        "submission": submission, "dataset_root": cfg.data.root, "val_split": split, "cue_split": cue_split(cfg),
        "classifiers": {v: {"map": e.get("map"), "per_class_ap": e.get("per_class_ap") or {},
                            "history": _read_json(layout.classifier(v) / "metrics.json")}
                        for v in cfg.classify.variants
                        for e in [_read_json(layout.classifier(v) / "evaluation.json") or {}]},
        "segmenters": {name: {"supervision": supervision,
                              "history": _read_json(layout.segmenter(name) / "metrics.json")}
                       for name, _, supervision in _segmenters(cfg, layout)},
    }


def run_report_stage(cfg: Config, layout: RunLayout, progress: bool = True) -> dict[str, Any]:
    """Write ``report.md``, ``report.json`` and ``figures/`` from the stages' outputs (as ``sharpen report``)."""
    from .report import report_run, stage_entry

    t0 = time.perf_counter()
    report = report_run(layout.root, cfg=cfg,
                        own_stage=lambda: stage_entry(time.perf_counter() - t0, _stage_peak_mib()))
    print(f"  report: {layout.root / 'report.md'}; figures: "
          + ", ".join(Path(p).name for p in report["figures"].values() if p))
    return {"report": str(layout.root / "report.json")}


STAGE_FUNCTIONS: dict[str, Callable[[Config, RunLayout, bool], dict[str, Any]]] = {
    "data": run_data_stage, "classify": run_classify_stage, "cues": run_cues_stage,
    "segment": run_segment_stage, "predict": run_predict_stage, "report": run_report_stage,
}


# --------------------------------------------------------------------------- driver

def _stage_status(cfg: Config, layout: RunLayout, stage: str) -> str:
    """"done" (finished with this config), "absent", or "other" (finished or started with another config)."""
    h = stage_hash(cfg, stage)
    for path, state in ((layout.stage_record(stage), "done"), (layout.stage_started(stage), "started")):
        rec = StageRecord.read(path)
        if rec is not None:
            if rec.config_hash != h:
                return "other"
            if state == "done":
                return "done"
    return "absent"


def _clear_stages(layout: RunLayout, stages: list[str]) -> None:
    for stage in stages:
        for p in layout.stage_outputs(stage):
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
        for p in (layout.stage_record(stage), layout.stage_started(stage)):
            if p.exists():
                p.unlink()


def _run_stage(cfg: Config, layout: RunLayout, stage: str, progress: bool) -> dict[str, Any]:
    global _STAGE_PEAK
    h = stage_hash(cfg, stage)
    StageRecord(stage=stage, config_hash=h).write(layout.stage_started(stage))
    t0 = time.perf_counter()
    try:
        with StagePeak() as _STAGE_PEAK:
            outputs = STAGE_FUNCTIONS[stage](cfg, layout, progress)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise DiskFullError(errno.ENOSPC, f"the disk filled up during stage {stage!r} ({e}); nothing "
                                              "finished is lost: free some space and run the same command "
                                              "again to resume") from None
        raise
    finally:
        peak, _STAGE_PEAK = _STAGE_PEAK, None
    record = StageRecord(stage=stage, config_hash=h, status="done", wall_seconds=time.perf_counter() - t0,
                         peak_rss_mib=peak.peak_mib(), children_peak_rss_mib=children_high_water_mib(),
                         outputs=outputs)
    record.write(layout.stage_record(stage))
    return record.to_json()


def _check_run_args(cfg: Config, from_stage: str | None, only: str | None) -> None:
    for name, value in (("--from", from_stage), ("--only", only)):
        if value is not None and value not in STAGES:
            raise ConfigError(f"{name} {value!r}: unknown stage; valid stages: {', '.join(STAGES)}")
    check_run_config(cfg)


def run_one(cfg: Config, progress: bool = True, from_stage: str | None = None,
            only: str | None = None) -> dict[str, Any]:
    """Run the pipeline once (one seed) under ``cfg.run.run_dir``; return the run record."""
    _check_run_args(cfg, from_stage, only)
    layout = RunLayout(Path(cfg.run.run_dir))
    layout.root.mkdir(parents=True, exist_ok=True)
    selected = [s for s in STAGES if s in cfg.run.stages]
    if only is not None:
        selected = [only]
    if from_stage is not None:
        selected = [s for s in selected if STAGES.index(s) >= STAGES.index(from_stage)]
        _clear_stages(layout, [s for s in STAGES if STAGES.index(s) >= STAGES.index(from_stage)])
    # Refuse to mix configs before doing anything.
    for stage in STAGES:
        if _stage_status(cfg, layout, stage) == "other":
            raise ConfigError(
                f"{layout.root}: stage {stage!r} here was made with another config "
                f"(its part: {', '.join(DEPENDS['run.' + stage][0]) or 'the earlier stages'}); refusing to mix. "
                f"Rerun with --from {stage} to redo it and the later stages, use a new --run-dir, or delete "
                f"{layout.root} to start fresh")
    first = selected[0] if selected else None
    if first is not None:
        missing = [s for s in STAGES[: STAGES.index(first)] if s in cfg.run.stages
                   and _stage_status(cfg, layout, s) != "done"]
        if missing:
            raise ConfigError(f"{layout.root}: stage {first!r} needs the earlier stage(s) {', '.join(missing)} "
                              "finished first; run `sharpen run` without --only/--from, or --from "
                              f"{missing[0]}")
    write_bytes_atomic(layout.root / "config.toml", dump_toml(cfg).encode())
    start = time.perf_counter()
    stages: dict[str, Any] = {}
    for i, stage in enumerate(selected, 1):
        if _stage_status(cfg, layout, stage) == "done":
            print(f"[{i}/{len(selected)}] {stage}: up to date, skipped")
            rec = StageRecord.read(layout.stage_record(stage))
            stages[stage] = {**(rec.to_json() if rec else {}), "status": "skipped (up to date)"}
            continue
        print(f"[{i}/{len(selected)}] {stage}")
        stages[stage] = _run_stage(cfg, layout, stage, progress)
        print(f"[{i}/{len(selected)}] {stage}: done in {stages[stage]['wall_seconds']:.1f} s, "
              f"peak {stages[stage]['peak_rss_mib']:.0f} MiB")
    record = {
        "name": cfg.run.name, "config_source": cfg.source, "seed": cfg.run.seed,
        "config_hashes": {s: stage_hash(cfg, s) for s in STAGES},
        "stages": {s: {k: v for k, v in r.items() if k != "outputs"} for s, r in stages.items()},
        "wall_seconds": time.perf_counter() - start,
    }
    write_json_atomic(layout.root / "run.json", record)
    return record


def run_pipeline(cfg: Config, progress: bool = True, from_stage: str | None = None, only: str | None = None,
                 seeds: int = 1) -> dict[str, Any]:
    """Run the pipeline under ``cfg.run.run_dir``, once, or ``seeds`` times with the report over seeds."""
    if seeds < 1:
        raise ConfigError(f"--seeds {seeds}: expected a positive number of seeds")
    refuse_if_held(cfg.run.run_dir, hint="--run-dir")  # at once, before the slower checks
    _check_run_args(cfg, from_stage, only)  # bad arguments: no folder made, no lock taken
    # One writer per run folder (with --seeds, the top folder): a second `sharpen run` on it is refused.
    with folder_lock(Path(cfg.run.run_dir), hint="--run-dir"):
        return _run_locked(cfg, progress, from_stage, only, seeds)


def _run_locked(cfg: Config, progress: bool, from_stage: str | None, only: str | None,
                seeds: int) -> dict[str, Any]:
    if seeds == 1:
        record = run_one(cfg, progress, from_stage, only)
        print(f"run record: {Path(cfg.run.run_dir) / 'run.json'}")
        return record
    root = Path(cfg.run.run_dir)
    records, summaries = [], []
    for k in range(seeds):
        seed_cfg = copy.deepcopy(cfg)
        seed_cfg.run.seed = cfg.run.seed + k
        seed_cfg.run.run_dir = str(root / f"seed-{seed_cfg.run.seed}")
        print(f"=== seed {seed_cfg.run.seed} ({k + 1}/{seeds}) ===")
        records.append(run_one(seed_cfg, progress, from_stage, only))
        if "report" in seed_cfg.run.stages:
            summaries.append(seed_cfg.run.seed)  # reported over the seeds below, from the folders' JSON files
    record = {"name": cfg.run.name, "config_source": cfg.source, "seeds": [cfg.run.seed + k for k in range(seeds)],
              "runs": records}
    if summaries:
        from .report import report_run

        report_run(root, seeds=record["seeds"], each_seed=False)
        print(f"report over {seeds} seeds: {root / 'report.md'}")
    write_json_atomic(root / "run.json", record)
    return record
