"""SEC losses (docs/method.md §4): known answers and finite-difference gradients."""

from __future__ import annotations

import math

import pytest
import torch

from segment.losses import (PROB_EPS, constrain_loss, expansion_loss, floor_crf_probs, gwrp, rescaled_decay,
                            sec_probabilities, seeding_loss)


# --- probabilities ---------------------------------------------------------------------------

def test_sec_probabilities_add_eps_and_renormalise():
    logits = torch.tensor([[[[100.0]], [[0.0]], [[0.0]]]], dtype=torch.float64)  # (1, 3, 1, 1), ~one-hot
    p = sec_probabilities(logits)
    z = 1 + 3 * PROB_EPS
    assert torch.allclose(p.flatten(), torch.tensor([(1 + PROB_EPS) / z, PROB_EPS / z, PROB_EPS / z],
                                                    dtype=torch.float64), rtol=1e-12, atol=0)
    q = sec_probabilities(torch.randn(2, 5, 3, 4) * 30)
    assert torch.allclose(q.sum(1), torch.ones(2, 3, 4), atol=1e-6)
    assert q.min() >= PROB_EPS / (1 + 5 * PROB_EPS) * (1 - 1e-5)


def test_sec_probabilities_upcast_half():
    p = sec_probabilities(torch.randn(1, 3, 2, 2).to(torch.bfloat16))
    assert p.dtype == torch.float32


# --- GWRP ------------------------------------------------------------------------------------

def test_gwrp_decay_zero_is_max_and_one_is_mean():
    v = torch.tensor([[0.2, 0.9, 0.4, 0.1], [3.0, -1.0, 2.0, 0.5]])
    assert torch.allclose(gwrp(v, 0.0), torch.tensor([0.9, 3.0]))
    assert torch.allclose(gwrp(v, 1.0), v.mean(-1))


def test_gwrp_hand_worked():
    # sorted [3, 2, 1], weights [1, 1/2, 1/4] / (7/4): (3 + 1 + 1/4) / (7/4) = 17/7
    v = torch.tensor([1.0, 3.0, 2.0], dtype=torch.float64)
    assert gwrp(v, 0.5).item() == pytest.approx(17 / 7, rel=1e-12)
    # four values, d = 0.9: sorted [4, 3, 2, 1], weights 1, .9, .81, .729
    v4 = torch.tensor([2.0, 4.0, 1.0, 3.0], dtype=torch.float64)
    expect = (4 + 3 * 0.9 + 2 * 0.81 + 1 * 0.729) / (1 + 0.9 + 0.81 + 0.729)
    assert gwrp(v4, 0.9).item() == pytest.approx(expect, rel=1e-12)


def test_gwrp_large_n_underflow_is_graceful():
    n = 1_000_000
    v = torch.full((n,), 0.7, dtype=torch.float32, requires_grad=True)
    out = gwrp(v, 0.9)  # 0.9^j underflows float32 long before j = 10^6
    assert out.item() == pytest.approx(0.7, rel=1e-5)
    out.backward()
    assert torch.isfinite(v.grad).all() and v.grad.sum().item() == pytest.approx(1.0, rel=1e-4)
    # a constant top block: the share of weight in the top k of n is 1 - d^k (n large)
    ramp = torch.zeros(n, dtype=torch.float64)
    ramp[:10] = 1.0
    assert gwrp(ramp, 0.5).item() == pytest.approx(1 - 0.5 ** 10, rel=1e-12)


def test_gwrp_rejects_bad_decay():
    with pytest.raises(ValueError, match="decay"):
        gwrp(torch.ones(3), 1.5)


def test_gwrp_gradcheck():
    v = torch.rand(2, 7, dtype=torch.float64, requires_grad=True)  # distinct almost surely: sort is smooth there
    assert torch.autograd.gradcheck(lambda x: gwrp(x, 0.8), (v,))


# --- decay rescaling -------------------------------------------------------------------------

def test_rescaled_decay_reference_grid_is_identity():
    assert rescaled_decay(0.996, (41, 41)) == pytest.approx(0.996, rel=1e-15)
    assert rescaled_decay(0.999, (20, 20), reference=20) == pytest.approx(0.999, rel=1e-15)
    assert rescaled_decay(0.996, (82, 82)) == pytest.approx(0.996 ** 0.25, rel=1e-12)


