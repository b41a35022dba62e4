"""`sharpen run` end to end on configs/quick.toml: the report, its numbers, skipping, resuming, refusing.

The quick run (a few training steps of everything on the small built-in dataset) is done once per
session (``quick_run`` in conftest.py); the other tests reuse its dataset and compare against its
report. All of them are end to end: ``slow`` (``pytest -m "not slow"`` leaves them out).
"""

from __future__ import annotations

import errno
import json
import shutil
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from runs import ROW_KEYS
from runs import copy_finished_stages as _copy_finished_stages
from runs import report_rows as _rows
from runs import run_args as _args
from runs import wait_for as _wait_for

from pipeline.cli import main

pytestmark = pytest.mark.slow
FRACTIONS = ("cls_map", "cls_auc", "attention_overlap", "cue_best_tau", "cue_miou", "seed_precision", "seed_recall",
             "seg_miou", "seg_miou_crf")



def _eval_miou(pred: Path, data_root: Path, split: str, tmp_path: Path) -> float:
    out = tmp_path / f"eval-{pred.parent.parent.name}-{pred.name}.json"
    assert main(["eval", "segmentation", "--pred", str(pred), "--gt", str(data_root), "--split", split,
                 "--json", str(out), "--quiet"]) == 0
    return json.loads(out.read_text())["miou"]


def test_quick_run_writes_a_report_of_real_measurements(quick_run, tmp_path):
    run_dir, data_root, seconds = quick_run
    report = json.loads((run_dir / "report.json").read_text())
    assert {"rows", "full_supervision_miou", "stages", "config"} <= set(report)
    assert report["config"]["run"]["name"] == "quick"
    # one row per classifier variant x mechanism of the cue sets; icasc-gradcam has no cue set: cls numbers only
    assert set(_rows(report)) == {("baseline", "gradcam"), ("baseline", "gradcampp"), ("baseline", "channel"),
                                  ("icasc", "channel"), ("icasc-gradcam", None)}
    for row in report["rows"]:
        assert ROW_KEYS <= set(row)
        assert row["cls_map"] is not None and 0.0 <= row["cls_map"] <= 1.0
        if row["mechanism"] is None:
            continue
        for key in FRACTIONS:
            assert row[key] is not None and 0.0 <= row[key] <= 1.0, (row["classifier"], row["mechanism"], key)
        # the segmenter numbers are what `sharpen eval` computes from the saved predictions
        pred = run_dir / "predict" / f"{row['classifier']}-{row['mechanism']}" / "val"
        assert row["seg_miou"] == pytest.approx(_eval_miou(pred / "pred", data_root, "val", tmp_path), abs=1e-9)
        assert row["seg_miou_crf"] == pytest.approx(_eval_miou(pred / "pred_crf", data_root, "val", tmp_path),
                                                    abs=1e-9)
        quality = json.loads((run_dir / "cues" / row["classifier"] / row["mechanism"] / "train" / "quality"
                              / "quality.json").read_text())
        assert row["cue_miou"] == quality["best_miou"] and row["cue_best_tau"] == quality["best_tau"]
    full = run_dir / "predict" / "full" / "val" / "pred_crf"
    assert report["full_supervision_miou_crf"] == pytest.approx(_eval_miou(full, data_root, "val", tmp_path))
    for stage in ("data", "classify", "cues", "segment", "predict", "report"):
        assert report["stages"][stage]["wall_seconds"] > 0 and report["stages"][stage]["peak_rss_mib"] > 0
    # the test-split submission of the best segmenter, scored against the held-back masks
    submission = report["submission"]
    assert Path(submission["tarball"]).is_file() and 0.0 <= submission["test_miou"] <= 1.0
    assert submission["test_miou"] == pytest.approx(
        _eval_miou(Path(submission["tarball"]), data_root, "test", tmp_path))
    md = (run_dir / "report.md").read_text()
    assert "| baseline" in md and "gradcampp" in md
    for fig in ("per_class_iou.png", "tau_curves.png"):
        assert (run_dir / "figures" / fig).stat().st_size > 1000


