"""Typed records of quality.json, predict.json and the stage records: one module reads and writes each."""

from __future__ import annotations

import json

import pytest

from sharpen_core.errors import DatasetError
from sharpen_core.stage_records import PredictRecord, QualityRecord, StageRecord, read_predict_params, \
    write_predict_running


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
