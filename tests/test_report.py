"""The report of ``sharpen run``: report.json keys and numbers, the markdown table, the multi-seed
statistics on hand-made values, the seed-noise comparison, the figures, and the README table markers."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sharpen_core.config import Config
from sharpen_core.errors import DatasetError
from pipeline.aggregate import ROW_FIELDS, compare_rows, mean_std
from pipeline.readme import readme_table_from_run, update_readme_table
from pipeline.report import write_report
from pipeline.report_md import format_value, main_table_markdown

from report_data import REQUIRED_ROW_KEYS, TAUS
from report_data import floors as _floors
from report_data import none_row as _none_row
from report_data import row as _row
from report_data import summary as _summary


def _assert_png(path: Path, min_bytes: int = 2000) -> None:
    assert path.is_file(), path
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > min_bytes
    with Image.open(path) as im:
        im.load()
        arr = np.asarray(im.convert("RGB"))
    assert arr.shape[0] > 50 and arr.shape[1] > 100
    assert len(np.unique(arr.reshape(-1, 3), axis=0)) > 3  # not a blank canvas


def _table_lines(md: str) -> list[str]:
    return [line for line in md.splitlines() if line.startswith("| ")]


# --------------------------------------------------------------------------- numbers

def test_mean_std_known_answers():
    m, s = mean_std([0.4, 0.6])
    assert m == pytest.approx(0.5) and s == pytest.approx(math.sqrt(0.02))  # 0.1414: sample std, ddof=1
    m, s = mean_std([0.1, 0.2, 0.6])
    assert m == pytest.approx(0.3) and s == pytest.approx(math.sqrt((0.04 + 0.01 + 0.09) / 2))
    assert mean_std([0.5]) == (0.5, None)
    m, s = mean_std([None, 0.3, float("nan"), 0.5])
    assert m == pytest.approx(0.4) and s == pytest.approx(math.sqrt(0.02))
    assert mean_std([]) == (None, None) and mean_std([None]) == (None, None)


def test_format_value():
    assert format_value("seg_miou", 0.4567) == "45.7"
    assert format_value("seg_miou", 0.5, 0.1414) == "50.0 ± 14.1"
    assert format_value("cls_auc", 0.95123) == "0.951"
    assert format_value("cue_best_tau", 0.25) == "0.25"
    assert format_value("attention_overlap", 0.12345, 0.01) == "0.123 ± 0.010"
    assert format_value("seg_miou", None) == "–"
    assert format_value("seg_miou", None, 0.1) == "–"


# --------------------------------------------------------------------------- one seed

def test_write_report_single_seed(tmp_path):
    summary = _summary()
    inputs = copy.deepcopy(summary)
    report = write_report(tmp_path, summary, show_grid=False)
    assert summary == inputs  # the caller's dict is left alone
    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert on_disk == json.loads(json.dumps(report))
    for key in ("rows", "full_supervision_miou", "stages", "config", "figures", "notes", "seeds"):
        assert key in on_disk
    assert on_disk["config"] == Config().to_dict()
    assert on_disk["full_supervision_miou"] == 0.70 and on_disk["full_supervision_miou_crf"] == 0.75
    assert [(r["classifier"], r["mechanism"]) for r in on_disk["rows"]] == [
        ("baseline", "gradcam"), ("baseline", "channel"), ("icasc", None)]
    for out, given in zip(on_disk["rows"], summary["rows"]):
        for key in REQUIRED_ROW_KEYS:
            assert out[key] == given[key], key
        for f in ROW_FIELDS:
            assert out[f + "_std"] is None and out[f + "_values"] == [given[f]]
    gradcam = on_disk["rows"][0]
    assert gradcam["weak_full_ratio"] == pytest.approx(0.52 / 0.75)
    assert gradcam["per_class_iou"] == summary["rows"][0]["per_class_iou"]
    assert on_disk["rows"][2]["weak_full_ratio"] is None
    assert on_disk["stages"]["classify"]["wall_seconds"] == 125.0
    assert on_disk["stages"]["classify"]["peak_rss_mib"] == 900.5
    assert on_disk["stages"]["report"]["wall_seconds"] is None
    assert on_disk["submission"]["test_miou"] == 0.5

    md = (tmp_path / "report.md").read_text()
    table = main_table_markdown(on_disk)
    assert table in md
    lines = _table_lines(table)
    assert len(lines) == 1 + 3  # header + one line per row
    assert lines[1] == ("| baseline | gradcam | 84.0 | 0.951 | 0.123 | 0.20 | 40.0 | 71.0 | 42.0 | 50.0 | 52.0 "
                        "| 69.3 |")
    none_cells = [c.strip() for c in lines[3].strip("|").split("|")]
    assert none_cells[:4] == ["icasc", "–", "85.0", "0.970"] and none_cells[4:] == ["–"] * 8
    assert "±" not in table
    assert "val mIoU 70.0, with CRF 75.0" in md
    assert "test mIoU 50.0" in md and "runs/demo/submission.tar.gz" in md
    assert "| classify | done | 125.0 | 0:02:05 | 900.5 |" in md
    assert "| report | skipped | – | – | – |" in md
    assert "2 mIoU" in md

    figures = on_disk["figures"]
    assert figures["attention_grid"] is None
    assert any("attention_grid" in n and "turned off" in n for n in on_disk["notes"])
    for key in ("per_class_iou", "tau_curves", "stages"):
        assert figures[key] == f"figures/{key}.png"
        assert f"]({figures[key]})" in md
        _assert_png(tmp_path / figures[key])


def test_best_tau_at_the_sweep_edge_is_marked(tmp_path):
    edge = _row("baseline", "gradcam", 0.40)
    edge.update(cue_best_tau=0.05, cue_tau_at_edge=True)
    report = write_report(tmp_path, _summary([edge, _row("baseline", "channel", 0.45)]), show_grid=False)
    assert [r["cue_tau_at_edge"] for r in report["rows"]] == [True, False]
    table = main_table_markdown(report)
    lines = _table_lines(table)
    assert lines[1].split(" | ")[5] == "0.05 ⚠" and lines[2].split(" | ")[5] == "0.20"
    assert "⚠ the best cue mIoU is reached only at an end of the τ sweep" in table
    assert "0..1 by default" in table and "A curve flat from an end inwards" in table
    assert table in (tmp_path / "report.md").read_text()
    assert "⚠" not in main_table_markdown(write_report(tmp_path / "b", _summary(), show_grid=False))


# --------------------------------------------------------------------------- floors

def test_floors_in_a_one_seed_report(tmp_path):
    """Floors 20 (uniform) and 30 (centre): each cue set's gain is its cue mIoU minus 30, the floors are rows of
    the main table (after the cue sets, marked by their kind) and of the leaderboard (unranked, by cue mIoU)."""
    gradcam = _row("baseline", "gradcam", 0.40)
    gradcam.update(seed_precision_at_tau=0.8, seed_recall_at_tau=0.5)
    report = write_report(tmp_path, _summary([gradcam, _row("baseline", "channel", 0.45), _none_row()],
                                             floors=_floors(0.20, 0.30)), show_grid=False)
    assert [f["name"] for f in report["floors"]] == ["floor-uniform", "floor-centre"]
    uniform, centre = report["floors"]
    assert uniform["best_miou"] == 0.20 and uniform["best_miou_std"] is None and uniform["best_miou_values"] == [0.20]
    assert uniform["tau_curve"]["miou"] == [0.20] * 4 and uniform["best_tau"] == 0.1
    assert centre["best_tau"] == 0.2 and centre["seed_recall_at_tau"] == pytest.approx(0.7)
    g, c, n = report["rows"]
    assert g["cue_gain_over_floor"] == 0.40 - 0.30 and c["cue_gain_over_floor"] == 0.45 - 0.30
    assert g["cue_gain_over_floor_values"] == [0.40 - 0.30] and n["cue_gain_over_floor"] is None
    assert g["seed_precision_at_tau"] == 0.8 and c["seed_precision_at_tau"] is None

    table = main_table_markdown(report)
    lines = _table_lines(table)
    assert lines[0] == ("| classifier | mechanism | cls mAP | AUC | attention overlap | cue τ* | cue mIoU | gain over floor "
                        "| seed P | seed R | seed P@τ* | seed R@τ* | seg mIoU | seg mIoU+CRF | weak/full |")
    assert lines[1] == ("| baseline | gradcam | 84.0 | 0.951 | 0.123 | 0.20 | 40.0 | 10.0 | 71.0 | 42.0 | 80.0 | 50.0 "
                        "| 50.0 | 52.0 | 69.3 |")
    assert lines[2].split(" | ")[7:11] == ["15.0", "71.0", "42.0", "–"]
    assert lines[4:] == [
        "| *floor: labels over the whole image* | floor-uniform | – | – | – | 0.10 | 20.0 | – | 30.0 | 90.0 | 40.0 "
        "| 70.0 | – | – | – |",
        "| *floor: centred prior* | floor-centre | – | – | – | 0.20 | 30.0 | – | 30.0 | 90.0 | 40.0 | 70.0 | – | – "
        "| – |"]
    assert "Floors: the cue mIoU of maps that do not localize" in table and "`cues.fg_threshold`" in table

    board = report["leaderboard"]
    assert [(e["rank"], e["mechanism"], e["floor"]) for e in board] == [
        (1, "channel", False), (2, "gradcam", False), (None, "floor-centre", True), (None, "floor-uniform", True)]
    assert board[2]["kind"] == "floor: centred prior" and board[2]["cue_miou"] == 0.30
    md = (tmp_path / "report.md").read_text()
    assert table in md
    assert "| – | – | floor-centre | floor: centred prior | 30.0 | – | 0.20 | 30.0 | 90.0 | 40.0 | 70.0 | – |" in md
    assert "| 2 | baseline | gradcam | native; channel weight = mean gradient (Eq. 1) | 40.0 | 10.0 | 0.20 " in md


def test_floors_over_two_seeds():
    """Seed 0: floors 20/30, gradcam 40; seed 1: floors 24/22, gradcam 60. The gain is taken per seed against that
    seed's best floor (10, 36: mean 23), not against the mean floors (50 − 26 = 24)."""
    from pipeline.report import build_report

    seed0 = _summary([_row("baseline", "gradcam", 0.40)], floors=_floors(0.20, 0.30))
    seed1 = _summary([_row("baseline", "gradcam", 0.60)], floors=_floors(0.24, 0.22))
    summary = copy.deepcopy(seed0)
    summary.update(seeds=[0, 1], per_seed=[seed0, seed1])
    report = build_report(summary)
    uniform, centre = report["floors"]
    assert uniform["best_miou"] == pytest.approx(0.22) and uniform["best_miou_std"] == pytest.approx(0.02 * math.sqrt(2))
    assert centre["best_miou"] == pytest.approx(0.26) and centre["best_miou_std"] == pytest.approx(0.04 * math.sqrt(2))
    assert centre["best_miou_values"] == [0.30, 0.22] and centre["seeds_present"] == 2
    assert uniform["tau_curve"]["miou"] == pytest.approx([0.22] * 4)
    assert uniform["tau_curve"]["miou_std"] == pytest.approx([0.02 * math.sqrt(2)] * 4)
    assert centre["seed_precision"] == pytest.approx(0.3) and centre["seed_precision_std"] == pytest.approx(0.0)
    (g,) = report["rows"]
    assert g["cue_gain_over_floor_values"] == pytest.approx([0.10, 0.36])
    assert g["cue_gain_over_floor"] == pytest.approx(0.23) and g["cue_gain_over_floor_std"] == pytest.approx(
        0.13 * math.sqrt(2))
    line = [x for x in _table_lines(main_table_markdown(report)) if "floor-centre" in x][0]
    assert "| 26.0 ± 5.7 |" in line
    # a seed without floors: no gain for it (the other seed's alone)
    seed1.pop("floors")
    (g,) = build_report(summary)["rows"]
    assert g["cue_gain_over_floor_values"] == [pytest.approx(0.10), None] and g["cue_gain_over_floor_std"] is None


