"""Typed records of metrics.json, evaluation.json, quality.json, predict.json, submission.json and the stage
records: one module reads and writes each, with the keys the untyped dicts had."""

from __future__ import annotations

import json

import pytest

from sharpen_core.errors import DatasetError
from sharpen_core.stage_records import EvaluationRecord, MetricsHistory, PredictRecord, QualityRecord, StageRecord, \
    SubmissionRecord, read_predict_params, write_predict_running


def _predict(**extra) -> PredictRecord:
    return PredictRecord(stage="segment predict", status="done", params={"split": "val"}, checkpoint="c.pt", meta={},
                         split="val", crf="both", outputs={}, counts={"images": 2}, seconds=1.0,
                         images_per_second=None, crf_wait_seconds=0.0, device="cpu", amp=False, crf_processes=1,
                         loader_workers=0, chunk=4, **extra)


def test_predict_record_round_trip_and_scores(tmp_path):
    path = tmp_path / PredictRecord.FILE
    unscored = _predict()
    unscored.write(path)
    raw = json.loads(path.read_text())
    # unset optional fields are left out; a None that is a value (images_per_second) is kept
    assert "scores" not in raw and "submission" not in raw and raw["images_per_second"] is None
    assert list(raw)[:3] == ["stage", "status", "params"] and list(raw)[-1] == "config"
    assert PredictRecord.read(path) == unscored and unscored.miou_of(crf=True) is None and unscored.best_scores() == {}
    scored = _predict(scores={"pred": {"miou": 0.25, "per_class_iou": {"a": 0.5}}, "pred_crf": {"miou": 0.5}})
    assert scored.miou_of(crf=False) == 0.25 and scored.miou_of(crf=True) == 0.5
    assert scored.best_scores() == {"miou": 0.5}
    assert _predict(scores={"pred": {"miou": 0.25}}).best_scores() == {"miou": 0.25}


def test_running_predict_record_gives_its_params(tmp_path):
    path = tmp_path / PredictRecord.FILE
    write_predict_running(path, {"scales": [1.0]})
    assert read_predict_params(path) == {"scales": [1.0]}
    with pytest.raises(DatasetError, match="not a prediction record"):
        PredictRecord.read(path)  # a running record is no finished one
    path.write_text("{")
    with pytest.raises(DatasetError, match=r"predict.json: unreadable prediction record"):
        read_predict_params(path)


def test_quality_record_names_missing_fields(tmp_path):
    path = tmp_path / QualityRecord.FILE
    path.write_text(json.dumps({"stage": "cues evaluate", "best_tau": 0.3}))
    with pytest.raises(DatasetError, match=r"quality.json: not a cue quality record .*missing \['maps_dir'"):
        QualityRecord.read(path)
    assert QualityRecord.read(tmp_path / "absent.json") is None


def test_stage_record_started_and_done(tmp_path):
    started = StageRecord(stage="cues", config_hash="ab12")
    assert started.to_json() == {"stage": "cues", "config_hash": "ab12"}
    done = StageRecord(stage="cues", config_hash="ab12", status="done", wall_seconds=2.0, peak_rss_mib=10.0,
                       children_peak_rss_mib=5.0, outputs={})
    done.write(tmp_path / "cues.json")
    assert StageRecord.read(tmp_path / "cues.json") == done
    assert list(done.timings()) == ["wall_seconds", "peak_rss_mib", "children_peak_rss_mib", "status"]


def test_evaluation_record_keeps_the_keys_of_each_kind(tmp_path):
    head = {"checkpoint": "c.pt", "variant": "icasc", "arch": "resnet18", "split": "val", "images": 3}
    # a multi-label evaluation as classify/evaluate.py gives it (ks None is a value, kept), then sharpen run's time
    multi = {**head, "map": 0.5, "macro_auc": 0.75, "ks_target_vs_confusing": None, "per_class_ap": {"cat": None},
             "attention_overlap": {"gradcam": 0.25}, "seconds": 1.5, "train_wall_seconds": 9.0}
    path = tmp_path / EvaluationRecord.FILE
    EvaluationRecord.from_json(multi).write(path)
    assert path.read_text() == json.dumps(multi, indent=2) + "\n"  # the bytes the dict gave
    record = EvaluationRecord.read(path)
    assert record.multilabel and record.map == 0.5 and record.attention_overlap == {"gradcam": 0.25}
    single = {**head, "top1": 0.5, "top5": 1.0, "ks_target_vs_confusing": 0.125, "attention_overlap": {},
              "seconds": 2.0}
    assert list(EvaluationRecord.from_json(single).to_json().items()) == list(single.items())
    assert not EvaluationRecord.from_json(single).multilabel
    with pytest.raises(DatasetError, match=r"not a classifier evaluation .*missing \['images'\]"):
        EvaluationRecord.from_json({k: v for k, v in head.items() if k != "images"}, path)


def test_submission_record_leaves_out_scores_it_has_not(tmp_path):
    path = tmp_path / SubmissionRecord.FILE
    unscored = SubmissionRecord(segmenter="baseline-gradcam", split="test", tarball="t.tar.gz")
    unscored.write(path)
    assert json.loads(path.read_text()) == {"segmenter": "baseline-gradcam", "split": "test", "tarball": "t.tar.gz",
                                            "test_miou": None}
    scored = SubmissionRecord(segmenter="s", split="test", tarball=None, test_miou=0.5, test_scores={"miou": 0.5})
    scored.write(path)
    assert list(json.loads(path.read_text())) == ["segmenter", "split", "tarball", "test_miou", "test_scores"]
    assert SubmissionRecord.read(path) == scored


def test_metrics_history_round_trip_and_refusal(tmp_path):
    path = tmp_path / MetricsHistory.FILE
    assert MetricsHistory.read(path) is None
    history = MetricsHistory([{"epoch": 1, "train_loss": 0.5}, {"epoch": 2, "train_loss": 0.25}])
    history.write(path)
    assert json.loads(path.read_text()) == history.entries and MetricsHistory.read(path) == history
    path.write_text('{"epoch": 1}')
    with pytest.raises(DatasetError, match=r"metrics.json: not a training history .*expected a list of objects"):
        MetricsHistory.read(path)
    path.write_text("[")
    with pytest.raises(DatasetError, match=r"metrics.json: unreadable training history"):
        MetricsHistory.read(path)
