"""Typed records of the stages' JSON outputs, each read and written here only: ``metrics.json``
(training history, stages 1 and 3), ``evaluation.json`` (classifier evaluation, stage 1),
``quality.json`` (cue quality, stage 2), ``predict.json`` (predictions, stage 3),
``RUN/predict/submission.json`` and ``RUN/stages/<stage>.json`` (``sharpen run``). The JSON keeps
the field order below; fields in ``OPTIONAL`` are left out while they are None, so the files are
those the untyped dicts wrote, key for key."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from sharpen_core.errors import DatasetError
from sharpen_core.io import write_json_atomic

R = TypeVar("R", bound="JsonRecord")


@dataclass
class JsonRecord:
    """A JSON file with a fixed set of fields."""

    OPTIONAL: ClassVar[frozenset[str]] = frozenset()
    WHAT: ClassVar[str] = "record"

    def omitted(self) -> set[str]:
        """The fields left out of the JSON: those of ``OPTIONAL`` that are None."""
        return {name for name in self.OPTIONAL if getattr(self, name) is None}

    def to_json(self) -> dict[str, Any]:
        left_out = self.omitted()
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in left_out}

    def write(self, path: str | Path) -> None:
        write_json_atomic(path, self.to_json())

    @classmethod
    def from_json(cls: type[R], raw: Any, source: str | Path = "<dict>") -> R:
        """The record in ``raw`` (a dict as :meth:`to_json` gives); DatasetError naming ``source`` otherwise."""
        names = {f.name: f for f in dataclasses.fields(cls)}
        required = [n for n, f in names.items() if f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING]  # type: ignore[misc]
        if not isinstance(raw, dict) or any(n not in raw for n in required):
            absent = [n for n in required if not isinstance(raw, dict) or n not in raw]
            raise DatasetError(source, f"not a {cls.WHAT}: missing {absent}")
        return cls(**{k: v for k, v in raw.items() if k in names})

    @classmethod
    def read(cls: type[R], path: str | Path) -> R | None:
        """The record at ``path``, or None when there is none; DatasetError when it is unreadable."""
        path = Path(path)
        return None if not path.is_file() else cls.from_json(_read_json(path, cls.WHAT), path)


def _read_json(path: Path, what: str) -> Any:
    """The JSON in ``path``; DatasetError naming it and ``what`` it should be when it is unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DatasetError(path, f"unreadable {what} ({e})") from None


# --------------------------------------------------------------------------- stages 1 and 3: metrics.json

@dataclass
class MetricsHistory:
    """``metrics.json`` of ``classify train`` (one entry per epoch) and ``segment train`` (per logged iteration):
    a JSON list of ``{"epoch"|"iteration": ..., <loss term>: ...}``."""

    FILE: ClassVar[str] = "metrics.json"
    WHAT: ClassVar[str] = "training history (metrics.json of `classify train` / `segment train`)"

    entries: list[dict[str, Any]]

    def write(self, path: str | Path) -> None:
        write_json_atomic(path, self.entries)

    @classmethod
    def read(cls, path: str | Path) -> "MetricsHistory | None":
        """The history at ``path``, or None when there is none; DatasetError when it is unreadable."""
        path = Path(path)
        if not path.is_file():
            return None
        raw = _read_json(path, cls.WHAT)
        if not isinstance(raw, list) or not all(isinstance(e, dict) for e in raw):
            raise DatasetError(path, f"not a {cls.WHAT}: expected a list of objects")
        return cls(raw)


# --------------------------------------------------------------------------- stage 1: evaluation.json

@dataclass
class EvaluationRecord(JsonRecord):
    """``classify/<variant>/evaluation.json``: the classifier on the val split. A multi-label dataset (VOC)
    gives ``map``, ``macro_auc`` and ``per_class_ap``, a single-label one ``top1`` and ``top5``; the other
    kind's fields are left out. ``train_wall_seconds``: written by ``sharpen run`` only.

    ``attention_overlap``: per mechanism, the overlap at the last layer; ``attention_overlap_inner``: at the
    inner layer (docs/method.md §2.7); ``gradcampp_linearity``: ``{"layer", "module", "median", "p90",
    "p99", "max", "entries"}`` of ``|g·ΣA|/2`` at the cue layer (§6.4). The last two are absent from
    evaluations written before they existed (read as None)."""

    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"train_wall_seconds", "attention_overlap_inner",
                                                    "gradcampp_linearity"})
    MULTILABEL: ClassVar[tuple[str, ...]] = ("map", "macro_auc", "per_class_ap")
    SINGLE_LABEL: ClassVar[tuple[str, ...]] = ("top1", "top5")
    WHAT: ClassVar[str] = "classifier evaluation (evaluation.json of `sharpen classify evaluate`)"
    FILE: ClassVar[str] = "evaluation.json"

    checkpoint: str
    variant: str | None
    arch: str
    split: str
    images: int
    map: float | None = None
    macro_auc: float | None = None
    top1: float | None = None
    top5: float | None = None
    ks_target_vs_confusing: float | None = None
    per_class_ap: dict[str, float | None] | None = None
    attention_overlap: dict[str, float] = field(default_factory=dict)
    attention_overlap_inner: dict[str, float] | None = None
    gradcampp_linearity: dict[str, Any] | None = None
    seconds: float | None = None
    train_wall_seconds: float | None = None

    @property
    def multilabel(self) -> bool:
        return self.per_class_ap is not None

    def omitted(self) -> set[str]:
        return super().omitted() | set(self.SINGLE_LABEL if self.multilabel else self.MULTILABEL)