def test_quick_run_scores_the_floors_and_reads_every_cue_set_against_them(quick_run):
    """The floors (docs/method.md §6.2), scored once by the cues stage on eval.cue_split: rows of report.json,
    report.md's cue table and leaderboard; each cue set's gain = its cue mIoU minus the best floor's."""
    from cues.quality import FLOORS

    run_dir, _, _ = quick_run
    report = json.loads((run_dir / "report.json").read_text())
    assert [f["name"] for f in report["floors"]] == list(FLOORS)
    outputs = json.loads((run_dir / "stages" / "cues.json").read_text())["outputs"]
    for f in report["floors"]:
        path = run_dir / "cues" / "floors" / f["name"] / "quality.json"
        quality = json.loads(path.read_text())
        assert outputs[f"floors:{f['name']}"] == str(path) and quality["split"] == report["cue_split"]
        assert f["best_miou"] == quality["best_miou"] and f["tau_curve"]["miou"] == quality["miou"]
        assert f["seed_precision"] == quality["seeds"]["mean_precision"]
        assert f["seed_recall_at_tau"] == quality["seeds_at_best_tau"]["mean_recall"]
        assert 0.0 < f["best_miou"] < 1.0
    # the uniform floor: every pixel its image's smallest label for every τ < 1, all background at τ = 1
    uniform = report["floors"][0]["tau_curve"]
    assert uniform["tau"][0] == 0.0 and uniform["tau"][-1] == 1.0
    assert len(set(uniform["miou"][:-1])) == 1 and uniform["miou"][-1] < uniform["miou"][0]
    assert report["floors"][0]["best_tau"] == 0.0 and report["floors"][0]["tau_at_edge"] is False
    best_floor = max(f["best_miou"] for f in report["floors"])
    for row in report["rows"]:
        if row["mechanism"] is None:
            assert row["cue_gain_over_floor"] is None
            continue
        assert row["cue_gain_over_floor"] == row["cue_miou"] - best_floor
        quality = json.loads((run_dir / row["maps_dir"] / "quality" / "quality.json").read_text())
        assert row["seed_precision_at_tau"] == quality["seeds_at_best_tau"]["mean_precision"]
        assert row["seed_recall_at_tau"] == quality["seeds_at_best_tau"]["mean_recall"]
    floors = [e for e in report["leaderboard"] if e["floor"]]
    assert [e["mechanism"] for e in floors] == sorted(FLOORS, key=lambda n: -next(
        f["best_miou"] for f in report["floors"] if f["name"] == n))
    md = (run_dir / "report.md").read_text()
    assert "| – | – | floor-uniform | floor: labels over the whole image |" in md
    assert "| *floor: centred prior* | floor-centre |" in md and "gain over floor" in md and "seed P@τ*" in md


