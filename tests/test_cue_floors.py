"""Cue quality (docs/method.md §6.2): the τ sweep over [0, 1] and its ends, the floors (maps that do not
localize) with hand-computed mIoU, and the SEC seeds at each mechanism's own best τ."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from cues.extract import PARAMS_FILE, map_path, save_maps
from cues.quality import (CENTRE_SIGMA, FLOORS, best_tau, comparison_table, evaluate_cues, evaluate_floors,
                          floor_maps, gain_over_floors, image_quality, seed_counts, seed_sweep_counts, sweep_confusions,
                          tau_at_edge, tau_values)
from cues.sec import best_class, cues_on_grid, pseudo_label
from data.io import write_image, write_mask
from eval.segmentation import confusion_matrix, scores_from_confusion
from pipeline.cli import main
from sharpen_core.config import load_config

E1, E2 = math.exp(-1.0), math.exp(-2.0)  # the 4x4 centre prior's values off its 2x2 peak (σ = 1 px)


# --------------------------------------------------------------------------- the sweep's range and ends

def test_default_sweep_is_0_to_1_by_001():
    cfg = load_config(None)
    taus = tau_values(cfg.eval.tau_min, cfg.eval.tau_max, cfg.eval.tau_step)
    assert taus.size == 101 and taus[0] == 0.0 and taus[-1] == 1.0
    assert np.array_equal(taus, tau_values())
    assert taus[37] == np.float32(0.37) and np.all(np.diff(taus) > 0)


def test_tau_0_and_1_ends():
    """τ = 0: every pixel whose best map is positive takes that class, all-zero pixels stay background (a tie
    with the plane is background). τ = 1: everything is background, even where a map is exactly 1."""
    a = np.array([[1.0, 0.5, 0.0],
                  [0.0, 0.01, 0.0]], dtype=np.float32)
    b = np.array([[0.0, 0.7, 0.0],
                  [0.0, 0.0, 0.2]], dtype=np.float32)
    classes = [3, 9]
    assert pseudo_label(np.stack([a, b]), classes, 0.0).tolist() == [[3, 9, 0], [0, 3, 9]]
    assert pseudo_label(np.stack([a, b]), classes, 1.0).tolist() == [[0, 0, 0], [0, 0, 0]]
    gt = np.array([[3, 9, 0], [0, 255, 9]])
    taus = tau_values(0.0, 1.0, 0.5)
    value, label = best_class(np.stack([a, b]), classes)
    sweep = sweep_confusions(value, label, gt, taus)
    for i, tau in enumerate(taus):
        assert np.array_equal(sweep[i], confusion_matrix(pseudo_label(np.stack([a, b]), classes, tau), gt))
    # at τ = 0 the prediction is perfect (void skipped): mIoU 1; at τ = 1 only background: IoU_0 = 2/5, the rest 0
    assert scores_from_confusion(sweep[0]).miou == 1.0
    assert scores_from_confusion(sweep[2]).miou == pytest.approx((2 / 5) / 3)


def test_edge_flag_only_when_the_best_is_reached_only_at_an_end():
    taus = tau_values(0.0, 1.0, 0.25)
    falling = [0.5, 0.4, 0.3, 0.2, 0.1]
    assert best_tau(taus, falling) == 0 and tau_at_edge(taus, 0, falling) and tau_at_edge(taus, 0)
    flat = [0.5, 0.5, 0.5, 0.5, 0.1]  # the uniform floor's shape: flat on [0, 1), background only at 1
    assert best_tau(taus, flat) == 0 and not tau_at_edge(taus, 0, flat)
    rising = [0.1, 0.2, 0.3, 0.4, 0.5]
    assert tau_at_edge(taus, 4, rising)


# --------------------------------------------------------------------------- floors

def test_floor_maps():
    uniform = floor_maps("floor-uniform", [2, 5], (3, 4))
    assert uniform.shape == (2, 3, 4) and uniform.dtype == np.float32 and np.all(uniform == 1.0)
    centre = floor_maps("floor-centre", [7], (4, 4))[0]
    assert CENTRE_SIGMA == 0.25  # σ = 1 px on a 4x4 image: exp(-d²/2) over d² = 0.5, 2.5, 4.5, then / its max
    want = np.array([[E2, E1, E1, E2], [E1, 1, 1, E1], [E1, 1, 1, E1], [E2, E1, E1, E2]])
    np.testing.assert_allclose(centre, want, rtol=1e-6)
    assert centre.max() == 1.0
    wide = floor_maps("floor-centre", [7], (2, 6))[0]  # σ per axis: σ_y = 0.5, σ_x = 1.5; x offsets 0.5, 1.5, 2.5
    assert wide[0, 2] == wide[1, 3] == 1.0
    assert wide[0, 0] == wide[1, 5] == pytest.approx(math.exp(-0.5 * ((2.5 / 1.5) ** 2 - (0.5 / 1.5) ** 2)), rel=1e-6)
    assert floor_maps("floor-centre", [], (3, 3)).shape == (0, 3, 3)
    with pytest.raises(ValueError, match="unknown floor"):
        floor_maps("floor-random", [1], (3, 3))


def _params(grid: int = 0, fg: float = 0.2) -> dict:
    return {"fg_threshold": fg, "bg_rule": "lowest", "bg_fraction": 0.1, "saliency_dir": "", "grid": grid}


def test_centre_prior_on_a_centred_square_known_iou():
    """4x4 image, class 1 on the centre 2x2. Foreground at τ: the 4 centre pixels for τ in [e⁻¹, 1), 12 for
    [e⁻², e⁻¹), all 16 below e⁻². mIoU (background, class 1): τ < e⁻²: (0 + 4/16)/2; e⁻² <= τ < e⁻¹:
    (4/12 + 4/12)/2; e⁻¹ <= τ < 1: 1; τ = 1: (12/16 + 0)/2."""
    gt = np.zeros((4, 4), dtype=np.int64)
    gt[1:3, 1:3] = 1
    taus = tau_values()
    maps = floor_maps("floor-centre", [1], gt.shape)
    conf, _, _ = image_quality(maps, [1], gt, taus, _params(), "x")
    curve = [scores_from_confusion(cm).miou for cm in conf]
    assert curve[0] == curve[13] == pytest.approx(0.125)  # τ = 0.13 < e⁻² = 0.135
    assert curve[14] == curve[36] == pytest.approx(1 / 3)  # 0.14 .. 0.36 < e⁻¹ = 0.368
    assert curve[37] == curve[99] == 1.0
    assert curve[100] == pytest.approx(0.375)
    best = best_tau(taus, curve)
    assert taus[best] == np.float32(0.37) and not tau_at_edge(taus, best, curve)


def _two_image_voc(root: Path) -> Path:
    """Image a (4x4): class 1 on the top two rows, background below. Image b (2x4): class 2 on the left half,
    class 3 on the right, no background."""
    voc = root / "VOCdevkit" / "VOC2012"
    a = np.zeros((4, 4), np.uint8)
    a[:2] = 1
    b = np.array([[2, 2, 3, 3], [2, 2, 3, 3]], np.uint8)
    for image_id, mask in (("a", a), ("b", b)):
        write_image(voc / "JPEGImages" / f"{image_id}.jpg", np.zeros((*mask.shape, 3), np.uint8))
        write_mask(voc / "SegmentationClass" / f"{image_id}.png", mask)
    sets = voc / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("a\nb\n")
    return voc


def _cfg(voc: Path, *extra: str):
    return load_config(None, [f"data.root={voc}", "data.num_workers=0", "cues.grid=0", *extra])


def test_uniform_floor_by_hand(tmp_path):
    """Uniform maps: at τ < 1 every pixel takes the image's smallest label (a: class 1 everywhere, b: class 2
    everywhere). IoU: background 0/8, class 1 8/16, class 2 4/8, class 3 0/4 -> mIoU 1/4. At τ = 1 all is
    background: IoU_0 = 8/24, mIoU 1/12. Seeds at fg_threshold 0.2: every pixel for each present class; the
    background cue is round(0.1·n) pixels spread evenly over the tied ones: a's (1, 0) and (3, 0), b's (1, 0)."""
    voc = _two_image_voc(tmp_path)
    [uniform] = evaluate_floors(_cfg(voc), "train", progress=False, kinds=["floor-uniform"])
    assert uniform["mechanism"] == "floor-uniform" and uniform["images"] == 2 and uniform["variant"] is None
    assert len(uniform["tau"]) == 101
    assert uniform["miou"][:100] == pytest.approx([0.25] * 100) and uniform["miou"][100] == pytest.approx(1 / 12)
    assert uniform["best_tau"] == 0.0 and uniform["best_miou"] == pytest.approx(0.25)
    assert not uniform["tau_at_edge"]  # flat on [0, 1): not a sweep cut short
    iou = uniform["per_class_iou"]
    assert (iou["background"], iou["aeroplane"], iou["bicycle"], iou["bird"]) == (0.0, 0.5, 0.5, 0.0)
    seeds = uniform["seeds"]
    assert seeds["fg_threshold"] == 0.2
    assert seeds["seeded_pixels"][:4] == [3, 16, 8, 8] and seeds["correct_pixels"][:4] == [1, 8, 4, 4]
    assert seeds["mean_precision"] == pytest.approx((1 / 3 + 0.5 * 3) / 4)
    assert seeds["mean_recall"] == pytest.approx((1 / 8 + 3) / 4)
    # at τ* = 0 the foreground seeds are again every pixel (a constant map's values all exceed 0)
    star = uniform["seeds_at_best_tau"]
    assert star["fg_threshold"] == 0.0 and star["seeded_pixels"] == seeds["seeded_pixels"]


def test_floors_are_scored_like_a_mechanism(tmp_path):
    """Floor maps written as a mechanism's map files and scored by `cues evaluate` give the same record."""
    voc = _two_image_voc(tmp_path)
    cfg = _cfg(voc)
    floors = evaluate_floors(cfg, "train", out_dir=tmp_path / "floors", progress=False)
    assert [f["mechanism"] for f in floors] == list(FLOORS)
    assert json.loads((tmp_path / "floors" / "floor-centre" / "quality.json").read_text())["mechanism"] == \
        "floor-centre"
    assert (tmp_path / "floors" / "floor-uniform" / "tau_curve.csv").is_file()
    masks = {"a": (4, 4), "b": (2, 4)}
    labels = {"a": [1], "b": [2, 3]}
    maps_dir = tmp_path / "centre_maps"
    for image_id, size in masks.items():
        save_maps(map_path(maps_dir, image_id), image_id, floor_maps("floor-centre", labels[image_id], size),
                  labels[image_id], labels[image_id], storage="float16")
    (maps_dir / PARAMS_FILE).write_text(json.dumps({"params": {"split": "train", "mechanism": "centre-as-maps"}}))
    as_mechanism = evaluate_cues(cfg, maps_dir, progress=False)
    centre = floors[1]
    for key in ("tau", "best_tau", "per_class_iou", "seeds", "seeds_at_best_tau", "tau_at_edge"):
        if key in ("per_class_iou",):
            assert as_mechanism[key] == pytest.approx(centre[key]), key
        else:
            assert as_mechanism[key] == centre[key], key
    assert as_mechanism["miou"] == pytest.approx(centre["miou"], abs=1e-12)
    assert gain_over_floors(0.5, floors) == pytest.approx(0.5 - max(f["best_miou"] for f in floors))
    assert gain_over_floors(None, floors) is None and gain_over_floors(0.5, []) is None
    table = comparison_table([as_mechanism], floors)
    assert "gain" in table and "floor-uniform" in table and "floor-centre" in table


