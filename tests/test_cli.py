"""The `sharpen` command: every subcommand has --help; eval scores a prediction folder; errors exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from data.io import read_mask, write_mask
from data.voc import VOCSegmentation
from pipeline.cli import STAGES, main

SUBCOMMANDS = [["data"], ["data", "build"], ["data", "check"], ["data", "stats"], ["classify"], ["classify", "train"],
               ["classify", "evaluate"], ["cues"], ["cues", "extract"], ["cues", "sec"], ["cues", "evaluate"],
               ["cues", "show"], ["segment"], ["segment", "train"], ["segment", "predict"],
               ["eval"], ["eval", "segmentation"], ["run"], ["report"]]


@pytest.mark.parametrize("words", SUBCOMMANDS, ids=" ".join)
def test_every_subcommand_has_help(words, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*words, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: sharpen " + " ".join(words)) and "options:" in out


def test_top_level_lists_every_stage(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for stage in STAGES:
        assert stage in out


def test_console_script_and_python_m():
    script = Path(sys.executable).parent / "sharpen"
    assert script.is_file(), "the `sharpen` console script is not installed"
    out = subprocess.run([str(script), "data", "--help"], capture_output=True, text=True, check=True).stdout
    assert "usage: sharpen data" in out
    out = subprocess.run([sys.executable, "-m", "eval", "segmentation", "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "usage: sharpen eval segmentation" in out


def test_segment_train_without_cues_says_what_to_give(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[data]\nroot = "nowhere"\n')
    assert main(["segment", "train", "--config", str(cfg), "--quiet"]) == 2
    assert "needs --cues" in capsys.readouterr().err


def _write_predictions(voc: Path, out: Path, corrupt_class: int | None = None) -> None:
    ds = VOCSegmentation(voc, "val")
    for image_id in ds.ids:
        gt = read_mask(ds.mask_path(image_id))
        pred = np.where(gt == 255, 0, gt).astype(np.uint8)
        if corrupt_class is not None:
            pred[pred > 0] = corrupt_class
        write_mask(out / f"{image_id}.png", pred)


def test_eval_segmentation_perfect_and_wrong(tiny_voc, tmp_path, capsys):
    pred = tmp_path / "pred"
    _write_predictions(tiny_voc, pred)
    assert main(["eval", "segmentation", "--pred", str(pred), "--root", str(tiny_voc), "--quiet",
                 "--json", str(tmp_path / "s.json")]) == 0
    out = capsys.readouterr().out
    assert "mIoU" in out and "100.00" in out
    import json

    scores = json.loads((tmp_path / "s.json").read_text())
    assert scores["miou"] == 1.0 and scores["per_class_iou"]["aeroplane"] is None
    _write_predictions(tiny_voc, pred, corrupt_class=1)  # every object called aeroplane
    main(["eval", "segmentation", "--pred", str(pred), "--root", str(tiny_voc), "--quiet",
          "--json", str(tmp_path / "s.json")])
    scores = json.loads((tmp_path / "s.json").read_text())
    assert scores["miou"] < 0.5 and scores["per_class_iou"]["aeroplane"] == 0.0


def test_eval_segmentation_bad_predictions(tiny_voc, tmp_path, capsys):
    pred = tmp_path / "pred"
    _write_predictions(tiny_voc, pred)
    victim = pred / "2007_000005.png"
    victim.unlink()
    assert main(["eval", "segmentation", "--pred", str(pred), "--root", str(tiny_voc), "--quiet"]) == 2
    assert f"{victim}: prediction missing" in capsys.readouterr().err
    write_mask(victim, np.zeros((3, 3), dtype=np.uint8))
    assert main(["eval", "segmentation", "--pred", str(pred), "--root", str(tiny_voc), "--quiet"]) == 2
    assert "expected the image size" in capsys.readouterr().err
    write_mask(victim, np.full(VOCSegmentation(tiny_voc, "val").load(1)["mask"].shape, 21, dtype=np.uint8))
    assert main(["eval", "segmentation", "--pred", str(pred), "--root", str(tiny_voc), "--quiet"]) == 2
    assert "prediction values [21] out of range; expected 0-20" in capsys.readouterr().err
    assert main(["eval", "segmentation", "--pred", str(pred), "--root", str(tiny_voc), "--split", "test"]) == 2
    assert "has no ground-truth masks" in capsys.readouterr().err


def test_bad_config_exits_2(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[data]\nrooot = 'x'\n")
    assert main(["run", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'data.rooot'" in err and str(cfg) in err


# --------------------------------------------------------------------------- user errors vs bugs

def _one_line(err: str) -> str:
    """The stderr of a refused command: exactly one line, ``error: ...``."""
    assert err.count("\n") == 1 and err.endswith("\n") and err.startswith("error: "), repr(err)
    return err


@pytest.mark.parametrize("bug", [ValueError("a bug's value"), KeyError("a bug's key"), RuntimeError("a bug")],
                         ids=lambda e: type(e).__name__)
def test_an_internal_error_is_a_bug_not_bad_input(bug, monkeypatch, tmp_path, capsys):
    """Anything but a UserError leaves main() (its traceback, exit status 1), never exit 2 'error: ...'."""
    import data.stats

    def broken(*args, **kwargs):
        raise bug

    monkeypatch.setattr(data.stats, "dataset_stats", broken)
    with pytest.raises(type(bug)) as info:
        main(["data", "stats", "--root", str(tmp_path), "--quiet"])
    assert info.value is bug
    assert "error:" not in capsys.readouterr().err


def test_an_internal_error_exits_1_with_its_traceback(tmp_path):
    code = ("import sys, data.stats, pipeline.cli\n"
            "def broken(*a, **k): raise ValueError('injected bug')\n"
            "data.stats.dataset_stats = broken\n"
            f"sys.exit(pipeline.cli.main(['data', 'stats', '--root', {str(tmp_path)!r}, '--quiet']))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert "Traceback (most recent call last)" in out.stderr and "ValueError: injected bug" in out.stderr
    assert "error:" not in out.stderr


def test_a_user_error_exits_2_with_one_line(monkeypatch, tmp_path, capsys):
    import data.stats
    from sharpen_core.errors import DatasetError

    def refuses(*args, **kwargs):
        raise DatasetError(tmp_path / "x.png", "not a PNG; expected a mask")

    monkeypatch.setattr(data.stats, "dataset_stats", refuses)
    assert main(["data", "stats", "--root", str(tmp_path), "--quiet"]) == 2
    assert _one_line(capsys.readouterr().err) == f"error: {tmp_path / 'x.png'}: not a PNG; expected a mask\n"


def test_interrupt_exits_130(monkeypatch, tmp_path, capsys):
    import data.stats

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(data.stats, "dataset_stats", interrupted)
    assert main(["data", "stats", "--root", str(tmp_path), "--quiet"]) == 130
    assert capsys.readouterr().err == "interrupted\n"


@pytest.mark.parametrize("argv, said", [
    (["cues", "extract", "--checkpoint", "c.pt", "--mechanism", "gradcam", "--shard", "3/2"],
     "--shard 3/2: expected I/N with 0 <= I < N, e.g. 0/4"),
    (["cues", "extract", "--checkpoint", "c.pt", "--mechanism", "gradcam", "--shard", "a/b"],
     "--shard 'a/b': expected I/N with integers, e.g. 0/4"),
    (["cues", "extract", "--checkpoint", "c.pt", "--mechanism", "nonsense"], "unknown mechanism 'nonsense'"),
    (["cues", "evaluate", "--maps", "a", "--maps", "b", "--out", "q"], "--out needs a single --maps"),
    (["cues", "show", "--out", "x.png"], "nothing to show: give extraction folders (--maps)"),
    (["cues", "extract", "--checkpoint", "c.pt", "--mechanism", "gradcam", "--set", "cues.batch_size=0"],
     "cues.batch_size must be positive, got 0"),
    (["segment", "train", "--supervision", "full", "--set", "segment.iterations=0"],
     "segment.iterations must be positive, got 0"),
    (["report", "--run-dir", "no-such-run"], "no-such-run: run folder not found"),
], ids=["shard-range", "shard-syntax", "mechanism", "evaluate-out", "show-nothing", "cues-config", "iterations",
        "report-folder"])
def test_bad_arguments_exit_2_with_one_line(argv, said, tmp_path, monkeypatch, capsys):
    """Bad arguments and config values are the user's to fix: exit 2, one line saying what was expected."""
    monkeypatch.chdir(tmp_path)  # the default run folder (runs/default) goes here
    assert main(argv) == 2
    assert said in _one_line(capsys.readouterr().err)


