"""Claim (c)'s measures (issue 20, item 4): the Grad-CAM++ linearity |g·ΣA|/2 (docs/method.md §6.4) by hand,
the attention overlap at the inner layer of a hand-built model (§2.7), the acts and target gradients the
evaluation reads, the evaluation record's new fields, and their way through collect → aggregate → report.md.
The claims themselves (verdict from the non-circular measures, reference row, KS direction, per ICASC
variant) are judged on hand-made report rows in tests/test_study.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from classify.evaluate import attention_overlap, layer_overlaps, target_acts_and_grads
from pipeline.aggregate import CLASSIFIER_FIELDS, ROW_FIELDS, aggregate, aggregate_classifiers
from pipeline.collect import classifier_fields
from pipeline.report_md import classifiers_table_markdown, linearity_lines
from sharpen_attention.attention import AttentionExtractor, max_normalize
from sharpen_attention.mechanisms import (channel_weights, gradcampp_linearity, gradcampp_linearity_terms,
                                          gradcampp_weights, linearity_summary)
from sharpen_core.stage_records import EvaluationRecord

pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------- |g·ΣA|/2 by hand

def test_gradcampp_linearity_known_answer():
    # channel 0: ΣA = 1+2+3+4 = 10, positive g 0.1 and 0.3 → |g·ΣA|/2 = 0.5, 1.5 (g = -0.2 and 0 left out)
    # channel 1: ΣA = -2, positive g 0.5 and 0.25 → |g·ΣA|/2 = 0.5, 0.25 (the absolute value)
    acts = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.0, -1.0], [0.0, -1.0]]]])  # (1, 2, 2, 2)
    grads = torch.tensor([[[[0.1, -0.2], [0.0, 0.3]], [[0.5, 0.25], [-1.0, 0.0]]]])[:, None]  # (1, 1, 2, 2, 2)
    assert sorted(gradcampp_linearity_terms(acts, grads).tolist()) == pytest.approx([0.25, 0.5, 0.5, 1.5])
    # sorted 0.25, 0.5, 0.5, 1.5: median at position 1.5 → 0.5; p90 at 2.7 → 0.5 + 0.7·1.0; p99 at 2.97
    got = gradcampp_linearity(acts, grads)
    assert got == pytest.approx({"median": 0.5, "p90": 1.2, "p99": 1.47, "max": 1.5, "entries": 4})
    # a second class with only negative gradients adds no entries; acts (B, K, H, W) broadcast over classes
    two = torch.cat([grads, -grads.abs()], 1)
    assert gradcampp_linearity(acts, two) == pytest.approx(got)
    empty = gradcampp_linearity(acts, -grads.abs())
    assert empty == {"median": None, "p90": None, "p99": None, "max": None, "entries": 0}


def test_linearity_summary_is_numpys_percentile_and_keeps_a_known_max():
    values = torch.rand(1001, generator=torch.Generator().manual_seed(3))
    got = linearity_summary(values)
    assert [got["median"], got["p90"], got["p99"]] == pytest.approx(np.percentile(values.numpy(), [50, 90, 99]))
    assert got["max"] == pytest.approx(float(values.max())) and got["entries"] == 1001
    assert linearity_summary(values[::10], maximum=7.0, count=5000)["max"] == 7.0  # a subsample's known max


def test_small_linearity_bounds_gradcampp_against_channel_halved():
    """With t = g·ΣA/2 ≥ 0 (acts ≥ 0), Grad-CAM++'s weight Σ (g/2)/(1 + t) lies between Σ ReLU(g)/2 / (1 + max t)
    and Σ ReLU(g)/2 = channel-weighted's weight · Z/2: with a small max t the two agree by construction."""
    g = torch.Generator().manual_seed(0)
    acts = torch.rand(2, 6, 4, 4, generator=g)
    grads = 1e-3 * torch.randn(2, 3, 6, 4, 4, generator=g)
    t_max = gradcampp_linearity(acts, grads)["max"]
    assert 0 < t_max < 0.02
    pp = gradcampp_weights(acts, grads)
    half = channel_weights(acts, grads) * 16 / 2  # Σ_ij ReLU(g) / 2
    assert torch.all(pp <= half + 1e-12) and torch.all(pp >= half / (1 + t_max) - 1e-12)
    assert not torch.allclose(pp, half, rtol=0, atol=0)  # not equal: the factor 1/(1 + t) is there


# --------------------------------------------------------------------------- a hand-built two-layer model

