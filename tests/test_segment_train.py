"""Stage 3 training: segmenter geometry and weights, cue-driven samples and their checks, SEC and
fully-supervised training, bit-exact resume, refusals, and the CLI, on the tiny VOC set with cue
files made from its masks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision import models as tvm

from cues.sec import nearest_resize
from sharpen_core.cue_files import save_cues
from sharpen_core.errors import DatasetError
from sharpen_core.io import write_json_atomic
from data.voc import VOCSegmentation
from pipeline.cli import main
from sharpen_core.config import load_config
from sharpen_core.checkpoints import RESUME_KEYS
from segment.data import SegTrainDataset
from segment.models import (SEGMENTERS, CheckpointMismatch, build_segmenter, decimate_vgg_fc, largefov_output_size,
                            last_layer, load_segmenter, param_groups, read_checkpoint, save_segmenter)
from segment.crf import CRFParams, CRFPool
from segment.train import IterationBatchSampler, lr_factor, sec_losses, train_segmenter

from tiny_voc import make_tiny_voc

GRID = 8
REPO = Path(__file__).resolve().parent.parent


def write_cues(voc: Path, out: Path, split: str = "train", grid: int = GRID, planes: int = 21,
               size_offset: int = 0) -> Path:
    """Cue files from the ground-truth masks (each label where the nearest-resized mask has it) and a sec.json."""
    ds = VOCSegmentation(voc, split)
    for i, image_id in enumerate(ds.ids):
        mask = ds.load(i)["mask"]
        small = nearest_resize(mask, (grid, grid))
        cues = np.zeros((planes, grid, grid), dtype=bool)
        for k in np.unique(small):
            if k < planes:
                cues[k] = small == k
        h, w = mask.shape
        save_cues(out / f"{image_id}.npz", image_id, cues, (h + size_offset, w), grid)
    write_json_atomic(out / "sec.json", {"stage": "cues sec", "extract": {"fake": True},
                                         "params": {"fg_threshold": 0.2, "bg_rule": "lowest", "bg_fraction": 0.1,
                                                    "saliency_dir": "", "grid": grid}})
    return out


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tiny_seg")
    voc = make_tiny_voc(root)
    return voc, write_cues(voc, root / "cues")


def _cfg(voc: Path, *extra: str):
    return load_config(None, [
        f"data.root={voc}", "run.device=cpu", "data.num_workers=0", "segment.model=deeplabv3plus",
        "segment.encoder=resnet18", "segment.crop_size=32", "segment.batch_size=3", "segment.lr=0.001",
        "segment.crf_processes=1", "segment.checkpoint_every=2", *extra])


# --------------------------------------------------------------------------- models
def test_largefov_geometry_weights_and_param_groups():
    net = build_segmenter("deeplab-largefov", num_classes=21)
    with torch.no_grad():  # 321 -> 41 (SEC's grid), by shape inference on the meta device
        assert net.to("meta")(torch.empty(1, 3, 321, 321, device="meta")).shape == (1, 21, 41, 41)
    net = build_segmenter("deeplab-largefov", num_classes=5).eval()
    with torch.no_grad():  # a real forward at a small size: 65 -> 33 -> 17 -> 9
        assert net(torch.zeros(1, 3, 65, 65)).shape == (1, 5, 9, 9) and largefov_output_size(65) == 9
    assert largefov_output_size(321) == 41
    assert last_layer(net) is net.fc8
    groups = param_groups(net, lr=1e-3, weight_decay=5e-4, last_layer_lr_mult=10.0)
    assert [g["lr"] for g in groups] == [1e-3, pytest.approx(1e-2)]
    assert {id(p) for p in groups[1]["params"]} == {id(net.fc8.weight), id(net.fc8.bias)}
    assert sum(len(g["params"]) for g in groups) == len(list(net.parameters()))
    assert net.features[24].dilation == (2, 2) and net.fc6.dilation == (12, 12)
    with pytest.raises(ValueError, match="unknown segmenter 'deeplab'; expected one of: deeplab-largefov"):
        build_segmenter("deeplab")
    assert SEGMENTERS == ("deeplab-largefov", "deeplabv3plus")


def test_decimated_fc6_fc7_keep_every_4th_unit_and_3rd_position():
    o, c, y, x = torch.meshgrid(torch.arange(8), torch.arange(512), torch.arange(7), torch.arange(7), indexing="ij")
    w6 = (o * 100000 + c * 100 + y * 10 + x).double().reshape(8, 25088)  # value encodes (unit, channel, y, x)
    w7 = (torch.arange(8)[:, None] * 10 + torch.arange(8)[None]).double()
    out = decimate_vgg_fc({"classifier.0.weight": w6, "classifier.0.bias": torch.arange(8.0),
                           "classifier.3.weight": w7, "classifier.3.bias": torch.arange(8.0)})
    assert out["fc6.weight"].shape == (2, 512, 3, 3) and out["fc7.weight"].shape == (2, 2, 1, 1)
    assert out["fc6.weight"][1, 5, 2, 1].item() == 4 * 100000 + 5 * 100 + 6 * 10 + 3
    assert out["fc6.bias"].tolist() == [0.0, 4.0] and out["fc7.bias"].tolist() == [0.0, 4.0]
    assert out["fc7.weight"].flatten().tolist() == [0.0, 4.0, 40.0, 44.0]


def test_weights_from_files(tmp_path):
    # a torchvision VGG-16 backbone state dict loads into the convolutions (keys at the same indices)
    vgg_features = tvm.vgg.make_layers(tvm.vgg.cfgs["D"]).state_dict()
    torch.save({f"features.{k}": v + 1.0 for k, v in vgg_features.items()}, tmp_path / "vgg.pt")
    net = build_segmenter("deeplab-largefov", num_classes=21, weights=str(tmp_path / "vgg.pt"))
    assert torch.equal(net.features[0].weight, vgg_features["0.weight"] + 1.0)
    # a whole segmenter of another class count: everything but the last layer
    net2 = build_segmenter("deeplab-largefov", num_classes=5, weights=str(tmp_path / "vgg.pt"))
    torch.save(net2.state_dict(), tmp_path / "seg5.pt")
    net3 = build_segmenter("deeplab-largefov", num_classes=21, weights=str(tmp_path / "seg5.pt"))
    assert torch.equal(net3.fc7.weight, net2.fc7.weight) and net3.fc8.out_channels == 21
    # a ResNet backbone does not fit LargeFOV: refused, listing the missing and unexpected keys
    resnet = tvm.resnet18().state_dict()
    torch.save(resnet, tmp_path / "r18.pt")
    with pytest.raises(CheckpointMismatch, match=r"do not fit deeplab-largefov: 26 missing \[features.0.weight"):
        build_segmenter("deeplab-largefov", weights=str(tmp_path / "r18.pt"))
    # ... but is the encoder of DeepLabV3+ (its ImageNet fc head is dropped)
    v3 = build_segmenter("deeplabv3plus", "resnet18", 21, weights=str(tmp_path / "r18.pt"))
    assert torch.equal(v3.encoder.conv1.weight, resnet["conv1.weight"])
    with pytest.raises(CheckpointMismatch, match=r"do not fit deeplabv3plus: \d+ missing \[encoder.conv1.weight"):
        build_segmenter("deeplabv3plus", "resnet18", 21, weights=str(tmp_path / "vgg.pt"))


def test_deeplabv3plus_any_size_and_checkpoints(tmp_path):
    net = build_segmenter("deeplabv3plus", "resnet18", num_classes=21).eval()
    with torch.no_grad():
        assert net(torch.zeros(2, 3, 50, 70)).shape == (2, 21, 50, 70)  # padded to 64x80 inside, cropped back
        assert net(torch.zeros(2, 3, 64, 48)).shape == (2, 21, 64, 48)
    assert last_layer(net) is net.segmentation_head[0]
    assert param_groups(net, 0.1, 0.0, 10.0)[1]["lr"] == pytest.approx(1.0)
    meta = {"model": "deeplabv3plus", "encoder": "resnet18", "num_classes": 21, "iteration": 3}
    save_segmenter(tmp_path / "c.pt", torch.nn.parallel.DataParallel(net), meta)  # wrapper unwrapped
    loaded, got = load_segmenter(tmp_path / "c.pt", num_classes=21)
    assert got["iteration"] == 3 and not loaded.training
    for k, v in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    with pytest.raises(CheckpointMismatch, match="checkpoint is for model 'deeplabv3plus', but this run uses "
                                                 "'deeplab-largefov'"):
        load_segmenter(tmp_path / "c.pt", model="deeplab-largefov")
    with pytest.raises(CheckpointMismatch, match="encoder 'resnet18', but this run uses 'resnet50'"):
        load_segmenter(tmp_path / "c.pt", encoder="resnet50")
    with pytest.raises(CheckpointMismatch, match="checkpoint is for 21 classes, but this dataset has 13"):
        load_segmenter(tmp_path / "c.pt", num_classes=13)


# --------------------------------------------------------------------------- data
def test_samples_flip_together(tiny):
    voc, cues = tiny
    ds = SegTrainDataset(VOCSegmentation(voc, "train"), 24, cues, "sec", flip=True, seed=0)
    assert ds.grid == GRID and len(ds) == 3
    flips = [ds.flipped(e, 1) for e in range(8)]
    assert any(flips) and not all(flips)
    e_flip, e_keep = flips.index(True), flips.index(False)
    a, b = ds[(e_keep, 1)], ds[(e_flip, 1)]
    assert a["image"].shape == (3, 24, 24) and a["cues"].shape == (21, GRID, GRID) and a["cues"].dtype == torch.bool
    assert a["small_image"].shape == (GRID, GRID, 3) and a["small_image"].dtype == torch.uint8
    assert a["labels"].tolist() == [1.0 if c in (0, 1, 7) else 0.0 for c in range(21)]  # image 2: classes 1, 7
    assert torch.equal(b["image"], a["image"].flip(-1))
    assert torch.equal(b["cues"], a["cues"].flip(-1))
    assert torch.equal(b["small_image"], a["small_image"].flip(1))
    assert torch.equal(ds[(e_flip, 1)]["image"], b["image"])  # a pure function of (seed, epoch, index)
    full = SegTrainDataset(VOCSegmentation(voc, "train"), 24, None, "full", flip=True, seed=0)
    m_keep, m_flip = full[(e_keep, 1)]["mask"], full[(e_flip, 1)]["mask"]
    assert m_keep.dtype == torch.int64 and m_keep.shape == (24, 24) and torch.equal(m_flip, m_keep.flip(-1))
    assert set(m_keep.unique().tolist()) <= {0, 1, 7, 255}


def test_batches_shard_the_global_batch():
    one = IterationBatchSampler(10, 4, iterations=7, seed=3)
    two = [IterationBatchSampler(10, 4, iterations=7, seed=3, rank=r, world_size=2) for r in (0, 1)]
    late = IterationBatchSampler(10, 4, iterations=7, start=4, seed=3)
    batches = list(one)
    assert len(batches) == 7 and [b[0][0] for b in batches] == [0, 0, 1, 1, 2, 2, 3]  # 2 batches per epoch
    assert all(len({i for _, i in batches[2 * e] + batches[2 * e + 1]}) == 8 for e in range(3))
    assert [x + y for x, y in zip(*two)] == batches
    assert list(late) == batches[4:]
    with pytest.raises(ValueError, match="not divisible by 2 processes"):
        IterationBatchSampler(10, 3, 5, world_size=2)


def test_cue_folder_errors(tiny, tmp_path):
    voc, cues = tiny
    train = VOCSegmentation(voc, "train")
    with pytest.raises(DatasetError, match="cue folder not found"):
        SegTrainDataset(train, 24, tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no sec.json in the cue folder"):
        SegTrainDataset(train, 24, tmp_path / "empty")
    # cues of the val split only: the train images have none
    val_cues = write_cues(voc, tmp_path / "val_cues", split="val")
    with pytest.raises(DatasetError, match=r"2007_000001.npz: no cue file for image '2007_000001' of split 'train'"):
        SegTrainDataset(train, 24, val_cues)
    # cues made for another dataset: the image sizes differ
    other = write_cues(voc, tmp_path / "other", size_offset=5)
    with pytest.raises(DatasetError, match=r"cue file was made for an image of 45x56 \(HxW\) but .*2007_000001.jpg "
                                           r"is 40x56"):
        SegTrainDataset(train, 24, other)
    # another class count
    twelve = write_cues(voc, tmp_path / "twelve", planes=12)
    with pytest.raises(DatasetError, match="cue file has 12 label planes .* but the dataset has 21 classes"):
        SegTrainDataset(train, 24, twelve)
    # a file holding another image's cues
    swapped = write_cues(voc, tmp_path / "swapped")
    (swapped / "2007_000001.npz").write_bytes((swapped / "2007_000002.npz").read_bytes())
    with pytest.raises(DatasetError, match="cue file is for image '2007_000002', not '2007_000001'"):
        SegTrainDataset(train, 24, swapped)


# --------------------------------------------------------------------------- training
def test_sec_losses_resize_logits_to_the_cue_grid(tiny):
    voc, cues = tiny
    ds = SegTrainDataset(VOCSegmentation(voc, "train"), 24, cues, "sec", flip=False)
    from segment.data import collate

    batch = collate([ds[0], ds[2]])
    cfg = _cfg(voc).segment
    logits = torch.randn(2, 21, 16, 16, generator=torch.Generator().manual_seed(0))
    small = torch.nn.functional.interpolate(logits, size=(GRID, GRID), mode="bilinear", align_corners=False)
    with CRFPool(1) as pool:
        a, b = sec_losses(logits, batch, cfg, pool), sec_losses(small, batch, cfg, pool)
    for k in ("seed", "expand", "constrain", "loss"):
        assert torch.isfinite(a[k]) and a[k].item() == pytest.approx(b[k].item(), rel=1e-6), k
    assert a["loss"].item() == pytest.approx(a["seed"].item() + a["expand"].item() + a["constrain"].item(), rel=1e-6)


def test_constrain_crf_over_all_or_present_labels(tiny):
    # With 0 mean-field iterations the CRF returns its input renormalised over the labels it runs on:
    # "all" gives Q = p floored at 1e-4 (constrain ≈ 0); "present" gives Q = p restricted to the
    # present labels S and renormalised, so the constrain loss is the pixel mean of −log Σ_{c∈S} p^c.
    voc, cues = tiny
    ds = SegTrainDataset(VOCSegmentation(voc, "train"), 24, cues, "sec", flip=False)
    from segment.data import collate
    from segment.losses import sec_probabilities

    batch = collate([ds[1], ds[2]])
    logits = torch.randn(2, 21, GRID, GRID, generator=torch.Generator().manual_seed(1))
    probs = sec_probabilities(logits)
    present = batch["labels"] > 0.5
    expected = -torch.log((probs * present[:, :, None, None]).sum(1)).mean().item()
    with CRFPool(1, CRFParams(iterations=0)) as pool:
        all_ = sec_losses(logits, batch, _cfg(voc).segment, pool)["constrain"].item()
        pres = sec_losses(logits, batch, _cfg(voc, "segment.crf_train_labels='present'").segment, pool)["constrain"]
    assert abs(all_) < 1e-5
    assert pres.item() == pytest.approx(expected, rel=1e-4)
    with pytest.raises(ValueError, match="segment.crf_train_labels 'some'"):
        train_segmenter(_cfg(voc, "segment.crf_train_labels='some'"), voc.parent / "bad", cues)


def _history(out: Path) -> list[dict]:
    return json.loads((out / "metrics.json").read_text())


def test_sec_training_overfits_a_fixed_batch(tiny, tmp_path):
    voc, cues = tiny
    cfg = _cfg(voc, "segment.iterations=10", "segment.flip=false", "segment.crop_size=48",
               "segment.checkpoint_every=100")
    record = train_segmenter(cfg, tmp_path, cues_dir=cues, progress=False)
    history = _history(tmp_path)
    assert [h["iteration"] for h in history] == list(range(1, 11))
    first, last = history[0], np.mean([h["loss"] for h in history[-3:]])
    assert last < 0.6 * first["loss"], [h["loss"] for h in history]
    for h in history:
        assert h["loss"] == pytest.approx(h["seed"] + h["expand"] + h["constrain"], rel=1e-5)
        assert h["constrain"] >= -1e-6 and h["seed"] > 0 and h["expand"] > 0
    assert record["iterations"] == 10 and record["supervision"] == "sec" and record["images_per_second"] > 0
    assert json.loads((tmp_path / "train.json").read_text())["final"] == history[-1]
    meta = read_checkpoint(tmp_path / "checkpoint.pt")["meta"]
    assert meta["iteration"] == 10 and meta["input_size"] == 48 and meta["grid"] == GRID
    assert meta["class_names"][0] == "background" and meta["cue_params"]["grid"] == GRID
    assert (tmp_path / "config.toml").is_file()


def test_resume_reproduces_uninterrupted_run(tiny, tmp_path):
    voc, cues = tiny
    cfg = _cfg(voc, "segment.iterations=5", "segment.schedule=poly", "segment.optimizer=adamw",
               "segment.warmup_steps=2")  # flips on, ASPP dropout on; AdamW state and warm-up resume too
    train_segmenter(cfg, tmp_path / "full", cues_dir=cues, progress=False)
    out = train_segmenter(cfg, tmp_path / "cut", cues_dir=cues, progress=False, stop_after_iterations=3)
    assert out == {"interrupted": True, "iteration": 3}
    cut_state = read_checkpoint(tmp_path / "cut" / "checkpoint.pt")
    assert cut_state["meta"]["iteration"] == 2 and set(RESUME_KEYS) <= cut_state.keys()
    # the finished run's checkpoint keeps weights, meta and history only: nothing is left to resume
    assert not set(RESUME_KEYS) & read_checkpoint(tmp_path / "full" / "checkpoint.pt").keys()
    with pytest.raises(ValueError, match="an unfinished run is here .*pass --resume"):
        train_segmenter(cfg, tmp_path / "cut", cues_dir=cues, progress=False)
    train_segmenter(cfg, tmp_path / "cut", cues_dir=cues, resume=True, progress=False)
    full = read_checkpoint(tmp_path / "full" / "checkpoint.pt")
    cut = read_checkpoint(tmp_path / "cut" / "checkpoint.pt")
    assert full["model"].keys() == cut["model"].keys() and len(full["model"]) > 10
    for k, v in full["model"].items():
        assert torch.equal(cut["model"][k], v), k
    assert _history(tmp_path / "full") == _history(tmp_path / "cut")
    lrs = [h["lr"] for h in _history(tmp_path / "full")]
    assert lrs == pytest.approx([1e-3 * lr_factor(i, cfg.segment) for i in range(5)])
    assert lrs[:3] == pytest.approx([1e-4, 5.5e-4, 1e-3])  # linear warm-up from 0.1 x lr over 2 steps
    # a finished run is skipped and its record returned; a checkpoint of another model is refused
    assert train_segmenter(cfg, tmp_path / "full", cues_dir=cues, progress=False)["iterations"] == 5
    with pytest.raises(CheckpointMismatch, match="checkpoint is for model 'deeplabv3plus', but this run uses "
                                                 "'deeplab-largefov'"):
        train_segmenter(_cfg(voc, "segment.iterations=5", "segment.model=deeplab-largefov"), tmp_path / "full",
                        cues_dir=cues, progress=False)
    with pytest.raises(ValueError, match="another \\[segment\\]/\\[data\\] config"):
        train_segmenter(_cfg(voc, "segment.iterations=5", "segment.lr=0.01"), tmp_path / "full", cues_dir=cues,
                        progress=False)
    with pytest.raises(ValueError, match="needs at least 2 images per process"):
        train_segmenter(_cfg(voc, "segment.batch_size=1"), tmp_path / "one", cues_dir=cues, progress=False)


def test_full_supervision_trains(tiny, tmp_path):
    voc, _ = tiny
    cfg = _cfg(voc, "segment.iterations=8", "segment.flip=false", "segment.lr=0.002", "segment.checkpoint_every=8")
    train_segmenter(cfg, tmp_path, supervision="full", progress=False)
    losses = [h["loss"] for h in _history(tmp_path)]
    assert set(_history(tmp_path)[0]) == {"iteration", "lr", "loss"}
    assert np.mean(losses[-2:]) < 0.7 * losses[0], losses
    _, meta = load_segmenter(tmp_path / "checkpoint.pt", num_classes=21)
    assert meta["supervision"] == "full" and meta["cue_params"] is None


def test_cli_segment_train(tiny, tmp_path, capsys):
    voc, cues = tiny
    sets = [f"data.root={voc}", "run.device=cpu", "data.num_workers=0", "segment.model=deeplabv3plus",
            "segment.encoder=resnet18", "segment.crop_size=32", "segment.batch_size=2", "segment.iterations=2",
            "segment.crf_processes=1"]
    args = ["segment", "train", "--quiet", *[x for s in sets for x in ("--set", s)]]
    assert main([*args, "--cues", str(cues), "--out", str(tmp_path / "run")]) == 0
    assert read_checkpoint(tmp_path / "run" / "checkpoint.pt")["meta"]["iteration"] == 2
    assert json.loads((tmp_path / "run" / "train.json").read_text())["cues_dir"] == str(cues)
    assert main([*args, "--cues", str(tmp_path / "missing"), "--out", str(tmp_path / "bad")]) == 2
    assert "cue folder not found" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("SHARPEN_DDP_TEST"),
                    reason="2-process torchrun run (~20 s on 2 shared cores; the classifier's DDP test runs by "
                           "default); set SHARPEN_DDP_TEST=1 to run it")
def test_ddp_two_processes(tiny, tmp_path):
    """torchrun, 2 gloo processes, 1 image each: rank 0 alone writes; the run completes and records both."""
    voc, cues = tiny
    sets = [f"data.root={voc}", "run.device=cpu", "data.num_workers=0", "segment.model=deeplab-largefov",
            "segment.crop_size=32", "segment.batch_size=2", "segment.iterations=2", "segment.crf_processes=1"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(Path(sys.executable).parent / "sharpen"), "segment", "train", "--quiet", "--cues", str(cues),
           "--out", str(tmp_path / "two"), *[x for s in sets for x in ("--set", s)]]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=REPO,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((tmp_path / "two" / "train.json").read_text())
    assert record["world_size"] == 2 and record["final"]["iteration"] == 2
    assert read_checkpoint(tmp_path / "two" / "checkpoint.pt")["meta"]["iteration"] == 2
    assert sorted(p.name for p in (tmp_path / "two").iterdir() if p.name != ".lock") == [
        "checkpoint.pt", "config.toml", "metrics.json", "train.json"]
    assert (tmp_path / "two" / ".lock").is_file()  # rank 0 locked the folder; rank 1 did not refuse
