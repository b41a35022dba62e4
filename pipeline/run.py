"""``sharpen run``: every stage in order from one config, each writing its outputs under the run folder.

Stages (``STAGES`` of :mod:`pipeline.plan`, which also says which cue sets and segmenters the config
asks for), each a plain function below, readable top to bottom, given the run folder's layout and the
stage's memory sampler (:class:`~pipeline.memory.StagePeak`; the report stage writes its own row with it):

1. ``data``: build the built-in dataset if the config asks for it, then check every file.
2. ``classify``: train each classifier variant (``classify.variants``), then evaluate it on val
   (mAP, AUC, attention overlap of each mechanism the cue sets use).
3. ``cues``: for each cue set ``"<variant>:<mechanism>"`` (``run.cue_sets``), extract the maps of
   the training split, turn them into SEC cues, and score them (τ sweep, seed precision/recall)
   on ``eval.cue_split``; then the floors, maps that do not localize, scored the same way once per run.
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
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from sharpen_core.config import Config, ConfigError, dump_toml
from sharpen_core.errors import DatasetError, DiskFullError
from sharpen_core.io import write_bytes_atomic, write_json_atomic
from sharpen_core.layout import FULL_SUPERVISION, RunLayout
from sharpen_core.lock import folder_lock, refuse_if_held
from sharpen_core.records import DEPENDS
from sharpen_core.stage_records import EvaluationRecord, PredictRecord, QualityRecord, StageRecord, SubmissionRecord

from .memory import StagePeak, children_high_water_mib
from .plan import STAGES, check_run_args, cue_sets, cue_split, segmenters, stage_hash
from .report import OwnStage, report_run

#: A stage: (config, run layout, progress, the stage's memory sampler) -> its outputs for the stage record.
StageFunction = Callable[[Config, RunLayout, bool, StagePeak], dict[str, Any]]


# --------------------------------------------------------------------------- stages

def run_data_stage(cfg: Config, layout: RunLayout, progress: bool, peak: StagePeak) -> dict[str, Any]:
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
    """Grad-CAM, channel-weighted (always: claim (c)'s measures, docs/method.md §2.7) and the other native
    mechanisms of the variant's cue sets, for the attention overlap (adapter ones: too slow)."""
    from sharpen_attention.mechanisms import MECHANISMS

    mechanisms = [m for v, m in cue_sets(cfg) if v == variant and m in MECHANISMS]
    return list(dict.fromkeys(["gradcam", "channel", *mechanisms]))


def _pretrained_start(cfg: Config, layout: RunLayout, stage: str, progress: bool) -> tuple[Config, dict[str, Any]]:
    """``cfg`` with ``weights = "builtin"`` resolved to the cached pretrained start (made now when this
    machine's cache lacks it: docs/method.md §8), and the stage outputs naming its record
    (``RUN/<stage>/pretrain.json``: the cache's record, whether it was a cache hit, the time taken here)."""
    from classify.pretrain import resolve_builtin

    t0 = time.perf_counter()
    resolved, record = resolve_builtin(cfg, progress)
    if record is None:
        return cfg, {}
    path = layout.root / stage / "pretrain.json"
    write_json_atomic(path, {**record, "wall_seconds_here": time.perf_counter() - t0})
    if progress:
        how = "found in the cache" if record["cache_hit"] else f"made in {time.perf_counter() - t0:.0f} s"
        print(f"  pretrained start {record['key']}: {how} (val mAP {record.get('val_map') or float('nan'):.3f})")
    return resolved, {"pretrain": str(path)}


def run_classify_stage(cfg: Config, layout: RunLayout, progress: bool, peak: StagePeak) -> dict[str, Any]:
    """Train every classifier variant (resuming an interrupted one), then evaluate it on val."""
    from classify.evaluate import evaluate_classifier, format_evaluation
    from classify.train import train_classifier

    cfg, outputs = _pretrained_start(cfg, layout, "classify", progress)
    for i, variant in enumerate(cfg.classify.variants, 1):
        evaluation = layout.classifier_evaluation(variant)
        print(f"  classify [{i}/{len(cfg.classify.variants)}] {variant}")
        if not evaluation.is_file():
            t0 = time.perf_counter()
            train_classifier(cfg, variant, layout.classifier(variant), resume=True, progress=progress)
            train_seconds = time.perf_counter() - t0
            result = evaluate_classifier(cfg, layout.classifier_checkpoint(variant),
                                         mechanisms=_attention_mechanisms(cfg, variant), progress=progress)
            record = EvaluationRecord.from_json(result)
            record.train_wall_seconds = train_seconds
            record.write(evaluation)
            if progress:
                print(format_evaluation(result))
        outputs[variant] = str(evaluation)
    return outputs


def run_cues_stage(cfg: Config, layout: RunLayout, progress: bool, peak: StagePeak) -> dict[str, Any]:
    """Extract, turn into SEC cues and score the maps of every cue set; then score the floors (maps that do
    not localize, docs/method.md §6.2) once on ``eval.cue_split``, into ``RUN/cues/floors/<floor>/``. A cue
    set or floor whose quality record is there is read back, not redone."""
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
            extract_maps(cfg, layout.classifier_checkpoint(variant), mechanism, maps_dir, split=split,
                         progress=progress)
            write_sec_cues(maps_dir, cfg.cues, progress=progress)
            # the report draws every cue set's τ curve in one figure: none per cue set here
            result = evaluate_cues(cfg, maps_dir, split=cue_split(cfg), progress=progress, figure=False)
        results.append(result)
        outputs[f"{variant}:{mechanism}"] = str(quality)
    floors = _floors(cfg, layout, progress) if sets else {}
    outputs.update({f"floors:{name}": str(layout.floor_quality(name)) for name in floors})
    if progress and results:
        print(comparison_table(results, list(floors.values())))
    return outputs


def _floors(cfg: Config, layout: RunLayout, progress: bool) -> dict[str, dict[str, Any]]:
    """Every floor's quality record (``QualityRecord`` JSON) by name: read back where the run has it, the
    missing ones scored now on ``eval.cue_split`` (one pass over the split for all of them)."""
    from cues.quality import FLOORS, evaluate_floors

    found = {name: QualityRecord.read(layout.floor_quality(name)) for name in FLOORS}
    missing = [name for name, rec in found.items() if rec is None]
    if missing:
        print(f"  cues: floors {', '.join(missing)} on {cue_split(cfg)}")
        out_dir = layout.floor_quality(missing[0]).parent.parent
        made = evaluate_floors(cfg, cue_split(cfg), out_dir=out_dir, progress=progress, kinds=missing, figure=False)
        found.update({name: QualityRecord.from_json(result) for name, result in zip(missing, made)})
    return {name: rec.to_json() for name, rec in found.items() if rec is not None}


def run_segment_stage(cfg: Config, layout: RunLayout, progress: bool, peak: StagePeak) -> dict[str, Any]:
    """Train one segmenter per cue set of ``run.segment_cue_sets``, and the fully-supervised reference."""
    from segment.train import train_segmenter

    cfg, outputs = _pretrained_start(cfg, layout, "segment", progress)
    planned = segmenters(cfg, layout)
    for i, (name, cues_dir, supervision) in enumerate(planned, 1):
        checkpoint = layout.segmenter_checkpoint(name)
        print(f"  segment [{i}/{len(planned)}] {name}")
        train_segmenter(cfg, layout.segmenter(name), cues_dir=cues_dir, supervision=supervision,
                        resume=checkpoint.is_file(), progress=progress)
        outputs[name] = str(checkpoint)
    return outputs


def run_predict_stage(cfg: Config, layout: RunLayout, progress: bool, peak: StagePeak) -> dict[str, Any]:
    """Predict val with every segmenter (without and with CRF); submit the best one on the test split."""
    from segment.predict import predict_split

    split = cfg.data.val_split
    outputs: dict[str, Any] = {}
    records = {}
    planned = segmenters(cfg, layout)
    for i, (name, _, _) in enumerate(planned, 1):
        print(f"  predict [{i}/{len(planned)}] {name} on {split}")
        out = layout.prediction(name, split)
        records[name] = predict_split(cfg, layout.segmenter_checkpoint(name), split, out,
                                      crf=cfg.segment.predict_crf, progress=progress)
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
        record = predict_split(cfg, layout.segmenter_checkpoint(best), test, out, crf=cfg.segment.predict_crf,
                               submission=True, progress=progress)
        submission = SubmissionRecord(segmenter=best, split=test, tarball=record.submission)
        if submission.tarball:
            from eval.predictions import evaluate_prediction_folder

            if _has_ground_truth(cfg.data.root, test):
                scores = evaluate_prediction_folder(submission.tarball, cfg.data.root, test, progress=progress)
                submission.test_miou = scores.miou
                submission.test_scores = scores.to_dict()
        submission.write(layout.submission())
        outputs["submission"] = str(layout.submission())
    return outputs


def _has_ground_truth(root: str | Path, split: str) -> bool:
    """Whether ``split`` can be scored: it has masks, or held-back ones (the built-in dataset's test split)."""
    from data.voc import VOCSegmentation, resolve_voc_root

    if VOCSegmentation(root, split).masks:
        return True
    return split == "test" and (resolve_voc_root(root) / "SegmentationClassTest").is_dir()


def run_report_stage(cfg: Config, layout: RunLayout, progress: bool, peak: StagePeak) -> dict[str, Any]:
    """Write ``report.md``, ``report.json`` and ``figures/`` from the stages' outputs (as ``sharpen report``),
    with this stage's own row (its wall time, and ``peak``'s memory) in the stages table and figure."""
    report = report_run(layout.root, cfg=cfg, own_stage=OwnStage(started=time.perf_counter(), peak=peak))
    print(f"  report: {layout.root / 'report.md'}; figures: "
          + ", ".join(Path(p).name for p in report["figures"].values() if p))
    return {"report": str(layout.root / "report.json")}


STAGE_FUNCTIONS: dict[str, StageFunction] = {
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


def clear_stages(layout: RunLayout, stages: Sequence[str]) -> None:
    """Delete the outputs and the records (finished and started) of ``stages`` (what ``--from`` redoes)."""
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
    h = stage_hash(cfg, stage)
    StageRecord(stage=stage, config_hash=h).write(layout.stage_started(stage))
    t0 = time.perf_counter()
    try:
        with StagePeak() as peak:
            outputs = STAGE_FUNCTIONS[stage](cfg, layout, progress, peak)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise DiskFullError(errno.ENOSPC, f"the disk filled up during stage {stage!r} ({e}); nothing "
                                              "finished is lost: free some space and run the same command "
                                              "again to resume") from None
        raise
    record = StageRecord(stage=stage, config_hash=h, status="done", wall_seconds=time.perf_counter() - t0,
                         peak_rss_mib=peak.peak_mib(), children_peak_rss_mib=children_high_water_mib(),
                         outputs=outputs)
    record.write(layout.stage_record(stage))
    return record.to_json()


def run_one(cfg: Config, progress: bool = True, from_stage: str | None = None,
            only: str | None = None) -> dict[str, Any]:
    """Run the pipeline once (one seed) under ``cfg.run.run_dir``; return the run record."""
    check_run_args(cfg, from_stage, only)
    layout = RunLayout(Path(cfg.run.run_dir))
    layout.root.mkdir(parents=True, exist_ok=True)
    selected = [s for s in STAGES if s in cfg.run.stages]
    if only is not None:
        selected = [only]
    if from_stage is not None:
        selected = [s for s in selected if STAGES.index(s) >= STAGES.index(from_stage)]
        clear_stages(layout, [s for s in STAGES if STAGES.index(s) >= STAGES.index(from_stage)])
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
    check_run_args(cfg, from_stage, only)  # bad arguments: no folder made, no lock taken
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
        report_run(root, seeds=record["seeds"], each_seed=False)
        print(f"report over {seeds} seeds: {root / 'report.md'}")
    write_json_atomic(root / "run.json", record)
    return record
