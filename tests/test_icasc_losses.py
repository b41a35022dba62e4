"""ICASC losses on hand-made maps: known values at the bounds, and gradients; the hinge on L_AC, the
weights and the ramp-up of the attention terms (docs/method.md §2.4-2.5)."""

from __future__ import annotations

import math

import pytest
import torch

from classify.icasc import attention_consistency_loss, attention_ramp, attention_separation_loss, target_region
from classify.train import IcascTerms, icasc_total
from sharpen_core.config import ClassifyConfig


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


# --------------------------------------------------------------------------- hinge on L_AC (§2.4)
def test_hinge_values():
    m = _blob(1, 1)
    inside = (m > 0).double()
    half = inside.clone()
    half[0, 1:3, :] = 0  # half of the map's mass inside
    # all mass inside: θ − 1 = −0.2 unclipped, 0 with the hinge
    assert attention_consistency_loss(m, inside, theta=0.8, hinge=True).item() == 0.0
    # below θ the hinge changes nothing: 0.8 − 0.5 and 0.8 − 0
    assert attention_consistency_loss(m, half, theta=0.8, hinge=True).item() == pytest.approx(0.3)
    assert attention_consistency_loss(m, 1 - inside, theta=0.8, hinge=True).item() == pytest.approx(0.8)
    # rows are independent: one above θ (0), one below (0.3)
    both = attention_consistency_loss(torch.cat([m, m]), torch.cat([inside, half]), theta=0.8, hinge=True)
    assert both.tolist() == pytest.approx([0.0, 0.3])


def test_hinge_gradient_is_zero_above_theta():
    m = _blob(1, 1).requires_grad_()
    region = torch.zeros_like(m)
    region[0, 1:5, 1:4] = 1.0  # 3/4 of the mass inside: θ = 0.5 is met, θ = 0.9 is not
    attention_consistency_loss(m, region, theta=0.5, hinge=True).sum().backward()
    assert torch.count_nonzero(m.grad) == 0
    m.grad = None
    attention_consistency_loss(m, region, theta=0.9, hinge=True).sum().backward()
    assert torch.count_nonzero(m.grad) > 0


def test_hinge_gradient_below_theta_matches_finite_differences():
    torch.manual_seed(1)
    t = torch.rand(3, 5, 5, dtype=torch.float64)
    r = (torch.rand(3, 5, 5, dtype=torch.float64) > 0.7).double()  # ~30 % of the cells: fraction well below 0.9
    assert bool((attention_consistency_loss(t, r, theta=0.9) > 0.05).all())
    assert torch.autograd.gradcheck(lambda x: attention_consistency_loss(x, r, theta=0.9, hinge=True),
                                    (t.requires_grad_(),))
    # one entry by hand: central difference of the summed loss
    t = t.detach()
    t.requires_grad_()
    attention_consistency_loss(t, r, theta=0.9, hinge=True).sum().backward()
    h = 1e-6
    plus, minus = t.detach().clone(), t.detach().clone()
    plus[1, 2, 3] += h
    minus[1, 2, 3] -= h
    fd = (attention_consistency_loss(plus, r, 0.9, hinge=True).sum()
          - attention_consistency_loss(minus, r, 0.9, hinge=True).sum()) / (2 * h)
    assert t.grad[1, 2, 3].item() == pytest.approx(fd.item(), rel=1e-6)
    # and the closed form: d/dM_k (θ − Σ M T / Σ M) = −(T_k − f) / Σ M, f the fraction inside
    m = t.detach()[1]
    f = (m * r[1]).sum() / m.sum()
    assert t.grad[1, 2, 3].item() == pytest.approx((-(r[1, 2, 3] - f) / m.sum()).item(), rel=1e-6)


def test_no_hinge_is_the_old_formula_exactly():
    torch.manual_seed(2)
    t = torch.rand(4, 6, 6)
    r = torch.rand(4, 6, 6)
    old = 0.8 - (t * r).flatten(1).sum(1) / (t.flatten(1).sum(1) + 1e-8)  # Eq. 5 as it was computed before
    assert torch.equal(attention_consistency_loss(t, r, 0.8), old)
    assert torch.equal(attention_consistency_loss(t, r, 0.8, hinge=False), old)


# --------------------------------------------------------------------------- weights and ramp (§2.5)
def _terms(requires_grad=False):
    # dyadic values: every product and sum below is exact in float32
    values = [torch.tensor(v, requires_grad=requires_grad) for v in (0.5, 0.25, 0.125, -0.0625)]
    return values[0], IcascTerms(as_inner=values[1], as_last=values[2], ac=values[3])


def test_weights_scale_each_term_exactly():
    cls, terms = _terms(requires_grad=True)
    c = ClassifyConfig(weight_as_inner=2.0, weight_as_last=0.5, weight_ac=4.0)
    loss = icasc_total(cls, terms, c)
    assert loss.item() == 0.5 + 2.0 * 0.25 + 0.5 * 0.125 + 4.0 * -0.0625
    loss.backward()
    assert [x.grad.item() for x in (cls, terms.as_inner, terms.as_last, terms.ac)] == [1.0, 2.0, 0.5, 4.0]
    # a zero weight drops its term: with all three zero, L = L_cls
    assert icasc_total(cls, terms, ClassifyConfig(weight_as_inner=0.0, weight_as_last=0.0, weight_ac=0.0)).item() == 0.5


def test_ramp_multiplies_every_attention_weight():
    cls, terms = _terms(requires_grad=True)
    c = ClassifyConfig(weight_as_inner=2.0, weight_as_last=0.5, weight_ac=4.0)
    loss = icasc_total(cls, terms, c, ramp=0.25)
    assert loss.item() == 0.5 + 0.25 * (2.0 * 0.25 + 0.5 * 0.125 + 4.0 * -0.0625)
    loss.backward()
    assert [x.grad.item() for x in (cls, terms.as_inner, terms.as_last, terms.ac)] == [1.0, 0.5, 0.125, 1.0]
    assert icasc_total(cls, terms, c, ramp=0.0).item() == 0.5


def test_unit_weights_without_ramp_reproduce_the_old_loss_exactly():
    torch.manual_seed(3)
    cls, a, b, ac = torch.rand(4)  # arbitrary float32 values: the sum must agree bit for bit
    c = ClassifyConfig()
    old = cls + c.weight_as_inner * a + c.weight_as_last * b + c.weight_ac * ac  # Eq. 6 as it was computed before
    new = icasc_total(cls, IcascTerms(as_inner=a, as_last=b, ac=ac), c, ramp=attention_ramp(0, 0))
    assert torch.equal(new, old)


def test_ramp_values():
    n = 100
    assert attention_ramp(0, n) == 0.0  # the first step: no attention terms yet
    assert attention_ramp(25, n) == 0.25
    assert attention_ramp(50, n) == 0.5  # mid
    assert attention_ramp(99, n) == 0.99
    assert attention_ramp(100, n) == 1.0 and attention_ramp(10_000, n) == 1.0  # the end and after
    assert all(attention_ramp(s, 0) == 1.0 for s in (0, 1, 50))  # N = 0: no ramp
    with pytest.raises(ValueError):
        attention_ramp(0, -1)