@pytest.fixture
def not_checkpoints(tmp_path) -> dict[str, Path]:
    """Files that are no PyTorch checkpoint: the README, 2 KB of random bytes, random bytes after the pickle
    PROTO opcode (so torch's unpickler reads them), an empty file."""
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, 2048, dtype=np.uint8).tobytes()
    files = {"readme": Path(__file__).resolve().parent.parent / "README.md", "random": tmp_path / "x.pt",
             "pickle-like": tmp_path / "p.pt", "empty": tmp_path / "e.pt"}
    files["random"].write_bytes(b"\x13" + noise[1:])
    files["pickle-like"].write_bytes(b"\x80\x02" + noise[2:])
    files["empty"].write_bytes(b"")
    return files


@pytest.mark.parametrize("kind, what", [
    ("readme", "not a PyTorch checkpoint (a text file, starting '# sharpen-focus')"),
    ("random", "not a PyTorch checkpoint (neither a zip archive nor a pickle)"),
    ("pickle-like", "not a PyTorch checkpoint of this project (could not unpickle: "),
    ("empty", "not a PyTorch checkpoint (the file is empty)"),
])
def test_a_file_that_is_no_checkpoint_is_one_line(kind, what, not_checkpoints, tiny_voc, tmp_path, capsys):
    path = not_checkpoints[kind]
    argv = ["cues", "extract", "--checkpoint", str(path), "--mechanism", "gradcam", "--out", str(tmp_path / "m"),
            "--set", f"data.root={tiny_voc}", "--set", "run.device=cpu", "--quiet"]
    assert main(argv) == 2
    err = _one_line(capsys.readouterr().err)
    assert err.startswith(f"error: {path}: {what}"), err
    assert err.endswith("; expected a checkpoint.pt written by `sharpen classify train`\n"), err
    assert "issue" not in err and "weights_only" not in err


def test_a_checkpoint_of_the_wrong_kind_is_one_line(tiny_voc, tmp_path, capsys):
    import torch

    tensor, weights = tmp_path / "tensor.pt", tmp_path / "weights.pt"
    torch.save(torch.zeros(3), tensor)
    torch.save({"conv.weight": torch.zeros(1)}, weights)  # a bare state dict: no 'model' inside
    for path, held in ((tensor, "Tensor"), (weights, "a dict with keys ['conv.weight']")):
        argv = ["cues", "extract", "--checkpoint", str(path), "--mechanism", "gradcam", "--out",
                str(tmp_path / "m"), "--set", f"data.root={tiny_voc}", "--set", "run.device=cpu", "--quiet"]
        assert main(argv) == 2
        err = _one_line(capsys.readouterr().err)
        assert err == (f"error: {path}: a PyTorch file holding {held}, not a checkpoint with a 'model' state dict; "
                       "expected a checkpoint.pt written by `sharpen classify train`\n")