def test_ratio_falls_back_to_no_crf_reference(tmp_path):
    report = write_report(tmp_path, _summary(full_supervision_miou_crf=None), show_grid=False)
    assert report["full_supervision"]["ratio_basis"] == "no_crf"
    assert report["rows"][0]["weak_full_ratio"] == pytest.approx(0.50 / 0.70)
    assert "without CRF" in (tmp_path / "report.md").read_text()


def test_report_without_curves_or_reference(tmp_path):
    rows = [_none_row()]
    report = write_report(tmp_path, _summary(rows=rows, full_supervision_miou=None, full_supervision_miou_crf=None,
                                             full_per_class_iou={}, submission=None), show_grid=True)
    assert report["figures"]["per_class_iou"] is None and report["figures"]["tau_curves"] is None
    assert report["comparison"] is None
    md = (tmp_path / "report.md").read_text()
    assert "not run" in md and "Submission: none written." in md and "(not drawn; see the notes)" in md
    assert len(_table_lines(main_table_markdown(report))) == 2


# --------------------------------------------------------------------------- several seeds

def test_multi_seed_mean_and_std(tmp_path):
    seed0 = _summary(rows=[_row("baseline", "gradcam", 0.40), _row("icasc", "channel", 0.50)])
    seed1 = _summary(rows=[_row("baseline", "gradcam", 0.60)], full_supervision_miou=0.72,
                     full_supervision_miou_crf=0.85)
    seed1["stages"]["classify"]["wall_seconds"] = 135.0
    seed1.update(total_wall_seconds=138.5, peak_rss_mib=1000.0)
    summary = copy.deepcopy(seed0)
    summary.update(seeds=[0, 1], per_seed=[seed0, seed1])
    report = write_report(tmp_path, summary, show_grid=False)
    assert report["n_seeds"] == 2
    g = report["rows"][0]
    assert g["cue_miou"] == pytest.approx(0.5) and g["cue_miou_std"] == pytest.approx(0.141421356)
    assert g["cue_miou_values"] == [0.40, 0.60]
    assert g["seg_miou_crf"] == pytest.approx(0.62) and g["seg_miou_crf_std"] == pytest.approx(0.141421356)
    assert g["cls_auc"] == pytest.approx(0.9512) and g["cls_auc_std"] == pytest.approx(0.0)
    assert g["cls_map_values"] == pytest.approx([0.84, 0.86])
    # the ratio is taken per seed, then averaged
    ratios = [0.52 / 0.75, 0.72 / 0.85]
    assert g["weak_full_ratio_values"] == pytest.approx(ratios)
    assert g["weak_full_ratio"] == pytest.approx(np.mean(ratios))
    assert g["weak_full_ratio_std"] == pytest.approx(np.std(ratios, ddof=1))
    assert g["per_class_iou"]["aeroplane"] == pytest.approx(0.6) and g["per_class_iou_std"]["aeroplane"] == \
        pytest.approx(0.141421356)
    assert g["tau_curve"]["tau"] == TAUS and g["tau_curve"]["miou"] == pytest.approx([0.45, 0.5, 0.48, 0.4])
    # a row that only one seed has: mean of that seed, no std
    c = report["rows"][1]
    assert c["cue_miou"] == pytest.approx(0.5) and c["cue_miou_std"] is None and c["cue_miou_values"] == [0.5, None]
    assert report["full_supervision_miou"] == pytest.approx(0.71)
    assert report["full_supervision"]["full_supervision_miou_std"] == pytest.approx(math.sqrt(0.0002))
    assert report["full_supervision"]["full_supervision_miou_crf_values"] == [0.75, 0.85]
    assert report["full_supervision_miou_std"] == pytest.approx(math.sqrt(0.0002))
    assert report["full_supervision_miou_crf_values"] == [0.75, 0.85]
    st = report["stages"]["classify"]
    assert st["wall_seconds"] == pytest.approx(130.0) and st["wall_seconds_std"] == pytest.approx(math.sqrt(50))
    # the whole run: wall summed over the seeds, peak the largest (not the first seed's)
    assert report["total_wall_seconds"] == pytest.approx(128.5 + 138.5) and report["peak_rss_mib"] == 1000.0
    assert report["total_wall_seconds_values"] == [128.5, 138.5] and report["peak_rss_mib_values"] == [900.5, 1000.0]
    md = (tmp_path / "report.md").read_text()
    assert "| **total, 2 seeds** (wall summed, peak the largest) | | 267.0 | 0:04:27 | 1000.0 |" in md
    line = _table_lines(main_table_markdown(report))[1]
    assert "| 50.0 ± 14.1 |" in line and "| 0.951 ± 0.000 |" in line
    assert "val mIoU 71.0 ± 1.4" in md and "2 seeds" in md
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["rows"][0]["cue_miou_std"] == pytest.approx(0.141421356)