def test_cli_evaluate_with_floors(tmp_path, capsys):
    voc = _two_image_voc(tmp_path)
    maps_dir = tmp_path / "uniform_maps"
    for image_id, size, lab in (("a", (4, 4), [1]), ("b", (2, 4), [2, 3])):
        save_maps(map_path(maps_dir, image_id), image_id, floor_maps("floor-uniform", lab, size), lab, lab)
    (maps_dir / PARAMS_FILE).write_text(json.dumps({"params": {"split": "train", "mechanism": "flat"}}))
    assert main(["cues", "evaluate", "--set", f"data.root={voc}", "--set", "data.num_workers=0",
                 "--set", "cues.grid=0", "--maps", str(maps_dir), "--floors", "--json", str(tmp_path / "all.json"),
                 "--quiet"]) == 0
    rows = json.loads((tmp_path / "all.json").read_text())
    assert [r["mechanism"] for r in rows] == ["flat", *FLOORS]
    assert rows[0]["best_miou"] == pytest.approx(0.25) == rows[1]["best_miou"]  # flat maps = the uniform floor
    assert (maps_dir / "quality" / "floors" / "floor-uniform" / "quality.json").is_file()
    out = capsys.readouterr().out
    assert "gain" in out and "P@best" in out


# --------------------------------------------------------------------------- seeds at the best τ

