"""The report's figures (matplotlib): every figure as PNG + PDF + CSV, the CSV holding exactly the numbers of
report.json it shows, mean ± std over seeds, identical series still visible, reproducible bytes; the
training curves and per-class AP on hand-computed values."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.figures import DATA_FIGURES, FIGURE_TITLES
from pipeline.aggregate import aggregate_classifiers, aggregate_training, training_curve
from pipeline.report import build_report, write_report
from sharpen_core.plots import OKABE_ITO, Line, csv_cell, legend_labels
from figure_checks import check_figures, read_csv_rows
from report_data import CLASSES
from report_data import floors as _floors
from report_data import row as _row
from report_data import summary as _summary


# --------------------------------------------------------------------------- hand-made runs

def _history_classify(scale: float) -> list[dict]:
    return [{"epoch": e, "lr": 0.1, "train_loss": scale * (3 - e) + 0.5, "train_cls": scale * (2 - 0.5 * e),
             "train_as_inner": 0.3 / e, "train_as_last": 0.4 / e, "train_ac": -0.1 * e} for e in (1, 2)]


def _history_segment(scale: float, n: int = 6) -> list[dict]:
    return [{"iteration": i, "lr": 0.01, "loss": scale * 10 / i, "seed": scale * 4 / i, "expand": 5.0 - 0.1 * i,
             "constrain": 1.0 + 0.01 * i} for i in range(1, n + 1)]


def _run_summary(scale: float, **extra) -> dict:
    s = _summary(**{"floors": _floors(0.2 * scale, 0.3 * scale), **extra})
    s["classifiers"] = {
        "baseline": {"map": 0.5 * scale, "per_class_ap": {"aeroplane": 0.4 * scale, "bird": 0.6 * scale, "cat": None},
                     "history": _history_classify(scale)},
        "icasc": {"map": 0.55 * scale, "per_class_ap": {"aeroplane": 0.5 * scale, "bird": 0.6, "cat": None},
                  "history": _history_classify(scale)},
    }
    s["segmenters"] = {"baseline-gradcam": {"supervision": "sec", "history": _history_segment(scale)},
                       "full": {"supervision": "full", "history": [{"iteration": i, "lr": 0.01, "loss": 2.0 / i}
                                                                 for i in range(1, 7)]}}
    return s


def _two_seed_summary() -> dict:
    seed0 = _run_summary(1.0)
    seed1 = _run_summary(0.8, rows=[_row("baseline", "gradcam", 0.50), _row("baseline", "channel", 0.35)])
    seed1["stages"]["classify"]["wall_seconds"] = 131.0
    summary = copy.deepcopy(seed0)
    summary.update(seeds=[0, 1], per_seed=[seed0, seed1])
    return summary


def test_every_figure_png_pdf_and_csv_of_its_numbers(tmp_path):
    report = write_report(tmp_path, _run_summary(1.0), show_grid=False)
    drawn = check_figures(tmp_path, report, expect=set(DATA_FIGURES))
    assert set(drawn) == set(DATA_FIGURES)  # the attention grid is off here
    md = (tmp_path / "report.md").read_text()
    for key in drawn:
        assert f"](figures/{key}.png)" in md and f"(figures/{key}.pdf)" in md and f"(figures/{key}.csv)" in md
    assert [k for k, _ in FIGURE_TITLES] == list(report["figures"])


def test_seeds_give_error_bars_and_bands_whose_numbers_are_in_the_csv(tmp_path):
    report = write_report(tmp_path, _two_seed_summary(), show_grid=False)
    check_figures(tmp_path, report, expect=set(DATA_FIGURES))
    g = report["rows"][0]
    assert g["tau_curve"]["miou_std"][1] == pytest.approx(math.sqrt(0.005))  # 0.40 and 0.50
    tau = read_csv_rows(tmp_path / "figures" / "tau_curves.csv", 4)
    assert tau[1] == ("baseline/gradcam", 0.2, g["tau_curve"]["miou"][1], g["tau_curve"]["miou_std"][1])
    ap = report["classifiers"]["baseline"]
    assert ap["per_class_ap"]["aeroplane"] == pytest.approx(0.36) and ap["per_class_ap_std"]["aeroplane"] == \
        pytest.approx(np.std([0.4, 0.32], ddof=1))
    # the floors' reference lines: seed 0's uniform floor 20, seed 1's 16 (scale 0.8), flat over τ
    assert tau[-8:-4] == [("floor-uniform (floor)", t, pytest.approx(0.18), pytest.approx(math.sqrt(0.0008)))
                          for t in (0.1, 0.2, 0.3, 0.4)]
    st = read_csv_rows(tmp_path / "figures" / "stages.csv", 5)
    assert st[1] == ("classify", 128.0, math.sqrt(18.0), 900.5, 0.0)
    seg = report["training"]["segment"]["baseline-gradcam"]
    assert seg["terms"]["seed"][0] == pytest.approx(3.6) and seg["terms_std"]["seed"][0] == \
        pytest.approx(np.std([4.0, 3.2], ddof=1))


# --------------------------------------------------------------------------- known answers

def test_training_curve_windows_and_terms():
    history = [{"epoch": e, "a": float(2 * e - 1)} for e in range(1, 6)]  # a = 1, 3, 5, 7, 9
    assert training_curve(history, "epoch", ("a", "b")) == {"x_name": "epoch", "x": [1, 2, 3, 4, 5], "window": 1,
                                                            "terms": {"a": [1.0, 3.0, 5.0, 7.0, 9.0]}}
    # 5 entries, at most 2 points: windows of 3 -> means of (1, 3, 5) and (7, 9) at epochs 3 and 5
    assert training_curve(history, "epoch", ("a",), max_points=2) == {
        "x_name": "epoch", "x": [3, 5], "window": 3, "terms": {"a": [3.0, 8.0]}}
    assert training_curve([], "epoch", ("a",)) is None and training_curve(history, "epoch", ("b",)) is None


def test_training_and_ap_over_seeds():
    def run(values, ap):
        return {"classifiers": {"icasc": {"map": ap, "per_class_ap": {"cat": ap},
                                          "history": [{"epoch": i + 1, "train_loss": v, "train_ac": -v}
                                                      for i, v in enumerate(values)]}},
                "segmenters": {}}

    summary = {"per_seed": [run([1.0, 2.0], 0.2), run([3.0, 6.0], 0.4)]}
    notes: list[str] = []
    curve = aggregate_training(summary, notes)["classify"]["icasc"]
    assert curve["terms"]["train_loss"] == [2.0, 4.0] and curve["terms"]["train_ac"] == [-2.0, -4.0]
    assert curve["terms_std"]["train_loss"] == pytest.approx([math.sqrt(2), math.sqrt(8)]) and not notes
    cls = aggregate_classifiers(summary)["icasc"]
    assert cls["map"] == pytest.approx(0.3) and cls["map_std"] == pytest.approx(math.sqrt(0.02))
    assert cls["map_values"] == [0.2, 0.4] and cls["per_class_ap"]["cat"] == pytest.approx(0.3)
    # the baseline computes no ICASC term: only L and L_cls are shown
    base = {"classifiers": {"baseline": {"history": [{"epoch": 1, "train_loss": 1.0, "train_cls": 1.0,
                                                      "train_as_inner": 0.0, "train_ac": 0.0}]}}}
    assert list(aggregate_training(base, [])["classify"]["baseline"]["terms"]) == ["train_loss", "train_cls"]


def test_csv_cells_read_back_as_the_same_numbers():
    for x in (0.1 + 0.2, 1 / 3, 1e-17, 123456789.123456789, -0.0):
        assert float(csv_cell(x)) == x
    assert csv_cell(None) == "" and csv_cell(float("nan")) == "" and csv_cell(3) == "3" and csv_cell(True) == "1"


# --------------------------------------------------------------------------- a reader's view

def _pixels_near(arr: np.ndarray, hex_colour: str, tol: int = 40) -> int:
    rgb = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(arr.astype(int) - rgb).sum(-1) < tol).sum())


def test_identical_series_stay_visible_and_named(tmp_path):
    same = {"tau": [0.1, 0.2, 0.3, 0.4], "miou": [0.3, 0.5, 0.4, 0.2]}
    rows = [_row("baseline", "gradcampp", 0.4), _row("baseline", "channel", 0.4)]
    for r in rows:
        r["tau_curve"] = copy.deepcopy(same)
    write_report(tmp_path, _summary(rows=rows), show_grid=False)
    with Image.open(tmp_path / "figures" / "tau_curves.png") as im:
        arr = np.asarray(im.convert("RGB"))
    # both series' colours show in the plot (above the legend) although the second is drawn exactly over the first
    plot = arr[: int(arr.shape[0] * 0.7)]
    assert _pixels_near(plot, OKABE_ITO[0]) > 500 and _pixels_near(plot, OKABE_ITO[1]) > 500
    labels = legend_labels([Line("baseline/gradcampp", same["tau"], same["miou"]),
                            Line("baseline/channel", same["tau"], same["miou"]), Line("x", [0.1], [0.2])])
    assert labels == ["baseline/gradcampp", "baseline/channel (same values as baseline/gradcampp)", "x"]


def test_floors_are_grey_dashed_reference_lines(tmp_path):
    from sharpen_core.plots import REFERENCE_COLOUR

    def grey(summary, where):
        report = write_report(tmp_path / where, summary, show_grid=False)
        with Image.open(tmp_path / where / "figures" / "tau_curves.png") as im:
            arr = np.asarray(im.convert("RGB"))
        return report, _pixels_near(arr[: int(arr.shape[0] * 0.7)], REFERENCE_COLOUR, tol=12)

    report, with_floors = grey(_summary(floors=_floors(0.2, 0.3)), "floors")
    _, without = grey(_summary(), "none")
    assert with_floors > without + 300  # two lines across the plot
    tau = read_csv_rows(tmp_path / "floors" / "figures" / "tau_curves.csv", 5)
    assert ("floor-centre (floor)", 0.2, 0.3, None, 1.0) in tau and ("floor-uniform (floor)", 0.1, 0.2, None,
                                                                       1.0) in tau
    assert check_figures(tmp_path / "floors", report, expect={"tau_curves"})


def test_figures_are_byte_for_byte_reproducible(tmp_path):
    report = build_report(_run_summary(1.0))
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        for name in ("tau_curves", "training_segment"):
            DATA_FIGURES[name](report, tmp_path / d / name)
    for name in ("tau_curves", "training_segment"):
        for ext in (".png", ".pdf", ".csv"):
            assert (tmp_path / "a" / name).with_suffix(ext).read_bytes() == \
                (tmp_path / "b" / name).with_suffix(ext).read_bytes(), name + ext
    assert b"CreationDate" not in (tmp_path / "a" / "tau_curves.pdf").read_bytes()


def test_a_figure_without_numbers_is_noted_not_drawn(tmp_path):
    report = write_report(tmp_path, _summary(), show_grid=False)  # no classifiers / training in this summary
    for key in ("classification_ap", "training_classify", "training_segment"):
        assert report["figures"][key] is None and not (tmp_path / "figures" / f"{key}.png").exists()
        assert any(n.startswith(f"figure {key} not drawn") for n in report["notes"])
    assert CLASSES[1] in (tmp_path / "figures" / "per_class_iou.csv").read_text()


def test_readme_figures_script_copies_the_figures_and_writes_the_block(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("update_readme_figures", Path(__file__).resolve().parent.parent
                                                  / "scripts" / "update_readme_figures.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    write_report(tmp_path / "run", _run_summary(1.0), show_grid=False)
    readme = tmp_path / "repo" / "README.md"
    readme.parent.mkdir()
    readme.write_text(f"# x\n\n{script.BEGIN}\nOLD-BLOCK\n{script.END}\n")
    block = script.copy_figures(tmp_path / "run", readme)
    assert script.README_FIGURES
    for name in script.README_FIGURES:
        for ext in (".png", ".pdf", ".csv"):
            assert (readme.parent / "docs" / "figures" / f"{name}{ext}").read_bytes() == \
                (tmp_path / "run" / "figures" / f"{name}{ext}").read_bytes()
        assert f"](docs/figures/{name}.png)" in block
    assert "OLD-BLOCK" not in readme.read_text() and block.strip() in readme.read_text()
    with pytest.raises(FileNotFoundError, match="report.json"):
        script.copy_figures(tmp_path / "missing", readme)