def test_rescaled_decay_keeps_effective_fraction():
    # the GWRP weight share of the top 10% pixels is the same at 41x41 with d and at 82x82 with d'
    d = 0.996
    small, large = 41 * 41, 82 * 82  # 4x the pixels
    top_small, top_large = 168, 4 * 168
    share_small = gwrp((torch.arange(small) < top_small).double(), d)
    share_large = gwrp((torch.arange(large) < top_large).double(), rescaled_decay(d, (82, 82)))
    assert share_small.item() == pytest.approx(share_large.item(), rel=1e-9)
    closed = (1 - d ** top_small) / (1 - d ** small)
    assert share_small.item() == pytest.approx(closed, rel=1e-9)


# --- seeding loss ----------------------------------------------------------------------------

def _one_hot_probs(index: torch.Tensor, num_labels: int) -> torch.Tensor:
    """sec_probabilities of (near) one-hot logits: (B, h, w) label index -> (B, L, h, w) float64."""
    logits = torch.nn.functional.one_hot(index, num_labels).permute(0, 3, 1, 2).double() * 200.0
    return sec_probabilities(logits)


def test_seeding_loss_one_hot_hand_computed():
    # image 0: 1x3 grid, argmax labels [0, 1, 2], L = 3
    index = torch.tensor([[[0, 1, 2]], [[0, 0, 0]]])
    probs = _one_hot_probs(index, 3)
    cues = torch.zeros(2, 3, 1, 3, dtype=torch.bool)
    cues[0, 0, 0, 0] = True  # right label
    cues[0, 1, 0, 1] = True  # right label
    cues[0, 1, 0, 2] = True  # wrong label (pixel 2 is label 2)
    cues[0, 2, 0, 2] = True  # right label, same pixel: a multi-hot pixel counts twice in Σ|S_c|
    # image 1: no cue at all -> contributes 0, counted in the batch mean of 2
    z = 1 + 3 * PROB_EPS
    right, wrong = math.log((1 + PROB_EPS) / z), math.log(PROB_EPS / z)
    expect = -(3 * right + wrong) / 4 / 2
    assert seeding_loss(probs, cues).item() == pytest.approx(expect, rel=1e-10)


def test_seeding_loss_shape_mismatch():
    with pytest.raises(ValueError, match=r"\(1, 3, 2, 2\)"):
        seeding_loss(torch.rand(1, 3, 2, 2), torch.zeros(1, 3, 2, 3, dtype=torch.bool))


def test_seeding_loss_gradcheck():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 3, 3, dtype=torch.float64, generator=g, requires_grad=True)
    cues = torch.rand(2, 4, 3, 3, generator=g) > 0.6
    assert torch.autograd.gradcheck(lambda x: seeding_loss(sec_probabilities(x), cues), (logits,))


# --- expansion loss --------------------------------------------------------------------------

def _hand_probs() -> torch.Tensor:
    # (2, 3, 1, 3): label rows over 3 pixels, columns sum to 1; the same for both images
    rows = torch.tensor([[0.7, 0.2, 0.1],   # background
                         [0.2, 0.5, 0.3],   # class 1
                         [0.1, 0.3, 0.6]],  # class 2
                        dtype=torch.float64)
    return rows.reshape(1, 3, 1, 3).repeat(2, 1, 1, 1)


def test_expansion_loss_hand_computed():
    probs = _hand_probs()
    labels = torch.tensor([[1, 1, 0], [1, 0, 0]])
    # image 0: class 1 present: GWRP(0.5) of [0.5, 0.3, 0.2] = (0.5 + 0.15 + 0.05) / 1.75 = 0.4;
    #          class 2 absent: max 0.6 -> -log 0.4; background GWRP(0) = max = 0.7
    loss0 = -math.log(0.4) - math.log(0.4) - math.log(0.7)
    # image 1: no present foreground (term 0); absent {1, 2}: maxima 0.5, 0.6; background 0.7
    loss1 = 0.0 - (math.log(0.5) + math.log(0.4)) / 2 - math.log(0.7)
    got = expansion_loss(probs, labels, decay_fg=0.5, decay_bg=0.0)
    assert got.item() == pytest.approx((loss0 + loss1) / 2, rel=1e-12)