def test_seed_sweep_at_fg_threshold_is_the_sec_seeds():
    rng = np.random.default_rng(3)
    maps = rng.random((3, 13, 11)).astype(np.float32) ** 3
    maps[2] = 0.0  # an all-zero map gives no seed at any τ
    classes = [4, 11, 17]
    gt = rng.choice([0, 4, 11, 17, 255], size=(13, 11))
    taus = tau_values()
    for grid in (5, 0):
        conf, sec_seeds, sweep = image_quality(maps, classes, gt, taus, _params(grid), "x")
        assert np.array_equal(sweep[20], sec_seeds)  # τ = 0.20 = cues.fg_threshold
        for i in (0, 55, 100):  # the same seeds as SEC's rule with fg_threshold = τ
            cues = cues_on_grid(maps, classes, grid, fg_threshold=float(taus[i]))
            if grid:
                from cues.sec import nearest_resize
                cues = nearest_resize(cues, gt.shape)
            assert np.array_equal(sweep[i], seed_counts(cues, gt)), (grid, float(taus[i]))
        assert not sweep[:, :2, 17].any()


def test_seeds_at_best_tau_of_the_centre_prior_by_hand():
    """4x4 centre prior on a centred 2x2 square (grid = image): at τ* = 0.37 the class seed is the 4 centre
    pixels (P = R = 1); at fg_threshold 0.2 it is 12 pixels (P = 4/12). The background cue: 2 of the 4 tied
    corners, (0, 3) and (3, 3): P = 1, R = 2/12."""
    gt = np.zeros((4, 4), dtype=np.int64)
    gt[1:3, 1:3] = 1
    maps = floor_maps("floor-centre", [1], gt.shape)
    small = maps  # grid 0: the maps as they are (max already 1)
    bg = np.zeros((4, 4), bool)
    bg[0, 3] = bg[3, 3] = True
    sweep = seed_sweep_counts(small, [1], bg, gt, tau_values())
    assert sweep[37, :, :2].tolist() == [[2, 4], [2, 4], [12, 4]]
    assert sweep[20, :, :2].tolist() == [[2, 12], [2, 4], [12, 4]]
    assert sweep[100, :, :2].tolist() == [[2, 0], [2, 0], [12, 4]]  # τ = 1: no pixel exceeds the maximum
    _, sec_seeds, full = image_quality(maps, [1], gt, tau_values(), _params(), "x")
    assert np.array_equal(full, sweep) and np.array_equal(sec_seeds, sweep[20])