class _TwoStage(nn.Module):
    """``layer1`` = ReLU(1x1 conv U) of the input (the inner layer), ``layer2`` = ReLU(1x1 conv V) of it (the
    last layer), global average pooling, linear head W; no bias."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(5)
        self.u, self.v, self.w = (torch.randn(4, 3, generator=g).double(), torch.randn(5, 4, generator=g).double(),
                                  torch.randn(3, 5, generator=g).double())
        self.layer1 = nn.Sequential(nn.Conv2d(3, 4, 1, bias=False), nn.ReLU())
        self.layer2 = nn.Sequential(nn.Conv2d(4, 5, 1, bias=False), nn.ReLU())
        self.fc = nn.Linear(5, 3, bias=False)
        with torch.no_grad():
            self.layer1[0].weight.copy_(self.u[:, :, None, None])
            self.layer2[0].weight.copy_(self.v[:, :, None, None])
            self.fc.weight.copy_(self.w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.layer2(self.layer1(x)).mean(dim=(2, 3)))

    def inner(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """By hand: the inner activations A1 (B, 4, H, W) and g^c = (1/Z) Σ_k W[c,k] V[k,m] [V·A1 > 0]_k,
        (B, 3, 4, H, W)."""
        a1 = torch.einsum("mi,bihw->bmhw", self.u, x).relu()
        gate = (torch.einsum("km,bmhw->bkhw", self.v, a1) > 0).double()
        z = x.shape[-1] * x.shape[-2]
        return a1, torch.einsum("ck,km,bkhw->bcmhw", self.w, self.v, gate) / z


def _hand_overlap(t: torch.Tensor, conf: torch.Tensor, sigma: float, omega: float) -> float:
    """L_AS (Eq. 3) with T (Eq. 4) from the target map itself, written out."""
    region = torch.sigmoid(omega * (t - sigma))
    return float(2 * (torch.minimum(t, conf) * region).sum() / (t.sum() + conf.sum() + 1e-8))


def test_attention_overlap_known_answer():
    # image 0: target 1 lies on the confusing class's cell (L_AS = σ(45)), target 2 beside it (0): mean σ(45)/2
    # image 1: one target (column 2 padded), a map half of the confusing one's: 2·0.5·σ(-5) / 1.5
    maps = torch.zeros(2, 3, 2, 2)
    maps[0, 0, 0, 0] = maps[0, 1, 0, 0] = maps[0, 2, 0, 1] = 1.0
    maps[1, 0, 1, 1], maps[1, 1, 1, 1] = 1.0, 0.5
    classes = torch.tensor([[2, 0, 1], [0, 1, -1]])
    got = attention_overlap(maps, classes, sigma=0.55, omega=100.0)
    s45, s5 = torch.sigmoid(torch.tensor(45.0)), torch.sigmoid(torch.tensor(-5.0))
    assert got.tolist() == pytest.approx([float(s45) / 2, float(2 * 0.5 * s5 / 1.5)], rel=1e-5)


@pytest.mark.parametrize("mechanism", ["channel", "gradcam"])
def test_overlap_at_the_inner_layer_of_a_hand_built_model(mechanism):
    """The inner layer's overlap: the hand-computed inner maps (§1.2), T from those maps themselves (§2.7)."""
    model = _TwoStage().double().eval()
    x = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    classes = [[2, 0, 1], [1, 2, -1]]  # confusing class first, then the targets
    with AttentionExtractor(model, layers=("last", "inner"), mechanism=mechanism) as extract:
        res = extract(x, classes=classes, normalize=True)
    got = layer_overlaps(res, sigma=0.55, omega=100.0)
    a1, grads = model.inner(x)
    alpha = grads.relu().mean(dim=(-2, -1)) if mechanism == "channel" else grads.mean(dim=(-2, -1))
    maps = max_normalize(torch.einsum("bcm,bmhw->bchw", alpha, a1).relu())
    expected = [np.mean([_hand_overlap(maps[b, t], maps[b, row[0]], 0.55, 100.0) for t in row[1:] if t >= 0])
                for b, row in enumerate(classes)]
    assert got["inner"].tolist() == pytest.approx(expected, rel=1e-5)
    assert set(got) == {"last", "inner"} and not torch.allclose(got["inner"], got["last"])


