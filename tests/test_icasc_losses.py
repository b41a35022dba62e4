"""ICASC losses on hand-made maps: known values at the bounds, and gradients."""

from __future__ import annotations

import math

import pytest
import torch

from classify.icasc import attention_consistency_loss, attention_separation_loss, target_region


def _blob(top, left, h=4, w=4, size=8, value=1.0):
    m = torch.zeros(1, size, size, dtype=torch.float64)
    m[0, top:top + h, left:left + w] = value
    return m


def test_target_region_is_sharp_threshold():
    m = torch.tensor([[[0.0, 0.5, 0.55, 0.6, 1.0]]])
    t = target_region(m, sigma=0.55, omega=100.0)
    assert t[0, 0, 0] < 1e-20 and t[0, 0, 1] == pytest.approx(1 / (1 + math.e**5), rel=1e-5)
    assert t[0, 0, 2] == pytest.approx(0.5) and t[0, 0, 4] == pytest.approx(1.0)
    assert target_region(_blob(0, 0), size=(16, 16)).shape == (1, 16, 16)
    m = _blob(0, 0).requires_grad_()
    assert not target_region(m).requires_grad and target_region(m, grad=True).requires_grad


def test_separation_identical_maps_inside_region_is_one():
    m = _blob(2, 2)
    region = torch.ones_like(m)
    assert attention_separation_loss(m, m, region).item() == pytest.approx(1.0)
    # identical maps, region covering exactly the map's support: still 1
    assert attention_separation_loss(m, m, (m > 0).double()).item() == pytest.approx(1.0)


def test_separation_disjoint_maps_is_zero():
    a, b = _blob(0, 0), _blob(4, 4)
    assert attention_separation_loss(a, b, torch.ones_like(a)).item() == 0.0


def test_separation_hand_computed_partial_overlap():
    a = _blob(0, 0, h=2, w=2)  # 4 pixels of 1
    b = _blob(0, 1, h=2, w=2, value=0.5)  # 4 pixels of 0.5, overlapping a in 2 pixels
    region = torch.zeros_like(a)
    region[0, 0, :] = 1.0  # only the first row counts: one overlap pixel (0,1)
    # 2 * (min = 0.5 at one pixel) / (4 * 1 + 4 * 0.5)
    assert attention_separation_loss(a, b, region).item() == pytest.approx(2 * 0.5 / 6.0)


def test_consistency_bounds():
    m = _blob(1, 1)
    inside = (m > 0).double()
    assert attention_consistency_loss(m, inside, theta=0.8).item() == pytest.approx(0.8 - 1.0)
    assert attention_consistency_loss(m, 1 - inside, theta=0.8).item() == pytest.approx(0.8)
    half = inside.clone()
    half[0, 1:3, :] = 0  # half of the map's mass inside
    assert attention_consistency_loss(m, half, theta=0.8).item() == pytest.approx(0.8 - 0.5)


def test_losses_are_per_row_and_gradients_check():
    torch.manual_seed(0)
    t = torch.rand(3, 5, 5, dtype=torch.float64, requires_grad=True)
    c = torch.rand(3, 5, 5, dtype=torch.float64, requires_grad=True)
    r = torch.rand(3, 5, 5, dtype=torch.float64)
    assert attention_separation_loss(t, c, r).shape == (3,)
    assert torch.autograd.gradcheck(lambda x, y: attention_separation_loss(x, y, r), (t, c))
    assert torch.autograd.gradcheck(lambda x: attention_consistency_loss(x, r), (t,))
    assert torch.autograd.gradcheck(lambda x: target_region(x, sigma=0.5, omega=4.0, grad=True), (t,))


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="same shape"):
        attention_separation_loss(torch.zeros(1, 4, 4), torch.zeros(1, 4, 4), torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match=r"\(N, h, w\)"):
        target_region(torch.zeros(4, 4))