def test_the_run_scores_the_floors_once_and_reads_them_back(tmp_path, monkeypatch):
    """`sharpen run`'s cues stage (pipeline.run._floors): the floors go to RUN/cues/floors/<floor>/quality.json on
    eval.cue_split; a floor already there is read back, only a missing one is scored; the summary reads them."""
    import cues.quality
    from pipeline.collect import collect_floors
    from pipeline.run import _floors
    from sharpen_core.layout import RunLayout

    voc = _two_image_voc(tmp_path)
    cfg = _cfg(voc)
    layout = RunLayout(tmp_path / "run")
    calls = []
    real = cues.quality.evaluate_floors

    def counted(*args, **kwargs):
        calls.append(list(kwargs["kinds"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(cues.quality, "evaluate_floors", counted)
    first = _floors(cfg, layout, progress=False)
    assert calls == [list(FLOORS)] and list(first) == list(FLOORS)
    uniform = layout.floor_quality("floor-uniform")
    assert uniform == tmp_path / "run" / "cues" / "floors" / "floor-uniform" / "quality.json" and uniform.is_file()
    assert first["floor-uniform"]["best_miou"] == pytest.approx(1 / 4)  # test_uniform_floor_by_hand's value
    stamp = uniform.stat().st_mtime_ns
    layout.floor_quality("floor-centre").unlink()
    again = _floors(cfg, layout, progress=False)
    assert calls == [list(FLOORS), ["floor-centre"]] and uniform.stat().st_mtime_ns == stamp
    timeless = lambda floors: {k: {f: v for f, v in r.items() if f != "seconds"} for k, r in floors.items()}  # noqa: E731
    assert timeless(again) == timeless(first) and again["floor-uniform"] == first["floor-uniform"]
    assert _floors(cfg, layout, progress=False) == again and len(calls) == 2  # all there: nothing scored
    summary = collect_floors(layout)
    assert [f["name"] for f in summary] == list(FLOORS)
    assert summary[0]["best_miou"] == pytest.approx(1 / 4) and summary[0]["tau_curve"]["miou"] == first[
        "floor-uniform"]["miou"]
    assert summary[1]["seed_precision_at_tau"] == first["floor-centre"]["seeds_at_best_tau"]["mean_precision"]
