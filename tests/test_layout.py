"""The run-folder layout shared by `sharpen run` and the stage subcommands' default --out."""

from __future__ import annotations

from pathlib import Path

from sharpen_core.layout import CHECKPOINT_NAME, RunLayout, segmenter_for_cues, segmenter_name


def test_each_cue_set_gets_its_own_segmenter_folder(tmp_path):
    layout = RunLayout(tmp_path / "run")
    a, b = layout.cues("baseline", "gradcam", "train"), layout.cues("icasc", "channel", "train")
    assert a == tmp_path / "run" / "cues" / "baseline" / "gradcam" / "train" / "sec"
    names = {segmenter_for_cues(a, "train"), segmenter_for_cues(b, "train")}
    assert names == {"baseline-gradcam", "icasc-channel"}  # two `--cues X/sec` no longer share a folder
    # the same folder `sharpen run` trains that cue set's segmenter in
    assert layout.segmenter(segmenter_for_cues(a, "train")) == layout.segmenter(segmenter_name("baseline", "gradcam"))
    # cues of another split than the training split are told apart by it
    assert segmenter_for_cues(layout.cues("baseline", "gradcam", "train_aug"), "train") == "baseline-gradcam-train_aug"
    # a cue folder outside the layout keeps its own name
    assert segmenter_for_cues(tmp_path / "my_cues", "train") == "my_cues"


def test_cli_defaults_follow_the_layout(tmp_path, monkeypatch):
    import pipeline.cli as cli

    calls = {}
    monkeypatch.setattr("segment.train.train_segmenter", lambda cfg, out, **kw: calls.setdefault("train", Path(out)))
    monkeypatch.setattr("segment.predict.predict_split", lambda cfg, ckpt, split, out, **kw: calls.setdefault(
        "predict", Path(out)))
    run = tmp_path / "run"
    cues = RunLayout(run).cues("icasc", "channel", "train")
    sets = ["--set", f"run.run_dir={run}"]
    assert cli.main(["segment", "train", *sets, "--cues", str(cues), "--quiet"]) == 0
    assert calls["train"] == RunLayout(run).segmenter("icasc-channel")
    checkpoint = calls["train"] / "checkpoint.pt"
    assert cli.main(["segment", "predict", *sets, "--checkpoint", str(checkpoint), "--quiet"]) == 0
    assert calls["predict"] == RunLayout(run).prediction("icasc-channel", "val")


def test_the_files_of_a_run_have_one_name_each(tmp_path):
    import classify.train
    import segment.train

    layout = RunLayout(tmp_path)
    assert layout.classifier_checkpoint("icasc") == tmp_path / "classify" / "icasc" / "checkpoint.pt"
    assert layout.segmenter_checkpoint("full") == tmp_path / "segment" / "full" / "checkpoint.pt"
    assert layout.classifier_evaluation("icasc") == tmp_path / "classify" / "icasc" / "evaluation.json"
    assert layout.classifier_metrics("icasc").name == layout.segmenter_metrics("full").name == "metrics.json"
    assert layout.submission() == tmp_path / "predict" / "submission.json"
    # the trainers write where the layout reads
    assert classify.train.CHECKPOINT == segment.train.CHECKPOINT == CHECKPOINT_NAME == "checkpoint.pt"
    assert classify.train.METRICS == segment.train.METRICS == layout.classifier_metrics("x").name