# --------------------------------------------------------------------------- stage 2: quality.json

@dataclass
class QualityRecord(JsonRecord):
    """``MAPS/quality/quality.json`` of ``sharpen cues evaluate`` (τ sweep and SEC seed scores)."""

    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"seeds_at_best_tau"})
    WHAT: ClassVar[str] = "cue quality record (quality.json of `sharpen cues evaluate`)"
    FILE: ClassVar[str] = "quality.json"

    stage: str
    maps_dir: str
    split: str
    images: int
    mechanism: str
    variant: str | None
    extract: dict[str, Any]
    cues: dict[str, Any]
    tau: list[float]
    miou: list[float | None]
    best_tau: float
    best_miou: float | None
    per_class_iou: dict[str, float | None]
    seeds: dict[str, Any]
    extract_images_per_second: float | None
    seconds: float
    config: dict[str, Any]
    tau_at_edge: bool = False  # the best mIoU is reached only at an end of the sweep (docs/method.md §6.2)
    # the seeds with the foreground threshold at best_tau (docs/method.md §6.2); "seeds" are at cues.fg_threshold
    seeds_at_best_tau: dict[str, Any] | None = None

    @property
    def seed_precision(self) -> float | None:
        return self.seeds["mean_precision"]

    @property
    def seed_recall(self) -> float | None:
        return self.seeds["mean_recall"]


# --------------------------------------------------------------------------- stage 3: predict.json

@dataclass
class PredictRecord(JsonRecord):
    """``OUT/predict.json`` of ``sharpen segment predict``: parameters, counts, timings, scores."""

    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"miou", "scores", "submission", "submission_source"})
    WHAT: ClassVar[str] = "prediction record (predict.json of `sharpen segment predict`)"
    FILE: ClassVar[str] = "predict.json"
    PLAIN: ClassVar[str] = "pred"
    CRF: ClassVar[str] = "pred_crf"

    stage: str
    status: str
    params: dict[str, Any]
    checkpoint: str
    meta: dict[str, Any]
    split: str
    crf: str
    outputs: dict[str, str]
    counts: dict[str, int]
    seconds: float
    images_per_second: float | None
    crf_wait_seconds: float
    device: str
    amp: bool
    crf_processes: int
    loader_workers: int
    chunk: int
    miou: dict[str, float | None] | None = None
    scores: dict[str, dict[str, Any]] | None = None
    submission: str | None = None
    submission_source: str | None = None
    config: dict[str, Any] = field(default_factory=dict)

    def miou_of(self, crf: bool) -> float | None:
        """The mIoU without (``crf`` False) or with the dense CRF; None when not predicted or not scored."""
        scores = (self.scores or {}).get(self.CRF if crf else self.PLAIN)
        return None if not scores else scores.get("miou")

    def best_scores(self) -> dict[str, Any]:
        """The scores with CRF where there are some, else without; {} when unscored."""
        scores = self.scores or {}
        return scores.get(self.CRF) or scores.get(self.PLAIN) or {}


def write_predict_running(path: str | Path, params: dict[str, Any]) -> None:
    """Mark a prediction folder as in progress (an earlier run's counts and scores no longer hold)."""
    write_json_atomic(path, {"stage": "segment predict", "status": "running", "params": params})


def read_predict_params(path: str | Path) -> dict[str, Any]:
    """The ``params`` of a ``predict.json``, finished or running."""
    try:
        params = json.loads(Path(path).read_text())["params"]
    except (ValueError, KeyError, TypeError) as e:
        raise DatasetError(path, f"unreadable prediction record ({e}); delete it or use another --out") from None
    return params


# --------------------------------------------------------------------------- sharpen run: submission.json

@dataclass
class SubmissionRecord(JsonRecord):
    """``RUN/predict/submission.json``: the test-split submission of the best weakly-supervised segmenter,
    scored (``test_miou``, ``test_scores``) when the split has held-back masks."""

    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"test_scores"})
    WHAT: ClassVar[str] = "submission record of `sharpen run`"
    FILE: ClassVar[str] = "submission.json"

    segmenter: str
    split: str
    tarball: str | None
    test_miou: float | None = None
    test_scores: dict[str, Any] | None = None


# --------------------------------------------------------------------------- sharpen run: stages/<stage>.json

@dataclass
class StageRecord(JsonRecord):
    """``RUN/stages/<stage>.json`` (finished) or ``<stage>.started.json`` (config hash only)."""

    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"status", "wall_seconds", "peak_rss_mib",
                                                    "children_peak_rss_mib", "outputs"})
    WHAT: ClassVar[str] = "stage record of `sharpen run`"

    stage: str
    config_hash: str
    status: str | None = None
    wall_seconds: float | None = None
    peak_rss_mib: float | None = None
    children_peak_rss_mib: float | None = None
    outputs: dict[str, Any] | None = None

    def timings(self) -> dict[str, Any]:
        """What the report shows of the stage: wall time, peak memory, status."""
        d = self.to_json()
        return {k: d[k] for k in ("wall_seconds", "peak_rss_mib", "children_peak_rss_mib", "status") if k in d}
