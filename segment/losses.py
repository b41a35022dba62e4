"""SEC losses: seeding, expansion with global weighted rank pooling, constrain-to-boundary (docs/method.md §4).

Pure torch functions. Conventions: ``probs`` is a (B, L, h, w) tensor of class probabilities on
the segmenter's output grid, made by :func:`sec_probabilities` (softmax, + ``PROB_EPS``,
renormalised), so every probability lies strictly inside (0, 1) and every ``log`` below is
finite. Label 0 is background. Every loss returns a scalar averaged over the batch (sum over
images / B). Half-precision inputs are computed in float32 (the logs of ``1 - max p`` and of
probabilities near ``PROB_EPS`` need it under AMP); float64 stays float64 (gradcheck).
"""

from __future__ import annotations

import torch
from torch import Tensor

PROB_EPS = 1e-4
CRF_FLOOR = 1e-4  # SEC's reference code floors the training-time CRF output at this before renormalising


def _working_dtype(t: Tensor) -> Tensor:
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _check_probs(name: str, probs: Tensor) -> None:
    if probs.ndim != 4:
        raise ValueError(f"{name} must be (B, L, h, w), got shape {tuple(probs.shape)}")


def sec_probabilities(logits: Tensor) -> Tensor:
    """docs/method.md §4 "Probabilities": softmax over the L label channels of (B, L, h, w) logits, then add
    ``PROB_EPS`` (1e-4) and renormalise, so that ``p ∈ (0, 1)`` and the logs of the losses stay finite."""
    _check_probs("logits", logits)
    p = torch.softmax(_working_dtype(logits), dim=1) + PROB_EPS
    return p / p.sum(dim=1, keepdim=True)


def rescaled_decay(decay: float, size: tuple[int, int], reference: int = 41) -> float:
    """docs/method.md §4: GWRP decay for an (h, w) output grid, ``d' = d^(reference² / (h·w))``.

    The decay ``d`` is tuned for a ``reference × reference`` grid (41×41 for SEC's 321 px input).
    With ``d'`` the share of the GWRP weight carried by the top fraction ``f`` of the pixels,
    ``(1 − d'^(f·n)) / (1 − d'^n)`` with ``n = h·w``, is the same as ``d`` gives on the reference grid.
    """
    h, w = (int(s) for s in size)
    if h <= 0 or w <= 0 or reference <= 0:
        raise ValueError(f"grid size {size} and reference {reference} must be positive")
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"GWRP decay must lie in [0, 1], got {decay}")
    return float(decay ** (reference * reference / (h * w)))


def gwrp(values: Tensor, decay: float) -> Tensor:
    """Global weighted rank pooling over the last axis (docs/method.md §4): ``Σ_j d^(j−1) v_(j) / Σ_j d^(j−1)``
    with ``v_(1) ≥ v_(2) ≥ …`` the values sorted in descending order.

    ``decay = 0`` gives the max, ``decay = 1`` the mean. For ``d < 1`` and many values the weights
    ``d^(j−1)`` underflow to 0 (the first one is always 1, so the normaliser never vanishes): those
    ranks simply drop out. The weights are computed in float64 and cast to the values' dtype.
    Differentiable with respect to ``values`` (the gradient flows through the sort to the ranked
    elements). ``values``: (..., n), n ≥ 1; returns (...).
    """
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"GWRP decay must lie in [0, 1], got {decay}")
    n = values.shape[-1]
    if n == 0:
        raise ValueError(f"gwrp needs at least one value on the last axis, got shape {tuple(values.shape)}")
    ranks = torch.arange(n, dtype=torch.float64, device=values.device)
    weights = torch.pow(torch.tensor(float(decay), dtype=torch.float64, device=values.device), ranks)  # 0^0 = 1
    weights = (weights / weights.sum()).to(values.dtype)
    ranked = torch.sort(values, dim=-1, descending=True).values
    return (ranked * weights).sum(dim=-1)


