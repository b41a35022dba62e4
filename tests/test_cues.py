"""Stage 2 (cues): SEC cue rules on hand-made maps, the τ-sweep with a known best τ, seed precision/recall,
storage, extraction (multi-scale + flip, resume after an interruption, shards), evaluate/sec/show end to end,
and refusals of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sharpen_attention.classifiers import CheckpointMismatch, build_classifier
from tiny_voc import TINY, make_tiny_voc, tiny_ids
from cues.extract import (
    extract_maps,
    is_complete,
    load_maps,
    parse_shard,
    save_maps,
    shard_indices,
)
from cues.quality import (best_tau, comparison_table, evaluate_cues, seed_counts, seed_scores, sweep_confusions,
                          tau_at_edge, tau_values)
from cues.sec import (
    background_cue,
    best_class,
    cues_on_grid,
    foreground_cues,
    localization_cues,
    lowest_fraction,
    nearest_resize,
    pseudo_label,
)
from cues.show import jet, render_grid, with_colour_bar
from data.classes import VOC_CLASSES
from data.voc import VOCSegmentation
from sharpen_core.errors import DatasetError
from eval.segmentation import confusion_matrix, scores_from_confusion
from pipeline.cli import main
from sharpen_core.config import load_config


# --------------------------------------------------------------------------- cue rules (docs/method.md §4)

def test_foreground_cues_threshold_and_overlap():
    a = np.array([[1.0, 0.5, 0.2, 0.0],
                  [0.3, 0.21, 0.1, 0.0]], dtype=np.float32)
    b = np.array([[0.0, 0.5, 0.05, 0.11],   # max 0.5 -> threshold 0.1
                  [0.1, 0.0, 0.2, 0.0]], dtype=np.float32)
    zero = np.zeros_like(a)
    cues = foreground_cues(np.stack([a, b, zero]), [3, 7, 9], fg_threshold=0.2)
    assert cues.shape == (21, 2, 4) and cues.dtype == bool
    # strictly above 0.2 * max: 0.2 itself is not a cue, 0.21 is
    assert cues[3].tolist() == [[True, True, False, False], [True, True, False, False]]
    assert cues[7].tolist() == [[False, True, False, True], [False, False, True, False]]
    assert not cues[9].any(), "an all-zero map gives no cue"
    assert not cues[0].any() and not cues[[1, 2, 4, 5, 6, 8, 10]].any()
    # multi-hot: pixel (0, 1) is above threshold for both classes and carries both
    assert cues[3, 0, 1] and cues[7, 0, 1]
    assert cues.sum(0)[0, 1] == 2


def test_background_cue_takes_exactly_the_lowest_fraction():
    rng = np.random.default_rng(0)
    score = rng.permutation(100).reshape(10, 10).astype(np.float32) / 100
    bg = lowest_fraction(score, 0.1)
    assert bg.sum() == 10 and set(np.sort(score[bg]).tolist()) == set((np.arange(10) / 100).astype(np.float32).tolist())
    # from maps: attention is the max over classes
    maps = np.stack([score, np.zeros_like(score)])
    assert np.array_equal(background_cue(maps, 0.1), bg)
    # saliency replaces attention when given
    sal = 1.0 - score
    assert np.array_equal(background_cue(maps, 0.1, saliency=sal), lowest_fraction(sal, 0.1))


def test_background_cue_ties_are_spread_evenly():
    score = np.ones((10, 10), dtype=np.float32)
    score[:, 5:] = 0.0  # 50 tied zero pixels, need 20 of them
    score[0, 0] = -1.0  # strictly lowest, always in
    bg = lowest_fraction(score, 0.2)
    assert bg.sum() == 20 and bg[0, 0]
    assert (score[bg] <= 0).all()
    rows = np.flatnonzero(bg[:, 5:].any(1))
    assert rows.min() == 0 and rows.max() == 9, "tied pixels spread over the image, not the first rows"
    assert lowest_fraction(score, 0.0).sum() == 0 and lowest_fraction(score, 1.0).all()


def test_localization_cues_multi_hot():
    fg = np.zeros((10, 10), dtype=np.float32)
    fg[2:6, 2:6] = 1.0
    fg[4:8, 4:8] = np.maximum(fg[4:8, 4:8], 0.5)
    other = np.zeros((10, 10), dtype=np.float32)
    other[4:8, 4:8] = 0.9
    cues = localization_cues(np.stack([fg, other]), [15, 12], fg_threshold=0.2, bg_fraction=0.1)
    assert cues[15].sum() == 16 + 16 - 4 and cues[12].sum() == 16
    assert (cues[15] & cues[12]).sum() == 16  # the overlap carries both labels
    assert cues[0].sum() == 10 and not (cues[0] & (cues[15] | cues[12])).any()


def test_cues_on_grid_and_nearest_resize():
    maps = np.zeros((1, 82, 123), dtype=np.float32)
    maps[0, :, :60] = 1.0
    cues = cues_on_grid(maps, [8], grid=41)
    assert cues.shape == (21, 41, 41)
    assert cues[8][:, :15].all() and not cues[8][:, 25:].any()
    assert cues_on_grid(maps, [8], grid=0).shape == (21, 82, 123)
    up = nearest_resize(cues, (82, 123))
    assert up.shape == (21, 82, 123) and up[8, :, :40].all()
    labels = np.arange(6).reshape(2, 3)
    assert nearest_resize(labels, (4, 6)).tolist() == [[0, 0, 1, 1, 2, 2]] * 2 + [[3, 3, 4, 4, 5, 5]] * 2


# --------------------------------------------------------------------------- pseudo-labels and the τ-sweep (docs/method.md §6)

def test_pseudo_label_ties():
    maps = np.array([[[0.3, 0.5, 0.8, 0.1]], [[0.2, 0.5, 0.9, 0.3]]], dtype=np.float32)
    assert pseudo_label(maps, [4, 9], tau=0.3).tolist() == [[0, 4, 9, 0]]  # 0.3 == τ: background; 0.5 tie: first
    assert pseudo_label(np.zeros((0, 1, 4), np.float32), [], tau=0.05).tolist() == [[0, 0, 0, 0]]


def test_tau_values():
    taus = tau_values(0.05, 0.60, 0.01)
    assert taus.size == 56 and taus[0] == np.float32(0.05) and taus[-1] == np.float32(0.60)
    assert taus[32] == np.float32(0.37) and np.all(np.diff(taus) > 0)


def test_sweep_equals_pseudo_labels_at_every_tau():
    rng = np.random.default_rng(1)
    taus = tau_values(0.05, 0.60, 0.01)
    maps = (rng.integers(0, 101, size=(3, 17, 19)) / 100).astype(np.float32)  # values on the τ grid: ties with τ
    classes = [2, 15, 7]
    gt = rng.choice([0, 2, 15, 7, 11, 255], size=(17, 19))
    value, label = best_class(maps, classes)
    sweep = sweep_confusions(value, label, gt, taus)
    for i, tau in enumerate(taus):
        assert np.array_equal(sweep[i], confusion_matrix(pseudo_label(maps, classes, tau), gt)), float(tau)


def _known_tau_case(rng: np.random.Generator, best: float) -> tuple[np.ndarray, list[int], np.ndarray]:
    """Maps whose pseudo-label equals the ground truth exactly at τ = ``best`` and at no other grid τ."""
    h, w = 24, 30
    gt = np.zeros((h, w), dtype=np.int64)
    gt[4:14, 3:15] = 8
    gt[10:20, 16:28] = 13
    gt[0, :] = 255
    low = np.round(np.linspace(0.0, best, 50), 2).astype(np.float32)  # background values up to τ (included)
    high = np.round(np.linspace(best + 0.01, 1.0, 50), 2).astype(np.float32)  # object values above τ
    a = rng.choice(low, size=(h, w)).astype(np.float32)
    b = rng.choice(low, size=(h, w)).astype(np.float32)
    a[gt == 8] = rng.choice(high, size=int((gt == 8).sum()))
    b[gt == 13] = rng.choice(high, size=int((gt == 13).sum()))
    a[5, 5], b[12, 20], a[20, 2] = best + 0.01, best + 0.01, best  # the extremes occur
    return np.stack([a, b]), [8, 13], gt


def test_tau_sweep_finds_the_known_best_tau():
    rng = np.random.default_rng(2)
    taus = tau_values(0.05, 0.60, 0.01)
    total = np.zeros((taus.size, 21, 21), dtype=np.int64)
    for best in (0.37, 0.37, 0.37):  # three images, same best τ
        maps, classes, gt = _known_tau_case(rng, best)
        value, label = best_class(maps, classes)
        total += sweep_confusions(value, label, gt, taus)
    curve = [scores_from_confusion(cm).miou for cm in total]
    i = best_tau(taus, curve)
    assert taus[i] == np.float32(0.37) and curve[i] == 1.0
    assert curve[i - 1] < 1.0 and curve[i + 1] < 1.0
    assert best_tau(taus, [0.5, 0.7, 0.7, 0.1]) == 1  # ties: the smallest τ
    assert not tau_at_edge(taus, i)


def test_tau_at_either_end_of_the_sweep_is_flagged():
    taus = tau_values(0.05, 0.60, 0.05)
    assert taus.size == 12
    assert tau_at_edge(taus, best_tau(taus, np.linspace(0.5, 0.1, 12)))  # falling curve: best at 0.05
    assert tau_at_edge(taus, best_tau(taus, np.linspace(0.1, 0.5, 12)))  # rising curve: best at 0.60
    assert not tau_at_edge(taus, best_tau(taus, -np.abs(np.arange(12) - 5.0)))  # peak inside
    assert not tau_at_edge(taus[:1], 0)  # a single τ is no sweep
    assert "* best tau at an edge" in comparison_table([
        {"mechanism": "gradcam", "variant": "baseline", "best_tau": 0.05, "best_miou": 0.1, "tau_at_edge": True,
         "seeds": {"mean_precision": 0.5, "mean_recall": 0.5}}])


def test_seed_precision_and_recall():
    gt = np.array([[0, 0, 5, 5],
                   [0, 255, 5, 9]])
    cues = np.zeros((21, 2, 4), dtype=bool)
    cues[0, 0, :2] = True           # 2 correct background
    cues[5, :, 1:3] = True          # (0,1) wrong, (1,1) void, (0,2) and (1,2) right
    cues[9, 1, 3] = True            # right
    cues[9, 0, 3] = True            # wrong (it is a 5)
    counts = seed_counts(cues, gt)
    assert counts[:, 0].tolist() == [2, 2, 3] and counts[:, 5].tolist() == [3, 2, 3]
    assert counts[:, 9].tolist() == [2, 1, 1]
    s = seed_scores(counts)
    assert s["precision"]["bottle"] == pytest.approx(2 / 3) and s["recall"]["bottle"] == pytest.approx(2 / 3)
    assert s["precision"]["chair"] == 0.5 and s["recall"]["chair"] == 1.0
    assert s["precision"]["background"] == 1.0 and s["recall"]["background"] == pytest.approx(2 / 3)
    assert s["precision"]["cat"] is None and s["recall"]["cat"] is None
    assert s["mean_precision"] == pytest.approx((1 + 2 / 3 + 0.5) / 3)


def test_jet_and_colour_bar():
    c = jet(np.array([[0.0, 0.5, 1.0]]))
    assert c.shape == (1, 3, 3) and c[0, 0, 2] > 100 and c[0, 0, 0] == 0 and c[0, 2, 0] > 100 and c[0, 2, 2] == 0
    grid = render_grid([[np.zeros((8, 8, 3), np.uint8)]], ["row"], ["col"], tile=32)
    out = np.asarray(with_colour_bar(grid, "attention"))
    assert out.shape[0] > grid.height and out.shape[1] >= grid.width
    # the bar under the grid runs through the colormap: jet(0) at its left end, jet(1) at its right end
    bar = out[grid.height + 4 + 6, 8:8 + 256]
    assert (bar[0] == jet(np.array([[0.0]]))[0, 0]).all() and (bar[-1] == jet(np.array([[1.0]]))[0, 0]).all()


# --------------------------------------------------------------------------- storage

@pytest.mark.parametrize("storage,tol", [("float16", 1e-3), ("uint8", 0.5 / 255 + 1e-6)])
def test_storage_round_trip(tmp_path, storage, tol):
    maps = np.random.default_rng(3).random((2, 7, 9)).astype(np.float32)
    path = tmp_path / "maps" / "x.npz"
    save_maps(path, "x", maps, [3, 4], [3], storage)
    m = load_maps(path)
    assert m["id"] == "x" and m["classes"].tolist() == [3, 4] and m["labels"].tolist() == [3]
    assert np.abs(m["maps"] - maps).max() <= tol
    assert is_complete(path, "x") and not is_complete(path, "y")
    path.write_bytes(path.read_bytes()[:40])  # a truncated file is not finished
    assert not is_complete(path, "x")
    with pytest.raises(DatasetError, match="unreadable map file"):
        load_maps(path)


def test_shard_indices_cover_exactly_once():
    for count in (0, 1, 5, 17):
        for n in (1, 2, 3, 7):
            parts = [shard_indices(count, i, n) for i in range(n)]
            assert sorted(sum(parts, [])) == list(range(count))
    assert parse_shard("2/3") == (2, 3) and parse_shard(None) == (0, 1)
    for bad in ("3/3", "x", "1/0", "-1/2"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)


# --------------------------------------------------------------------------- extraction on a tiny dataset

@pytest.fixture(scope="module")
def voc(tmp_path_factory) -> Path:
    return make_tiny_voc(tmp_path_factory.mktemp("cues_voc"))


def _save_checkpoint(path: Path, num_classes: int = 20, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = build_classifier("resnet18", num_classes)
    torch.save({"arch": "resnet18", "num_classes": num_classes, "variant": "baseline", "model": model.state_dict(),
                "class_names": list(VOC_CLASSES[1:1 + num_classes])}, path)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return _save_checkpoint(tmp_path_factory.mktemp("cues_ckpt") / "checkpoint.pt")


def _cfg(voc: Path, *extra: str):
    return load_config(None, [f"data.root={voc}", "run.device=cpu", "data.num_workers=0", "cues.scales=[1.0, 0.5]",
                              "cues.batch_size=2", "classify.image_size=32", *extra])


def _arrays(folder: Path) -> dict[str, dict]:
    return {p.stem: load_maps(p) for p in sorted((folder / "maps").glob("*.npz"))}


def _same(a: dict[str, dict], b: dict[str, dict]) -> None:
    assert a and a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k]["maps"], b[k]["maps"]), k
        assert np.array_equal(a[k]["classes"], b[k]["classes"]) and a[k]["id"] == b[k]["id"]


@pytest.fixture(scope="module")
def full_run(voc, checkpoint, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cues_full")
    extract_maps(_cfg(voc), checkpoint, "gradcampp", out, split="train", progress=False)
    return out


def test_extraction_outputs(full_run, voc):
    ids = VOCSegmentation(voc, "train").ids  # the split's list in the dataset
    assert ids == tiny_ids("train") and len(ids) == 3
    maps = _arrays(full_run)
    assert sorted(maps) == sorted(ids)
    for image_id, m in maps.items():
        h, w = np.asarray(Image.open(voc / "JPEGImages" / f"{image_id}.jpg")).shape[:2]
        assert m["maps"].shape == (len(TINY[image_id][1]), h, w)
        assert sorted(m["classes"].tolist()) == sorted(TINY[image_id][1]) == sorted(m["labels"].tolist())
        assert m["maps"].min() >= 0 and m["maps"].max() <= 1.0
    params = json.loads((full_run / "extract.json").read_text())["params"]
    assert params["mechanism"] == "gradcampp" and params["scales"] == [1.0, 0.5] and params["flip"]
    assert len(params["checkpoint_sha256"]) == 64
    record = json.loads((full_run / "extract_run.json").read_text())
    assert record["extracted"] == len(ids) and record["images_per_second"] > 0
    # a rerun has nothing left to do
    again = extract_maps(_cfg(voc), Path(params["checkpoint"]), "gradcampp", full_run, split="train", progress=False)
    assert again["extracted"] == 0 and again["already_done"] == len(ids)


def test_scales_of_the_classifier_size_give_image_resolution_maps(voc, checkpoint, tmp_path):
    cfg = _cfg(voc, "cues.scale_base=classify", "cues.scales=[1.0]", "cues.storage=uint8")
    record = extract_maps(cfg, checkpoint, "channel", tmp_path, split="val", progress=False)
    assert record["params"]["base_size"] == 32 and record["extracted"] == 2
    maps = _arrays(tmp_path)
    assert sorted(maps) == VOCSegmentation(voc, "val").ids == tiny_ids("val")
    for image_id, m in maps.items():
        h, w = np.asarray(Image.open(voc / "JPEGImages" / f"{image_id}.jpg")).shape[:2]
        assert m["maps"].shape[1:] == (h, w) and m["storage"] == "uint8"


class _Killed(Exception):
    pass


def test_interrupted_extraction_resumes_to_the_same_outputs(full_run, voc, checkpoint, tmp_path):
    out = tmp_path / "cut"
    cfg = _cfg(voc, "cues.batch_size=1")

    def die_after_one(image_id: str, n: int) -> None:
        if n == 1:
            raise _Killed(image_id)

    with pytest.raises(_Killed):
        extract_maps(cfg, checkpoint, "gradcampp", out, split="train", progress=False, on_image=die_after_one)
    done = sorted(p.stem for p in (out / "maps").glob("*.npz"))
    assert len(done) == 1
    # what a SIGKILL during a write leaves behind: a temp file, and (other writers) a truncated file
    rest = sorted(set(_arrays(full_run)) - set(done))
    (out / "maps" / f".{rest[0]}.npz.abc123.tmp").write_bytes(b"partial")
    (out / "maps" / f"{rest[1]}.npz").write_bytes(b"PK\x03\x04 truncated")
    record = extract_maps(cfg, checkpoint, "gradcampp", out, split="train", progress=False)
    assert record["extracted"] == 2 and record["already_done"] == 1
    assert not list((out / "maps").glob(".*.tmp"))
    _same(_arrays(out), _arrays(full_run))


def test_shards_cover_the_split_exactly_once(voc, checkpoint, tmp_path):
    out = tmp_path / "sharded"
    cfg = _cfg(voc, "cues.scales=[1.0]", "cues.flip=false")
    seen: list[list[str]] = []
    for i in range(3):
        ids: list[str] = []
        extract_maps(cfg, checkpoint, "channel", out, split="trainval", shard=f"{i}/3", progress=False,
                     on_image=lambda image_id, n, ids=ids: ids.append(image_id))
        seen.append(ids)
    trainval = VOCSegmentation(voc, "trainval").ids
    assert trainval == tiny_ids("trainval")
    assert sorted(sum(seen, [])) == sorted(trainval)  # each image once, none left out
    assert [len(s) for s in seen] == [2, 2, 1]
    assert sorted(p.name for p in out.glob("extract_run*.json")) == [
        f"extract_run.shard-{i}-of-3.json" for i in range(3)]
    # the same files as one unsharded run (with loader workers)
    whole = tmp_path / "whole"
    extract_maps(_cfg(voc, "cues.scales=[1.0]", "cues.flip=false", "cues.batch_size=1", "data.num_workers=2"),
                 checkpoint, "channel", whole, split="trainval", progress=False)
    _same(_arrays(out), _arrays(whole))


def test_all_classes_in_one_pass_match_ground_truth_maps(full_run, voc, checkpoint, tmp_path):
    out = tmp_path / "all"
    extract_maps(_cfg(voc, "cues.classes=all"), checkpoint, "gradcampp", out, split="train", progress=False)
    gt, every = _arrays(full_run), _arrays(out)
    assert sorted(every) == sorted(gt) == tiny_ids("train")
    for image_id, m in every.items():
        assert m["classes"].tolist() == list(range(1, 21))
        assert len(gt[image_id]["maps"]) == len(gt[image_id]["classes"]) == len(TINY[image_id][1])
        for row, c in zip(gt[image_id]["maps"], gt[image_id]["classes"]):
            np.testing.assert_allclose(m["maps"][c - 1], row, atol=2e-3)


def test_other_parameters_are_refused(full_run, voc, checkpoint):
    with pytest.raises(ValueError, match=r"other parameters \(scales.*start fresh"):
        extract_maps(_cfg(voc, "cues.scales=[1.0]"), checkpoint, "gradcampp", full_run, split="train", progress=False)
    with pytest.raises(ValueError, match="mechanism"):
        extract_maps(_cfg(voc), checkpoint, "gradcam", full_run, split="train", progress=False)


# --------------------------------------------------------------------------- evaluate, sec, show (CLI)

def test_cli_extract_evaluate_sec_show(voc, checkpoint, tmp_path, capsys):
    common = ["--set", f"data.root={voc}", "--set", "run.device=cpu", "--set", "data.num_workers=0",
              "--set", "cues.scales=[1.0]", "--set", "cues.grid=8"]
    for mech in ("gradcam", "channel"):
        assert main(["cues", "extract", *common, "--checkpoint", str(checkpoint), "--mechanism", mech,
                     "--split", "trainval", "--out", str(tmp_path / mech), "--quiet"]) == 0
    assert main(["cues", "evaluate", *common, "--maps", str(tmp_path / "gradcam"), "--maps", str(tmp_path / "channel"),
                 "--split", "val", "--quiet", "--json", str(tmp_path / "all.json")]) == 0
    out = capsys.readouterr().out
    assert "best tau" in out and "images/s" in out and "seed P" in out
    q = json.loads((tmp_path / "gradcam" / "quality" / "quality.json").read_text())
    assert q["split"] == "val" and q["images"] == 2 and len(q["tau"]) == len(q["miou"]) == 101
    assert 0.0 <= q["best_tau"] <= 1.0 and 0 <= q["best_miou"] <= 1
    assert q["tau_at_edge"] == (q["best_tau"] in (0.0, 1.0) and q["best_miou"] not in q["miou"][1:-1])
    assert set(q["seeds"]["precision"]) == set(VOC_CLASSES)
    csv = (tmp_path / "gradcam" / "quality" / "tau_curve.csv").read_text().splitlines()
    assert csv[0] == "tau,miou" and len(csv) == 102 and csv[1].startswith("0.0,")
    assert Image.open(tmp_path / "gradcam" / "quality" / "tau_curve.png").size[0] > 400
    assert (tmp_path / "gradcam" / "quality" / "tau_curve.pdf").read_bytes().startswith(b"%PDF")
    assert [float(v) for v in csv[1].split(",")] == [q["tau"][0], q["miou"][0]]  # the exact numbers of quality.json
    assert len(json.loads((tmp_path / "all.json").read_text())) == 2

    assert main(["cues", "sec", *common, "--maps", str(tmp_path / "gradcam"), "--quiet"]) == 0
    sec = json.loads((tmp_path / "gradcam" / "sec" / "sec.json").read_text())
    assert sec["params"]["grid"] == 8 and sec["written"] == 5
    from sharpen_core.cue_files import load_cues
    cue = load_cues(tmp_path / "gradcam" / "sec" / "2007_000003.npz")
    assert cue["cues"].shape == (21, 8, 8) and cue["cues"][[12, 8, 15]].any(axis=(1, 2)).all()

    png = tmp_path / "grid.png"
    assert main(["cues", "show", *common, "--maps", str(tmp_path / "gradcam"), "--checkpoint", str(checkpoint),
                 "--mechanism", "gradcampp", "--ids", "2007_000002", "2007_000003", "--out", str(png), "--quiet"]) == 0
    im = Image.open(png)
    assert im.size[1] > 5 * 128  # 2 + 3 class rows


def test_bad_input_is_refused(voc, checkpoint, full_run, tmp_path, capsys):
    wrong = _save_checkpoint(tmp_path / "ten.pt", num_classes=10)
    with pytest.raises(CheckpointMismatch, match="10 classes, but this dataset has 20"):
        extract_maps(_cfg(voc), wrong, "gradcam", tmp_path / "x", split="train", progress=False)
    common = ["--set", f"data.root={voc}", "--set", "run.device=cpu"]
    assert main(["cues", "extract", *common, "--checkpoint", str(wrong), "--mechanism", "gradcam",
                 "--out", str(tmp_path / "x")]) == 2
    assert "error:" in capsys.readouterr().err
    # a split without ground truth
    with pytest.raises(DatasetError, match="no ground-truth masks"):
        evaluate_cues(_cfg(voc), full_run, split="test", progress=False)
    assert main(["cues", "evaluate", *common, "--maps", str(full_run), "--split", "test"]) == 2
    assert "no ground-truth masks" in capsys.readouterr().err
    # maps missing for part of the split
    with pytest.raises(DatasetError, match="2 of 5 images .* have no map file"):
        evaluate_cues(_cfg(voc), full_run, split="trainval", progress=False)
    # an unknown mechanism
    assert main(["cues", "extract", *common, "--checkpoint", str(checkpoint), "--mechanism", "nonsense",
                 "--out", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err
    assert "unknown mechanism 'nonsense'" in err and "gradcampp" in err
    assert not (tmp_path / "y").exists()


def test_adapter_mechanisms_are_cue_sets_with_known_maps(voc, checkpoint, tmp_path):
    """pytorch-grad-cam's mechanisms go through the same extraction and τ sweep. Known answer: at a ResNet's
    last layer g^c = W[c]/Z everywhere, so HiResCAM (ReLU(Σ_k g·A_k)) is Grad-CAM and LayerCAM
    (ReLU(Σ_k ReLU(g)·A_k)) is the channel-weighted map."""
    pytest.importorskip("pytorch_grad_cam")
    cfg = _cfg(voc, "cues.scales=[1.0]", "cues.flip=false")
    for adapter, native in (("hirescam", "gradcam"), ("layercam", "channel")):
        for mechanism in (adapter, native):
            extract_maps(cfg, checkpoint, mechanism, tmp_path / mechanism, split="train", progress=False)
        got, want = _arrays(tmp_path / adapter), _arrays(tmp_path / native)
        assert sorted(got) == sorted(want) == tiny_ids("train")
        for k in got:
            assert np.array_equal(got[k]["classes"], want[k]["classes"])
            np.testing.assert_allclose(got[k]["maps"], want[k]["maps"], atol=2e-3)
    quality = evaluate_cues(cfg, tmp_path / "layercam", split="train", progress=False)
    assert quality["mechanism"] == "layercam"
    assert len(quality["tau"]) == len(quality["miou"]) == 101 and 0 <= quality["best_miou"] <= 1
