"""The run-folder layout, in one place: where each stage keeps its outputs under ``run.run_dir``.

Used by ``sharpen run`` and by the default ``--out`` of every stage subcommand, so a stage run by
hand writes where the pipeline would have::

    RUN/classify/<variant>/                    checkpoint.pt, metrics.json, evaluation.json
    RUN/cues/<variant>/<mechanism>/<split>/    maps/, sec/, quality/
    RUN/cues/floors/<floor>/                   quality.json of a floor (maps that do not localize)
    RUN/segment/<variant>-<mechanism>/         one segmenter per cue set ("full": the reference)
    RUN/predict/<segmenter>/<split>/           pred/, pred_crf/, predict.json
    RUN/stages/<stage>.json                    the records of ``sharpen run``
"""

from __future__ import annotations

from pathlib import Path

from .stage_records import EvaluationRecord, MetricsHistory, QualityRecord, SubmissionRecord

CHECKPOINT_NAME = "checkpoint.pt"  # a trained classifier's or segmenter's checkpoint in its folder
STAGE_RECORDS = "stages"
CUES_SUBDIR = "sec"
QUALITY_SUBDIR = "quality"  # the SEC cues inside a maps folder (``sharpen cues sec`` default)
FULL_SUPERVISION = "full"  # the fully-supervised segmenter's name
FLOORS_SUBDIR = "floors"  # RUN/cues/floors/: the floors of the cue table


def segmenter_name(variant: str, mechanism: str) -> str:
    """The segmenter trained from the cues of ``variant``'s ``mechanism`` maps."""
    return f"{variant}-{mechanism}"


class RunLayout:
    """Where each stage keeps its outputs under the run folder."""

    def __init__(self, run_dir: str | Path):
        self.root = Path(run_dir)

    def stage_record(self, stage: str) -> Path:
        return self.root / STAGE_RECORDS / f"{stage}.json"

    def stage_started(self, stage: str) -> Path:
        return self.root / STAGE_RECORDS / f"{stage}.started.json"

    def classifier(self, variant: str) -> Path:
        return self.root / "classify" / variant

    def classifier_checkpoint(self, variant: str) -> Path:
        return self.classifier(variant) / CHECKPOINT_NAME

    def classifier_evaluation(self, variant: str) -> Path:
        return self.classifier(variant) / EvaluationRecord.FILE

    def classifier_metrics(self, variant: str) -> Path:
        return self.classifier(variant) / MetricsHistory.FILE

    def maps(self, variant: str, mechanism: str, split: str) -> Path:
        return self.root / "cues" / variant / mechanism / split

    def cues(self, variant: str, mechanism: str, split: str) -> Path:
        return self.maps(variant, mechanism, split) / CUES_SUBDIR

    def quality(self, variant: str, mechanism: str, split: str) -> Path:
        """The cue quality record (``sharpen cues evaluate``'s default folder)."""
        return self.maps(variant, mechanism, split) / QUALITY_SUBDIR / QualityRecord.FILE

    def floor_quality(self, floor: str) -> Path:
        """The quality record of a floor (``cues.quality.evaluate_floors``, docs/method.md §6.2), scored once per
        run on ``eval.cue_split``; its folder's parent is the ``out_dir`` that function takes."""
        return self.root / "cues" / FLOORS_SUBDIR / floor / QualityRecord.FILE

    def segmenter(self, name: str) -> Path:
        return self.root / "segment" / name

    def segmenter_checkpoint(self, name: str) -> Path:
        return self.segmenter(name) / CHECKPOINT_NAME

    def segmenter_metrics(self, name: str) -> Path:
        return self.segmenter(name) / MetricsHistory.FILE

    def prediction(self, name: str, split: str) -> Path:
        return self.root / "predict" / name / split

    def submission(self) -> Path:
        """The record of the test-split submission (``sharpen run``'s predict stage)."""
        return self.root / "predict" / SubmissionRecord.FILE

    def stage_outputs(self, stage: str) -> list[Path]:
        """What ``--from`` deletes to redo ``stage``."""
        if stage == "report":
            return [self.root / "report.md", self.root / "report.json", self.root / "figures"]
        return [self.root / stage]


def segmenter_for_cues(cues_dir: str | Path, train_split: str) -> str:
    """The segmenter name of a cue folder: ``<variant>-<mechanism>`` for ``.../<variant>/<mechanism>/<split>/sec``
    (the layout's, so ``segment train --cues`` lands where ``sharpen run`` puts it; ``-<split>`` added
    for another split than ``train_split``), else the cue folder's own name."""
    path = Path(cues_dir).resolve()
    if path.name == CUES_SUBDIR and len(path.parents) >= 4:
        split, mechanism, variant = path.parent.name, path.parent.parent.name, path.parent.parent.parent.name
        name = segmenter_name(variant, mechanism)
        return name if split == train_split else f"{name}-{split}"
    return path.name
