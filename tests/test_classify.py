"""Stage 1 end to end on the small built-in dataset: training lowers the loss, resume reproduces an
uninterrupted run, 2-process gloo DDP matches one process, evaluation, and refusals of bad input."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from classify.evaluate import evaluate_classifier
from sharpen_attention.classifiers import CheckpointMismatch, build_classifier
from classify.train import icasc_classes, load_checkpoint, train_classifier
from pipeline.cli import main
from sharpen_core.config import load_config
from sharpen_core.checkpoints import RESUME_KEYS

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def small_root(builtin_small) -> Path:
    return builtin_small[0]  # the session's small built-in dataset


def _cfg(root: Path, *extra: str):
    return load_config(REPO / "configs" / "quick.toml", [
        f"data.root={root}", "run.device=cpu", "data.num_workers=0", "classify.image_size=32",
        "classify.batch_size=4", "classify.lr=0.05", *extra])


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def test_icasc_classes_puts_confusing_first():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 5.0, 4.0]])
    labels = torch.tensor([[1.0, 0, 1, 0], [0, 0, 1, 0]])
    idx = icasc_classes(logits, {"label": labels}, multilabel=True)
    assert idx.tolist() == [[1, 0, 2], [3, 2, -1]]
    idx = icasc_classes(logits, {"target": torch.tensor([1, 2])}, multilabel=False)
    assert idx.tolist() == [[0, 1], [3, 2]]


@pytest.mark.parametrize("variant", ["baseline", "icasc"])
def test_training_lowers_the_loss(small_root, tmp_path, variant):
    cfg = _cfg(small_root, "classify.epochs=4")
    train_classifier(cfg, variant, tmp_path, progress=False, max_batches=3)
    history = json.loads((tmp_path / "metrics.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert history[-1]["train_cls"] < history[0]["train_cls"]
    if variant == "icasc":
        for key in ("train_as_inner", "train_as_last"):
            assert all(0.0 <= h[key] <= 1.0 for h in history)
        assert all(cfg.classify.theta - 1 <= h["train_ac"] <= cfg.classify.theta for h in history)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["variant"] == variant and state["epoch"] == 4 and state["arch"] == "resnet18"
    # a finished run is skipped, not redone
    assert train_classifier(cfg, variant, tmp_path, progress=False, max_batches=3)["epoch"] == 4


def test_resume_after_interruption_reproduces_uninterrupted_run(small_root, tmp_path):
    cfg = _cfg(small_root, "classify.epochs=2")
    train_classifier(cfg, "icasc-gradcam", tmp_path / "full", progress=False, max_batches=3)
    out = train_classifier(cfg, "icasc-gradcam", tmp_path / "cut", progress=False, max_batches=3,
                           stop_after_batches=4)  # dies in the middle of epoch 2
    cut_state = load_checkpoint(tmp_path / "cut" / "checkpoint.pt")
    assert out["interrupted"] and cut_state["epoch"] == 1 and set(RESUME_KEYS) <= cut_state.keys()
    # the finished run's checkpoint keeps weights and history only: nothing is left to resume
    assert not set(RESUME_KEYS) & load_checkpoint(tmp_path / "full" / "checkpoint.pt").keys()
    with pytest.raises(ValueError, match="pass --resume"):
        train_classifier(cfg, "icasc-gradcam", tmp_path / "cut", progress=False, max_batches=3)
    train_classifier(cfg, "icasc-gradcam", tmp_path / "cut", resume=True, progress=False, max_batches=3)
    full, cut = _weights(tmp_path / "full" / "checkpoint.pt"), _weights(tmp_path / "cut" / "checkpoint.pt")
    assert full.keys() == cut.keys() and len(full) > 100  # every tensor of a ResNet-18
    for k in full:
        assert torch.equal(full[k], cut[k]), k
    assert json.loads((tmp_path / "full" / "metrics.json").read_text())[-1]["train_loss"] == \
        json.loads((tmp_path / "cut" / "metrics.json").read_text())[-1]["train_loss"]


@pytest.mark.slow
def test_ddp_two_processes_match_one(small_root, tmp_path):
    """`sharpen classify train` under torchrun, 2 gloo processes (CI runs it; about 30 s on 2 cores): both
    ranks end with the same weights, those of rank 0's checkpoint and of one process on the same global
    batches; rank 0 alone writes. ICASC, whose gradients are averaged by hand (classify/train.py
    _allreduce_grads), not by DDP's hooks."""
    sets = ["--set", f"data.root={small_root}", "--set", "run.device=cpu", "--set", "data.num_workers=0",
            "--set", "classify.image_size=32", "--set", "classify.batch_size=4", "--set", "classify.epochs=1",
            "--set", "classify.max_batches_per_epoch=3",
            "--set", "classify.freeze_bn=true"]  # CPU has no SyncBatchNorm: frozen BN makes the runs comparable
    args = ["classify", "train", "--config", str(REPO / "configs" / "quick.toml"), "--variant", "icasc", "--quiet",
            *sets]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    two, ranks_dir = tmp_path / "two", tmp_path / "ranks"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(REPO / "tests" / "ddp_classify.py"), str(ranks_dir), *args, "--out", str(two)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [torch.load(ranks_dir / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [(r["rank"], r["world_size"], r["rc"]) for r in ranks] == [(0, 2, 0), (1, 2, 0)]
    # the same weights on both ranks, bit for bit: every step applied the same averaged gradients
    w0, w1 = ranks[0]["weights"], ranks[1]["weights"]
    assert w0.keys() == w1.keys() and len(w0) > 100
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    # rank 0's checkpoint holds them, and they are one process's on the same 3 batches of 4 images
    one, saved = _weights(tmp_path / "one" / "checkpoint.pt"), _weights(two / "checkpoint.pt")
    assert saved.keys() == w0.keys() == one.keys()
    for k in w0:
        assert torch.equal(saved[k], w0[k]), k
        if w0[k].is_floating_point():
            torch.testing.assert_close(w0[k], one[k], rtol=1e-4, atol=1e-5, msg=k)
    # rank 0 alone wrote, each of the run's files once, into --out; rank 1 wrote nothing anywhere
    assert ranks[1]["written"] == []
    files = ("checkpoint.pt", "config.toml", "metrics.json")
    assert sorted(ranks[0]["written"]) == [str(two.resolve() / name) for name in files]
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())
    history = json.loads((two / "metrics.json").read_text())
    assert [h["epoch"] for h in history] == [1] and history[0]["images"] == 12  # 3 batches of 4, over 2 ranks
    assert all(math.isfinite(history[0][k]) and history[0][k] > 0 for k in ("train_loss", "train_cls"))


def test_evaluate_and_refusals(small_root, tmp_path, capsys):
    cfg = _cfg(small_root, "classify.epochs=1")
    train_classifier(cfg, "baseline", tmp_path, progress=False, max_batches=2)
    result = evaluate_classifier(cfg, tmp_path / "checkpoint.pt", out_json=tmp_path / "e.json", progress=False)
    assert 0 <= result["map"] <= 1 and 0 <= result["macro_auc"] <= 1
    assert result["per_class_ap"]["bicycle"] is None  # not a class of the built-in dataset
    # the overlap at the last and the inner layer, Grad-CAM and channel-weighted always (docs/method.md §2.7)
    assert set(result["attention_overlap"]) == set(result["attention_overlap_inner"]) == {"gradcam", "channel"}
    assert all(0 <= v <= 1 for layer in ("attention_overlap", "attention_overlap_inner")
               for v in result[layer].values())
    assert 0 <= result["ks_target_vs_confusing"] <= 1
    # |g·ΣA|/2 at the cue layer (quick.toml: cues.layer), over every positive gradient of the images' targets
    lin = result["gradcampp_linearity"]
    assert lin["layer"] == cfg.cues.layer and lin["module"] in ("layer3", "layer4") and lin["entries"] > 0
    assert 0 <= lin["median"] <= lin["p90"] <= lin["p99"] <= lin["max"]
    saved = json.loads((tmp_path / "e.json").read_text())
    assert saved["images"] == result["images"] and saved["gradcampp_linearity"] == lin
    assert saved["attention_overlap_inner"] == result["attention_overlap_inner"]
    more = evaluate_classifier(cfg, tmp_path / "checkpoint.pt", mechanisms=("gradcampp",), progress=False,
                               max_batches=1)
    assert list(more["attention_overlap"]) == list(more["attention_overlap_inner"]) == ["gradcam", "channel",
                                                                                         "gradcampp"]
    # a checkpoint of another architecture is refused, saying which
    with pytest.raises(CheckpointMismatch, match="architecture 'resnet18', but this run uses 'resnet50'"):
        evaluate_classifier(_cfg(small_root, "classify.arch=resnet50"), tmp_path / "checkpoint.pt", progress=False)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    state["num_classes"] = 100
    torch.save(state, tmp_path / "other.pt")
    assert main(["classify", "evaluate", "--config", str(REPO / "configs" / "quick.toml"), "--checkpoint",
                 str(tmp_path / "other.pt"), "--quiet", "--set", f"data.root={small_root}"]) == 2
    assert "checkpoint is for 100 classes, but this dataset has 20" in capsys.readouterr().err


def test_bad_variant_arch_and_weights(small_root, tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown variant 'icasc2'; expected one of: baseline, icasc-gradcam, icasc"):
        train_classifier(_cfg(small_root), "icasc2", tmp_path)
    with pytest.raises(ValueError, match="unknown architecture 'resnet19'; expected one of: resnet18"):
        build_classifier("resnet19", 20)
    torch.save(build_classifier("resnet18", 20).state_dict(), tmp_path / "r18.pt")
    with pytest.raises(CheckpointMismatch, match="weights do not fit resnet50"):
        build_classifier("resnet50", 20, str(tmp_path / "r18.pt"))
    model = build_classifier("resnet18", 5, str(tmp_path / "r18.pt"))  # head of another size: body only
    assert model.fc.out_features == 5
    with pytest.raises(SystemExit):
        main(["classify", "train", "--variant", "nope"])
    assert "invalid choice: 'nope'" in capsys.readouterr().err


def test_resuming_from_a_finished_checkpoint_is_refused_by_name():
    from sharpen_core.checkpoints import restore_training_state

    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"checkpoint lacks \['optimizer', 'scheduler', 'scaler', 'rng_cpu'\]"):
        restore_training_state({"model": model.state_dict()}, model, optimizer, None, None, torch.device("cpu"))
