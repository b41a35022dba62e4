"""ICASC losses (docs/method.md §2): target region (Eq. 4), attention separation (Eq. 3), consistency (Eq. 5),
and the ramp-up factor of the attention terms (§2.5).

All maps are max-normalised attention maps in [0, 1] of shape (N, h, w), one row per
(image, target class) pair. Each function returns one value per row, so the caller decides how
to average (multi-label: over an image's targets, then over the batch).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

EPS = 1e-8


def target_region(last_target_map: Tensor, sigma: float = 0.55, omega: float = 100.0,
                  size: tuple[int, int] | None = None, grad: bool = False) -> Tensor:
    """Eq. 4: ``T = sigmoid(ω (M^t_last − σ))``, resized bilinearly to ``size`` when given.

    ``grad=False`` (the default) detaches the input, so T is a constant mask.
    """
    if last_target_map.dim() != 3:
        raise ValueError(f"expected maps of shape (N, h, w), got {tuple(last_target_map.shape)}")
    m = last_target_map if grad else last_target_map.detach()
    region = torch.sigmoid(omega * (m - sigma))
    if size is not None and tuple(region.shape[-2:]) != tuple(size):
        region = F.interpolate(region.unsqueeze(1), size=size, mode="bilinear", align_corners=False).squeeze(1)
    return region


def _check_same_shape(*maps: Tensor) -> None:
    shapes = {tuple(m.shape) for m in maps}
    if len(shapes) != 1:
        raise ValueError(f"maps and region must have the same shape, got {sorted(shapes)}")
    if maps[0].dim() != 3:
        raise ValueError(f"expected maps of shape (N, h, w), got {tuple(maps[0].shape)}")


def attention_separation_loss(target_map: Tensor, confusing_map: Tensor, region: Tensor,
                              eps: float = EPS) -> Tensor:
    """Eq. 3: ``L_AS = 2 Σ_ij min(M^t, M^conf) · T / Σ_ij (M^t + M^conf)`` per row, in [0, 1].

    1 when the two maps are identical and lie inside the target region, 0 when they are disjoint.
    """
    _check_same_shape(target_map, confusing_map, region)
    overlap = (torch.minimum(target_map, confusing_map) * region).flatten(1).sum(1)
    total = (target_map + confusing_map).flatten(1).sum(1)
    return 2.0 * overlap / (total + eps)


def attention_consistency_loss(inner_target_map: Tensor, region: Tensor, theta: float = 0.8,
                               eps: float = EPS, hinge: bool = False) -> Tensor:
    """Eq. 5: ``L_AC = θ − Σ_ij M^{t,inner} · T / Σ_ij M^{t,inner}`` per row, in [θ − 1, θ].

    ``hinge=True`` (docs/method.md §2.4): ``max(0, θ − ...)``, in [0, θ]; a row whose inner map has
    at least θ of its mass inside the region gives 0 and no gradient.
    """
    _check_same_shape(inner_target_map, region)
    inside = (inner_target_map * region).flatten(1).sum(1)
    value = theta - inside / (inner_target_map.flatten(1).sum(1) + eps)
    return F.relu(value) if hinge else value


def attention_ramp(step: int, rampup_steps: int) -> float:
    """§2.5: the factor ``r(s) = min(1, s / N)`` on the attention terms at optimiser step ``s``.

    ``s`` counts the steps taken before this one over the whole run (0 for the first), so the
    factor is a function of the global step alone and a resumed run sees the same values.
    ``N = rampup_steps``; ``N = 0`` gives 1 from the first step (no ramp, the paper's setting).
    """
    if rampup_steps < 0 or step < 0:
        raise ValueError(f"expected step >= 0 and rampup_steps >= 0, got {step}, {rampup_steps}")
    if rampup_steps == 0 or step >= rampup_steps:
        return 1.0
    return step / rampup_steps