def test_target_acts_and_grads_are_the_hand_computed_ones():
    model = _TwoStage().double().eval()
    x = torch.randn(2, 3, 5, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    acts, grads, logits = target_acts_and_grads(model, "layer1", x, lambda lg: torch.tensor([[2, 0, 1], [0, 2, -1]]))
    a1, g = model.inner(x)
    # one entry per (image, target): (0, 0), (0, 1), (1, 2)
    torch.testing.assert_close(acts, a1[[0, 0, 1]])
    torch.testing.assert_close(grads, torch.stack([g[0, 0], g[0, 1], g[1, 2]])[:, None])
    torch.testing.assert_close(logits, model(x))
    assert not any(p.grad is not None for p in model.parameters())  # the weights' gradients are left alone


# --------------------------------------------------------------------------- record → collect → report

EVAL_HEAD = {"checkpoint": "c.pt", "variant": "icasc", "arch": "resnet18", "split": "val", "images": 3, "map": 0.5,
             "macro_auc": 0.75, "ks_target_vs_confusing": 0.4, "per_class_ap": {"cat": 0.5}}


def test_evaluation_record_new_fields_round_trip_and_old_files_read(tmp_path):
    new = {**EVAL_HEAD, "attention_overlap": {"gradcam": 0.2, "channel": 0.8},
           "attention_overlap_inner": {"gradcam": 0.3, "channel": 0.5},
           "gradcampp_linearity": {"layer": "inner", "module": "layer3", "median": 0.005, "p90": 0.02, "p99": 0.075,
                                   "max": 0.3, "entries": 100}, "seconds": 1.0}
    path = tmp_path / "evaluation.json"
    EvaluationRecord.from_json(new).write(path)
    assert path.read_text() == json.dumps(new, indent=2) + "\n"
    assert classifier_fields(EvaluationRecord.read(path)) == {
        "overlap_gradcam_last": 0.2, "overlap_channel_last": 0.8, "overlap_gradcam_inner": 0.3,
        "overlap_channel_inner": 0.5, "cls_ks": 0.4}
    old = {**EVAL_HEAD, "attention_overlap": {"channel": 0.8}, "seconds": 1.0}  # written before the inner layer
    path.write_text(json.dumps(old))
    record = EvaluationRecord.read(path)
    assert record.attention_overlap_inner is None and record.gradcampp_linearity is None
    assert record.to_json() == old
    assert classifier_fields(record) == {"overlap_gradcam_last": None, "overlap_channel_last": 0.8,
                                         "overlap_gradcam_inner": None, "overlap_channel_inner": None, "cls_ks": 0.4}
    assert classifier_fields(None) == dict.fromkeys(CLASSIFIER_FIELDS)


def _seed(values: dict, median: float) -> dict:
    rows = [{"classifier": "baseline", "mechanism": m, **values} for m in ("gradcam", "channel")]
    return {"rows": rows, "classifiers": {"baseline": {"map": values["cls_map"], "gradcampp_linearity": {
        "layer": "inner", "module": "layer3", "median": median, "p90": 2 * median, "p99": 10 * median,
        "max": 40 * median, "entries": 9}}}}


def test_classifier_fields_are_averaged_over_seeds_and_shown():
    assert set(CLASSIFIER_FIELDS) <= set(ROW_FIELDS)
    one = dict(cls_map=0.5, overlap_gradcam_last=0.10, overlap_channel_last=0.80, overlap_gradcam_inner=0.30,
               overlap_channel_inner=0.50, cls_ks=0.60)
    two = {k: v + 0.02 for k, v in one.items()}
    runs = [_seed(one, 0.004), _seed(two, 0.006)]
    summary = {**runs[0], "seeds": [0, 1], "per_seed": runs}
    rows, _, _ = aggregate(summary)
    for f in CLASSIFIER_FIELDS:
        assert rows[0][f] == pytest.approx(one[f] + 0.01) and rows[1][f] == rows[0][f]
        assert rows[0][f + "_std"] == pytest.approx(0.02 / 2 ** 0.5) and rows[0][f + "_values"] == [one[f], two[f]]
    lin = aggregate_classifiers(summary)["baseline"]["gradcampp_linearity"]
    assert lin["layer"] == "inner" and lin["median"] == pytest.approx(0.005) and lin["p99"] == pytest.approx(0.05)
    assert lin["median_values"] == [0.004, 0.006] and lin["median_std"] == pytest.approx(0.002 / 2 ** 0.5)
    report = {"rows": rows, "classifiers": aggregate_classifiers(summary)}
    table = classifiers_table_markdown(report)
    assert "| baseline | 51.0 ± 1.4 | 0.610 ± 0.014 | 0.110 ± 0.014 | 0.810 ± 0.014 | 0.310 ± 0.014 | " \
           "0.510 ± 0.014 |" in table and table.count("| baseline |") == 1
    assert linearity_lines(report) == [
        "Grad-CAM++ ≈ channel-weighted/2 at layer `inner` of `baseline` because median |g·ΣA|/2 = 0.005 (p99 0.05); "
        "the two rows agree by construction (Grad-CAM++'s weight Σ g/(2 + g·ΣA) is channel-weighted's Σ g halved "
        "while |g·ΣA| ≪ 2; docs/method.md §6.4)."]
    runs = [_seed(one, 0.2), _seed(two, 0.2)]
    far = {"classifiers": aggregate_classifiers({**runs[0], "per_seed": runs})}
    assert linearity_lines(far)[0].startswith("Grad-CAM++ and channel-weighted differ at layer `inner` of `baseline`: "
                                              "median |g·ΣA|/2 = 0.2 (p99 2)")
    assert linearity_lines({"classifiers": {"baseline": {"map": 0.5}}}) == []  # an old report: no line


def test_the_driver_always_measures_gradcam_and_channel():
    from pathlib import Path

    from pipeline.run import _attention_mechanisms
    from sharpen_core.config import load_config

    cfg = load_config(Path(__file__).resolve().parent.parent / "configs" / "quick.toml",
                      ['run.cue_sets=["baseline:gradcampp", "baseline:layercam", "icasc:channel"]'])
    assert _attention_mechanisms(cfg, "baseline") == ["gradcam", "channel", "gradcampp"]  # layercam: an adapter one
    assert _attention_mechanisms(cfg, "icasc") == ["gradcam", "channel"]
