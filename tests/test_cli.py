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