def test_readme_scripts_read_the_quick_run(quick_run, tmp_path):
    """scripts/update_readme_table.py and update_readme_findings.py still read a report with floors."""
    from pipeline.claims import findings_markdown
    from pipeline.report_md import main_table_markdown

    run_dir, _, _ = quick_run
    report = json.loads((run_dir / "report.json").read_text())
    readme = tmp_path / "README.md"
    readme.write_text("a\n<!-- report-table:begin -->\n<!-- report-table:end -->\nb\n<!-- findings:begin -->\n"
                      "<!-- findings:end -->\n")
    root = Path(__file__).resolve().parent.parent
    for script, args in (("update_readme_table.py", [str(run_dir), str(readme)]),
                         ("update_readme_findings.py", [str(run_dir), "--readme", str(readme), "--results",
                                                        str(tmp_path / "results")])):
        done = subprocess.run([sys.executable, str(root / "scripts" / script), *args], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    text = readme.read_text()
    assert main_table_markdown(report).strip() in text and findings_markdown(report).strip() in text
    assert "floor-centre" in text


def test_rerun_skips_every_finished_stage(quick_run, capsys):
    run_dir, data_root, _ = quick_run
    before = {p: p.stat().st_mtime_ns for p in (run_dir / "stages").glob("*.json")}
    assert main(_args(run_dir, data_root)) == 0
    out = capsys.readouterr().out
    assert out.count("up to date, skipped") == 6
    assert {p: p.stat().st_mtime_ns for p in (run_dir / "stages").glob("*.json")} == before


def test_another_config_is_refused_and_from_redoes_the_later_stages(quick_run, tmp_path, capsys):
    run_dir, data_root, _ = quick_run
    # a segment-only change: refused, the message says how to go on
    assert main(_args(run_dir, data_root, "--set", "segment.iterations=5")) == 2
    err = capsys.readouterr().err
    assert "another config" in err and "--from segment" in err
    # unknown stage / mechanism / variant in the config, and an unknown --from stage
    for bad, words in ((["--set", 'run.stages=["data", "train"]'], "unknown stage 'train'"),
                       (["--set", 'run.cue_sets=["baseline:gradcam", "baseline:smoothcam"]'], "smoothcam"),
                       (["--set", 'run.cue_sets=["basline:gradcam"]'], "unknown classifier variant"),
                       (["--from", "segmentation"], "unknown stage")):
        assert main(_args(tmp_path / "fresh", data_root, *bad)) == 2
        assert words in capsys.readouterr().err
    # --only a stage whose predecessors are not finished
    assert main(_args(tmp_path / "fresh", data_root, "--only", "cues")) == 2
    assert "needs the earlier stage" in capsys.readouterr().err


def test_killed_run_resumes_to_the_same_report(quick_run, tmp_path):
    ref_dir, data_root, _ = quick_run
    run_dir = tmp_path / "run"
    _copy_finished_stages(ref_dir, run_dir, "cues")
    cmd = [str(Path(sys.executable).parent / "sharpen"), *_args(run_dir, data_root)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:  # kill it in the middle of the segment stage: the second segmenter has its first checkpoint
        _wait_for((run_dir / "segment" / "baseline-gradcampp", "checkpoint.pt"), proc, 1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (run_dir / "stages" / "segment.json").exists()
    finished = (run_dir / "segment" / "baseline-gradcam" / "checkpoint.pt").stat().st_mtime_ns
    cues_record = (run_dir / "stages" / "cues.json").read_text()
    assert main(_args(run_dir, data_root)) == 0
    assert (run_dir / "stages" / "cues.json").read_text() == cues_record  # finished stages are not redone
    assert (run_dir / "segment" / "baseline-gradcam" / "checkpoint.pt").stat().st_mtime_ns == finished
    ref = json.loads((ref_dir / "report.json").read_text())
    got = json.loads((run_dir / "report.json").read_text())
    assert _rows(got) == _rows(ref)
    assert got["full_supervision_miou"] == ref["full_supervision_miou"]
    assert got["submission"]["test_miou"] == ref["submission"]["test_miou"]


def test_full_disk_fails_cleanly_and_resumes(quick_run, tmp_path, monkeypatch, capsys):
    ref_dir, data_root, _ = quick_run
    import cues.extract

    real_save, calls = cues.extract.save_maps, {"n": 0}

    def save_then_fill_up(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 200:  # the second cue set, partway
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(*args, **kwargs)

    run_dir = tmp_path / "run"
    _copy_finished_stages(ref_dir, run_dir, "classify")
    args = _args(run_dir, data_root, "--only", "cues")
    monkeypatch.setattr(cues.extract, "save_maps", save_then_fill_up)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "disk filled up during stage 'cues'" in err and "run the same command again" in err
    assert not list((run_dir / "cues").rglob("*.tmp"))
    assert (run_dir / "cues" / "baseline" / "gradcam" / "train" / "quality" / "quality.json").is_file()
    monkeypatch.setattr(cues.extract, "save_maps", real_save)
    assert main(args) == 0
    for variant, mechanism in (("baseline", "gradcampp"), ("icasc", "channel")):
        rel = Path("cues") / variant / mechanism / "train" / "quality" / "quality.json"
        got, ref = (json.loads((d / rel).read_text()) for d in (run_dir, ref_dir))
        assert got["miou"] == ref["miou"] and got["seeds"] == ref["seeds"]


@pytest.mark.slow
def test_figures_of_the_quick_run_and_sharpen_report_on_a_copy(quick_run, tmp_path, capsys):
    from figure_checks import check_figures

    run_dir, _, _ = quick_run
    report = json.loads((run_dir / "report.json").read_text())
    drawn = check_figures(run_dir, report, expect={"tau_curves", "per_class_iou", "seed_precision_recall",
                                                   "attention_grid", "classification_ap", "training_classify",
                                                   "training_segment", "stages"})
    assert set(report["training"]["classify"]) == {"baseline", "icasc-gradcam", "icasc"}
    assert "train_as_inner" in report["training"]["classify"]["icasc"]["terms"]
    assert set(report["training"]["segment"]["baseline-gradcam"]["terms"]) == {"loss", "seed", "expand", "constrain"}
    # redrawn from the JSON files of a copied folder, nothing rerun: the same report.json, the same figures
    copied = tmp_path / "copied"
    shutil.copytree(run_dir, copied, ignore=shutil.ignore_patterns("*.pt", "figures"))  # no checkpoint is read
    stamps = {p: p.stat().st_mtime_ns for p in (copied / "stages").glob("*.json")}
    assert main(["report", "--run-dir", str(copied)]) == 0
    assert "figures (8," in capsys.readouterr().out
    assert (copied / "report.json").read_bytes() == (run_dir / "report.json").read_bytes()
    names = {d: sorted(p.name for p in (d / "figures").iterdir()) for d in (copied, run_dir)}
    assert names[copied] == names[run_dir]
    assert {p: p.stat().st_mtime_ns for p in (copied / "stages").glob("*.json")} == stamps
    for key in drawn:
        if key != "attention_grid":
            csv_name = Path(report["figures"][key]).with_suffix(".csv")
            assert (copied / csv_name).read_bytes() == (run_dir / csv_name).read_bytes(), key
    assert main(["report", "--run-dir", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err

    # a --seeds root: the report over its seed-<s>/ folders (here two copies of the one run: sd 0)
    from pipeline.report import report_run

    for s in (0, 1):
        shutil.copytree(copied, tmp_path / "seeds" / f"seed-{s}", ignore=shutil.ignore_patterns("figures"))
    over = report_run(tmp_path / "seeds", each_seed=False)
    assert over["n_seeds"] == 2 and over["seeds"] == [0, 1]
    row = over["rows"][0]
    assert row["cue_miou_values"] == [report["rows"][0]["cue_miou"]] * 2 and row["cue_miou_std"] == 0.0
    assert over["figures"]["attention_grid"] == "figures/attention_grid.png", over["notes"]
    check_figures(tmp_path / "seeds", over, expect=set(drawn))
