"""The report's line on the pretrained start (pipeline/start.py): which seeds made it, which found it cached."""

from __future__ import annotations

from pipeline.start import aggregate_pretrained, pretrained_markdown


def _record(hit: bool) -> dict:
    return {"key": "abc123", "arch": "resnet18", "cache_hit": hit, "val_map": 0.869, "data_seconds": 98.0,
            "train_seconds": 745.0, "images": {"train": 4800, "val": 320},
            "pretrain": {"size": "pretrain", "seed": 0, "epochs": 6, "image_size": 64, "output_stride": 32}}


def test_seeds_that_made_and_that_found_the_start():
    summary = {"per_seed": [{"seeds": [0], "pretrained": _record(False), "pretrained_segmenters": True},
                            {"seeds": [1], "pretrained": _record(True), "pretrained_segmenters": True},
                            {"seeds": [2], "pretrained": _record(True), "pretrained_segmenters": True}]}
    p = aggregate_pretrained(summary)
    assert p["made_by_seeds"] == [0] and p["cache_hit_seeds"] == [1, 2] and p["segmenters"] is True
    text = pretrained_markdown(p)
    assert "`builtin:abc123`" in text and "every classifier and segmenter encoder" in text
    assert "4800 train images" in text and "6 epochs at 64 px" in text and "val mAP 86.9" in text
    assert "0:14:03 (rendering 98 s, training 745 s)" in text  # 98 + 745 = 843 s
    assert "by this run (seed 0)" in text and "cache by seeds 1, 2" in text


def test_a_run_without_the_builtin_start_says_which_weights():
    assert aggregate_pretrained({"seeds": [0], "pretrained": None}) is None
    assert pretrained_markdown(None, {"classify": {"weights": "none"}}) == \
        "Start: `classify.weights = 'none'` (random weights)."
    one = aggregate_pretrained({"seeds": [3], "pretrained": _record(True), "pretrained_segmenters": False})
    assert one["cache_hit_seeds"] == [3] and "every classifier from" in pretrained_markdown(one)