def test_expansion_loss_all_present_and_bg_decay():
    probs = _hand_probs()[:1]
    labels = torch.tensor([[1, 1, 1]])
    # present {1, 2} with d_fg = 1 (mean): G_1 = 1/3, G_2 = 1/3; no absent class; bg mean = 1/3
    expect = -(math.log(1 / 3) + math.log(1 / 3)) / 2 - math.log(1 / 3)
    assert expansion_loss(probs, labels, 1.0, 1.0).item() == pytest.approx(expect, rel=1e-12)


def test_expansion_loss_label_shape_error():
    with pytest.raises(ValueError, match="labels"):
        expansion_loss(torch.rand(2, 3, 2, 2), torch.ones(2, 4), 0.9, 0.9)


def test_expansion_loss_gradcheck():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 3, 3, dtype=torch.float64, generator=g, requires_grad=True)
    labels = torch.tensor([[1, 1, 0, 1], [1, 0, 1, 0]])
    assert torch.autograd.gradcheck(
        lambda x: expansion_loss(sec_probabilities(x), labels, decay_fg=0.7, decay_bg=0.9), (logits,))


# --- constrain loss --------------------------------------------------------------------------

def test_constrain_loss_zero_when_equal_positive_otherwise():
    probs = sec_probabilities(torch.randn(2, 4, 5, 5, dtype=torch.float64))
    assert constrain_loss(probs, probs.clone()).item() == pytest.approx(0.0, abs=1e-12)
    other = sec_probabilities(torch.randn(2, 4, 5, 5, dtype=torch.float64))
    assert constrain_loss(probs, other).item() > 0


def test_constrain_loss_hand_computed_with_zero_planes():
    # p = (0.5, 0.5) everywhere, Q = (1, 0): KL = log 2 per pixel; 0 log 0 = 0
    probs = torch.full((1, 2, 2, 3), 0.5, dtype=torch.float64)
    q = torch.zeros_like(probs)
    q[:, 0] = 1.0
    assert constrain_loss(probs, q).item() == pytest.approx(math.log(2), rel=1e-12)
    # image-wise mean: second image equal to its Q contributes 0
    probs2 = torch.cat([probs, probs])
    q2 = torch.cat([q, probs])
    assert constrain_loss(probs2, q2).item() == pytest.approx(math.log(2) / 2, rel=1e-12)


def test_constrain_loss_treats_q_as_constant():
    logits = torch.randn(1, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    q = sec_probabilities(torch.randn(1, 3, 4, 4, dtype=torch.float64)).requires_grad_(True)
    constrain_loss(sec_probabilities(logits), q).backward()
    assert q.grad is None and logits.grad is not None and logits.grad.abs().sum() > 0


def test_constrain_loss_gradcheck():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 3, 3, 3, dtype=torch.float64, generator=g, requires_grad=True)
    q = sec_probabilities(torch.randn(2, 3, 3, 3, dtype=torch.float64, generator=g))
    q[:, 2] = 0  # planes the CRF zeroed
    q = q / q.sum(1, keepdim=True)
    assert torch.autograd.gradcheck(lambda x: constrain_loss(sec_probabilities(x), q), (logits,))


def test_floor_crf_probs_hand_computed():
    # Q = (1, 0, 0): floored to (1, 1e-4, 1e-4), renormalised by 1.0002 (SEC's reference code)
    q = torch.zeros(1, 3, 1, 2, dtype=torch.float64)
    q[:, 0] = 1.0
    out = floor_crf_probs(q)
    expected = torch.tensor([1.0, 1e-4, 1e-4], dtype=torch.float64) / 1.0002
    assert torch.allclose(out[0, :, 0, 0], expected, rtol=1e-12) and torch.allclose(out[0, :, 0, 1], expected)
    # values above the floor are only renormalised; constrain loss of p = (0.5, 0.5) against it
    p = torch.full((1, 2, 1, 1), 0.5, dtype=torch.float64)
    q2 = torch.tensor([1.0, 0.0], dtype=torch.float64).view(1, 2, 1, 1)
    a, b = 1 / 1.0001, 1e-4 / 1.0001
    assert constrain_loss(p, floor_crf_probs(q2)).item() == pytest.approx(a * math.log(a / 0.5) + b * math.log(b / 0.5),
                                                                           rel=1e-12)
    with pytest.raises(ValueError, match="CRF floor"):
        floor_crf_probs(q, floor=1.0)
