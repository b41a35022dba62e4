"""The built-in pretrained start (classify/pretrain.py, docs/method.md §8): made once per cache key,
found again, the same weights in every network that asks for it, and no evaluation image among its
pretraining images."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from classify.pretrain import ensure_pretrained, pretrain_key, resolve_builtin
from data.builtin import build_builtin_dataset, render_image
from segment.models import build_segmenter
from sharpen_attention.classifiers import build_classifier
from sharpen_core.config import load_config
from sharpen_core.errors import UserError
from sharpen_core.pretrained import weights_file

TINY_PRETRAIN = ["pretrain.size=\"pretrain-small\"", "pretrain.epochs=1", "pretrain.max_batches_per_epoch=2",
                 "pretrain.image_size=32", "pretrain.batch_size=8", "data.num_workers=0"]


def _digests(root: Path) -> dict[str, str]:
    """sha256 of every JPEG's decoded pixels under ``root`` (id -> digest)."""
    from data.io import read_image

    return {p.stem: hashlib.sha256(read_image(p).tobytes()).hexdigest() for p in sorted((root / "JPEGImages").glob("*.jpg"))}


def test_pretraining_images_are_never_evaluation_images(builtin_small, tmp_path):
    eval_root, summary = builtin_small
    pre_root = tmp_path / "pre"
    pre = build_builtin_dataset(pre_root, seed=0, size="pretrain-small", workers=1, progress=False)
    assert pre["splits"] == {"train": 256, "val": 32, "test": 0}
    pre_digests, eval_digests = _digests(pre_root), _digests(eval_root)
    assert len(pre_digests) == 288 and len(eval_digests) == sum(summary["splits"].values())
    assert not set(pre_digests.values()) & set(eval_digests.values())
    assert not set(pre_digests) & set(eval_digests)  # ids differ too (bi_ptrain_..., bi_train_...)
    # same seed, split and index: another random stream
    a, b = render_image(0, "train", 3), render_image(0, "train", 3, stream=1)
    assert a.image.shape != b.image.shape or not np.array_equal(a.image, b.image)
    # stream 0 is the train/val/test set itself (byte-identical builds rest on this)
    assert np.array_equal(render_image(0, "val", 1).image, render_image(0, "val", 1, stream=0).image)


def test_key_follows_what_makes_the_weights_only():
    cfg = load_config("configs/quick.toml", TINY_PRETRAIN)
    key = pretrain_key(cfg)
    assert pretrain_key(load_config("configs/quick.toml", TINY_PRETRAIN + ["data.num_workers=2"])) == key
    assert pretrain_key(load_config("configs/quick.toml", TINY_PRETRAIN + ["classify.epochs=9"])) == key
    assert pretrain_key(load_config("configs/quick.toml", TINY_PRETRAIN + ["run.seed=3"])) == key
    for change in ("pretrain.epochs=2", "pretrain.seed=1", "pretrain.lr=0.1", "pretrain.image_size=48",
                   "classify.arch=\"resnet50\""):
        assert pretrain_key(load_config("configs/quick.toml", TINY_PRETRAIN + [change])) != key, change


def test_unresolved_or_missing_builtin_weights_are_refused():
    with pytest.raises(UserError, match="resolved"):
        weights_file("builtin")
    with pytest.raises(UserError, match="not in this machine's cache"):
        weights_file("builtin:0123456789abcdef")
    assert weights_file("none") == "none" and weights_file("/x/y.pt") == "/x/y.pt"


def test_pretrained_once_then_reused_and_the_same_start_everywhere(sharpen_cache):
    cfg = load_config("configs/quick.toml", TINY_PRETRAIN + ["classify.weights=\"builtin\"",
                                                             "segment.weights=\"builtin\""])
    first = ensure_pretrained(cfg, progress=False)
    assert first["cache_hit"] is False and first["key"] == pretrain_key(cfg)
    assert Path(sharpen_cache, "pretrained", first["key"], "weights.pt").is_file()
    resolved, record = resolve_builtin(cfg, progress=False)
    assert record["cache_hit"] is True and record["key"] == first["key"]
    assert resolved.classify.weights == resolved.segment.weights == "builtin:" + first["key"]
    assert cfg.classify.weights == "builtin"  # the caller's config is left as it was

    weights = torch.load(weights_file(resolved.classify.weights), weights_only=True)
    body = {k: v for k, v in weights.items() if not k.startswith("fc.")}
    assert len(body) > 100
    classifier = build_classifier(resolved.classify.arch, 20, resolved.classify.weights, 16).state_dict()
    encoder = build_segmenter(resolved.segment.model, resolved.segment.encoder, 21, resolved.segment.weights).state_dict()
    assert not torch.equal(classifier["fc.weight"], weights["fc.weight"])  # a new head, as after ImageNet
    for k, v in body.items():
        assert torch.equal(classifier[k], v), k
        if not k.endswith("num_batches_tracked"):
            assert torch.equal(encoder["encoder." + k], v), k
    # a random start is not this start
    assert not torch.equal(build_classifier("resnet18", 20).state_dict()["conv1.weight"], body["conv1.weight"])


@pytest.mark.slow
def test_sharpen_run_starts_every_network_from_the_cached_start(builtin_small, tmp_path, sharpen_cache):
    """`sharpen run` with weights = "builtin": the classify stage makes (or finds) the start and records it;
    both classifiers and the segmenter record the resolved key; a second run finds it in the cache."""
    from pipeline.cli import main
    from runs import run_args

    sets = [a for s in TINY_PRETRAIN for a in ("--set", s)]
    sets += ["--set", "classify.weights=\"builtin\"", "--set", "segment.weights=\"builtin\"",
             "--set", "run.stages=[\"data\", \"classify\", \"cues\", \"segment\"]",
             "--set", "run.cue_sets=[\"baseline:gradcam\", \"icasc:channel\"]",
             "--set", "run.segment_cue_sets=[\"baseline:gradcam\"]", "--set", "run.full_supervision=false"]
    assert main(run_args(tmp_path / "a", builtin_small[0], *sets)) == 0
    cfg = load_config("configs/quick.toml", TINY_PRETRAIN + ["classify.weights=\"builtin\""])
    key = pretrain_key(cfg)
    first = json.loads((tmp_path / "a" / "classify" / "pretrain.json").read_text())
    assert first["key"] == key
    second = json.loads((tmp_path / "a" / "segment" / "pretrain.json").read_text())
    assert second["key"] == key and second["cache_hit"] is True
    for variant in ("baseline", "icasc"):
        text = (tmp_path / "a" / "classify" / variant / "config.toml").read_text()
        assert f'weights = "builtin:{key}"' in text, variant
    assert f'weights = "builtin:{key}"' in (tmp_path / "a" / "segment" / "baseline-gradcam" / "config.toml").read_text()
    # another run folder (e.g. another seed) finds the weights in the cache
    assert main(run_args(tmp_path / "b", builtin_small[0], *sets, "--only", "data")) == 0
    assert main(run_args(tmp_path / "b", builtin_small[0], *sets, "--only", "classify")) == 0
    assert json.loads((tmp_path / "b" / "classify" / "pretrain.json").read_text())["cache_hit"] is True