def seeding_loss(probs: Tensor, cues: Tensor) -> Tensor:
    """docs/method.md §4 seeding loss: per image ``−(1/Σ_c|S_c|) Σ_c Σ_{u∈S_c} log p^c_u``, averaged over the batch.

    ``cues``: (B, L, h, w) bool, multi-hot (a pixel may carry several labels, or none). An image
    with no cue pixel at all contributes 0 and *is counted* in the batch mean (the sum is divided
    by B, the batch size, as for the other two losses), so its weight does not shift onto the
    other images.
    """
    _check_probs("probs", probs)
    if cues.shape != probs.shape:
        raise ValueError(f"cues have shape {tuple(cues.shape)} but probs {tuple(probs.shape)}; expected the same")
    probs = _working_dtype(probs)
    mask = cues.to(dtype=torch.bool)
    log_p = torch.where(mask, torch.log(probs), torch.zeros((), dtype=probs.dtype, device=probs.device))
    per_image = log_p.flatten(1).sum(1)
    counts = mask.flatten(1).sum(1).to(probs.dtype)
    per_image = -per_image / counts.clamp_min(1.0)
    return per_image.sum() / probs.shape[0]


def expansion_loss(probs: Tensor, labels: Tensor, decay_fg: float, decay_bg: float) -> Tensor:
    """docs/method.md §4 expansion loss with GWRP, averaged over the batch.

    Per image: ``−mean_{c ∈ present fg} log G_c − mean_{c ∈ absent} log(1 − max_u p^c_u) − log G_bg``,
    ``G_c = gwrp(p^c, decay_fg)`` and ``G_bg = gwrp(p^0, decay_bg)``. ``labels``: (B, L) multi-hot;
    column 0 (background) is always present and only enters the ``G_bg`` term; "absent" means the
    foreground labels 1..L−1 marked 0. A mean over an empty set (no present foreground class, or
    every class present) is 0. The decays are used as given: rescale them to the grid with
    :func:`rescaled_decay`.
    """
    _check_probs("probs", probs)
    b, num_labels = probs.shape[:2]
    if tuple(labels.shape) != (b, num_labels):
        raise ValueError(f"labels have shape {tuple(labels.shape)}; expected {(b, num_labels)} for probs "
                         f"{tuple(probs.shape)}")
    probs = _working_dtype(probs)
    flat = probs.flatten(2)  # (B, L, n)
    fg = flat[:, 1:]
    present = (labels[:, 1:] > 0).to(probs.dtype)
    absent = 1.0 - present
    g_fg = gwrp(fg, decay_fg)  # (B, L-1)
    g_bg = gwrp(flat[:, 0], decay_bg)  # (B,)
    max_fg = fg.amax(dim=2)
    zero = torch.zeros((), dtype=probs.dtype, device=probs.device)
    log_g = torch.where(present > 0, torch.log(g_fg), zero)
    log_not_max = torch.where(absent > 0, torch.log1p(-max_fg), zero)
    term_present = -log_g.sum(1) / present.sum(1).clamp_min(1.0)
    term_absent = -log_not_max.sum(1) / absent.sum(1).clamp_min(1.0)
    term_bg = -torch.log(g_bg)
    return (term_present + term_absent + term_bg).sum() / b


def constrain_loss(probs: Tensor, crf_probs: Tensor) -> Tensor:
    """docs/method.md §4 constrain-to-boundary loss: ``(1/n) Σ_u Σ_c Q^c_u log(Q^c_u / p^c_u)``, averaged over the batch.

    ``Q = crf_probs`` (the CRF of the image at the output grid and ``p``) is a constant: it is
    detached, so the gradient flows through ``p`` only. ``0 · log 0 = 0`` (the CRF sets the planes of
    labels absent from the image to 0). ``n = h·w``. Zero when ``Q == p``; positive otherwise
    (a KL divergence per pixel, when both sum to 1 over the labels).
    """
    _check_probs("probs", probs)
    if crf_probs.shape != probs.shape:
        raise ValueError(f"crf_probs have shape {tuple(crf_probs.shape)} but probs {tuple(probs.shape)}; "
                         "expected the same")
    probs = _working_dtype(probs)
    q = crf_probs.detach().to(device=probs.device, dtype=probs.dtype)
    kl = torch.xlogy(q, q) - torch.xlogy(q, probs)
    b, _, h, w = probs.shape
    return kl.sum() / (b * h * w)


def floor_crf_probs(crf_probs: Tensor, floor: float = CRF_FLOOR) -> Tensor:
    """docs/method.md §5: SEC's training-time CRF output ``Q`` floored at ``floor`` (1e-4) and
    renormalised to sum to 1 over the L labels of each pixel, as SEC's reference code does before
    the constrain loss. ``crf_probs``: (B, L, h, w)."""
    _check_probs("crf_probs", crf_probs)
    if not 0.0 <= floor < 1.0:
        raise ValueError(f"CRF floor must lie in [0, 1), got {floor}")
    q = crf_probs.clamp_min(floor)
    return q / q.sum(dim=1, keepdim=True)