def test_seeds_without_per_seed_are_noted(tmp_path):
    report = write_report(tmp_path, _summary(seeds=[0, 1, 2]), show_grid=False)
    assert report["n_seeds"] == 1 and any("no per-seed summaries" in n for n in report["notes"])


def test_comparison_against_seed_noise():
    def row(label, values):
        m, s = mean_std(values)
        return {"label": label, "classifier": label, "mechanism": "m", "seg_miou_crf": m, "seg_miou_crf_std": s,
                "seg_miou_crf_values": list(values)}

    one = compare_rows([row("a", [0.50]), row("b", [0.47]), row("c", [0.49])], n_seeds=1)
    assert one["metric"] == "seg_miou_crf" and one["best"] == "a"
    verdict = {r["label"]: (r["diff"], r["exceeds_noise"]) for r in one["rows"]}
    assert verdict["b"][0] == pytest.approx(-0.03) and verdict["b"][1] is True
    assert verdict["c"][0] == pytest.approx(-0.01) and verdict["c"][1] is False
    # two seeds, noisy: SE = sqrt(0.02/2 + 0.02/2) = 0.1414, threshold 0.283 > the 0.1 difference
    two = compare_rows([row("a", [0.4, 0.6]), row("b", [0.3, 0.5])], n_seeds=2)
    (r,) = two["rows"]
    assert r["se"] == pytest.approx(math.sqrt(0.02)) and r["threshold"] == pytest.approx(2 * math.sqrt(0.02))
    assert r["diff"] == pytest.approx(-0.1) and r["exceeds_noise"] is False
    # two seeds, quiet: the 2 mIoU floor holds
    quiet = compare_rows([row("a", [0.50, 0.501]), row("b", [0.485, 0.486])], n_seeds=2)
    assert quiet["rows"][0]["threshold"] == pytest.approx(0.02) and quiet["rows"][0]["exceeds_noise"] is False


# --------------------------------------------------------------------------- attention grid

def _fake_extraction(folder: Path, voc: Path, mechanism: str) -> Path:
    from cues.extract import map_path, save_maps
    from data.voc import VOCSegmentation

    ds = VOCSegmentation(voc, "train")
    folder.mkdir(parents=True)
    (folder / "extract.json").write_text(json.dumps({"stage": "cues extract", "params": {
        "mechanism": mechanism, "variant": "baseline", "split": "train"}}))
    for i, image_id in enumerate(ds.ids):
        s = ds.load(i)
        classes = [int(c) for c in np.flatnonzero(s["label"]) + 1]
        h, w = s["image"].shape[:2]
        ramp = np.linspace(0, 1, h * w, dtype=np.float32).reshape(h, w)
        save_maps(map_path(folder, image_id), image_id, np.stack([ramp] * len(classes)), classes, classes)
    return folder


def test_attention_grid_from_extraction_folders(tmp_path, tiny_voc):
    a = _fake_extraction(tmp_path / "cues_gradcam", tiny_voc, "gradcam")
    b = _fake_extraction(tmp_path / "cues_channel", tiny_voc, "channel")
    cfg = Config().to_dict()
    cfg["data"]["root"] = str(tiny_voc)
    rows = [_row("baseline", "gradcam", 0.4, str(a)), _row("baseline", "channel", 0.45, str(b))]
    report = write_report(tmp_path / "run", _summary(rows=rows, config=cfg, dataset_root=str(tiny_voc)))
    assert report["figures"]["attention_grid"] == "figures/attention_grid.png", report["notes"]
    _assert_png(tmp_path / "run" / "figures" / "attention_grid.png", min_bytes=5000)
    assert "](figures/attention_grid.png)" in (tmp_path / "run" / "report.md").read_text()


def test_attention_grid_failure_is_noted(tmp_path):
    broken = tmp_path / "not_an_extraction"
    broken.mkdir()
    rows = [_row("baseline", "gradcam", 0.4, str(broken))]
    report = write_report(tmp_path / "run", _summary(rows=rows))
    assert report["figures"]["attention_grid"] is None
    assert any(n.startswith("figure attention_grid.png not drawn") and "extract.json" in n for n in report["notes"])
    assert (tmp_path / "run" / "report.md").is_file() and (tmp_path / "run" / "figures" / "tau_curves.png").is_file()


# --------------------------------------------------------------------------- README

README = """# Project

Intro text.

<!-- report-table:begin -->
| old | table |
|---|---|
<!-- report-table:end -->

After the table.
"""


def test_update_readme_table_replaces_only_between_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(README)
    update_readme_table(readme, "| new |\n|---|\n| 1 |\n")
    text = readme.read_text()
    assert text == README.replace("| old | table |\n|---|---|\n", "| new |\n|---|\n| 1 |\n")
    update_readme_table(readme, "| new |\n|---|\n| 1 |\n")  # idempotent
    assert readme.read_text() == text


@pytest.mark.parametrize("content", ["# no markers\n", "<!-- report-table:begin -->\nx\n",
                                     "<!-- report-table:end -->\nx\n<!-- report-table:begin -->\n",
                                     README + "<!-- report-table:begin -->\n"])
def test_update_readme_table_errors_without_markers(tmp_path, content):
    readme = tmp_path / "README.md"
    readme.write_text(content)
    with pytest.raises(ValueError, match="README.md"):
        update_readme_table(readme, "| t |")
    assert readme.read_text() == content


def test_readme_table_from_run(tmp_path):
    report = write_report(tmp_path / "run", _summary(), show_grid=False)
    readme = tmp_path / "README.md"
    readme.write_text(README)
    table = readme_table_from_run(tmp_path / "run", readme)
    assert table == main_table_markdown(report)
    assert table.strip() in readme.read_text() and "| old | table |" not in readme.read_text()
    with pytest.raises(DatasetError, match="report.json: no report here"):
        readme_table_from_run(tmp_path / "missing", readme)
