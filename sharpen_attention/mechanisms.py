"""The attention mechanisms (docs/method.md §1.2): one registry entry each, read by every place that names one.

An entry says where the mechanism comes from (its ``kind``), how it weighs the feature map (one line,
the leaderboard's "kind" column) and how it is computed: a native mechanism by its channel-weight
function (formula in the function's docstring), a pytorch-grad-cam one by that library's class,
run through :mod:`sharpen_attention.gradcam_adapter`. The extractor's dispatch
(:class:`sharpen_attention.attention.AttentionExtractor`), the check of ``--mechanism`` and of
``run.cue_sets`` (:func:`check_mechanism`) and the leaderboard all read :data:`REGISTRY`, so adding
a mechanism is adding an entry here.

Native weight functions share one signature, ``weights(acts, grads, eps) -> α``: ``acts`` (B, K, H, W)
(or broadcastable), ``grads`` ``g^c = ∂y^c/∂A`` (B, C, K, H, W) → ``α^c_k`` (B, C, K); the map is then
``M^c = ReLU(Σ_k α^c_k A_k)`` (docs/method.md §1.2).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from sharpen_core.errors import UserError

NATIVE = "native"
"""Computed here: differentiable, every requested class from one forward pass."""
GRAD_CAM = "pytorch-grad-cam"
"""Computed by pytorch-grad-cam: one pass per class, not differentiable (cue extraction only)."""
KINDS = (NATIVE, GRAD_CAM)

INSTALL_HINT = "pip install -e '.[cams]'"
"""pytorch-grad-cam (PyPI ``grad-cam``) is an optional extra of this project."""

ChannelWeights = Callable[[Tensor, Tensor, float], Tensor]


class MechanismError(UserError, ValueError):
    """An unknown mechanism name, or a pytorch-grad-cam one without pytorch-grad-cam installed."""


# --------------------------------------------------------------------------- native channel weights

def gradcam_weights(acts: Tensor, grads: Tensor, eps: float = 0.0) -> Tensor:
    """Grad-CAM (paper Eq. 1, docs/method.md §1.2): ``α^c_k = (1/Z) Σ_ij g^c_kij``, the mean gradient.

    (..., K, H, W) → (..., K); ``acts`` and ``eps`` are not used.
    """
    return grads.mean(dim=(-2, -1))


def channel_weights(acts: Tensor, grads: Tensor, eps: float = 0.0) -> Tensor:
    """Channel-weighted attention (paper Eq. 2, docs/method.md §1.2): ``α^c_k = (1/Z) Σ_ij ReLU(g^c_kij)``.

    The mean of the positive gradients only; (..., K, H, W) → (..., K); ``acts`` and ``eps`` are not used.
    """
    return grads.relu().mean(dim=(-2, -1))


def gradcampp_weights(acts: Tensor, grads: Tensor, eps: float = 0.0) -> Tensor:
    """Grad-CAM++ (docs/method.md §1.2): ``α^c_k = Σ_ij a^c_kij ReLU(g^c_kij)``, ``a = g² / (2g² + Σ_ab A_kab g³)``.

    ``acts`` (B, K, H, W) broadcasts against ``grads`` (B, C, K, H, W) (or has its shape); returns
    (B, C, K). ``a`` is 0 where ``g = 0`` (docs/method.md §1). With ``eps = 0`` the ratio is evaluated as
    ``1 / (2 + Σ A · g)`` for ``g > 0`` (equal, and safe from underflow of ``g³``); ``eps > 0`` adds
    ``eps`` to the denominator as pytorch-grad-cam does (it uses 1e-6).
    """
    if acts.dim() == grads.dim() - 1:
        acts = acts.unsqueeze(1)
    sum_acts = acts.sum(dim=(-2, -1), keepdim=True)
    if eps == 0.0:
        positive = grads > 0
        denom = 2.0 + sum_acts * grads
        valid = positive & (denom != 0)
        safe = torch.where(valid, denom, torch.ones_like(denom))
        return torch.where(valid, grads / safe, torch.zeros_like(grads)).sum(dim=(-2, -1))
    g2 = grads * grads
    a = g2 / (2.0 * g2 + sum_acts * g2 * grads + eps)
    a = torch.where(grads != 0, a, torch.zeros_like(a))
    return (a * grads.relu()).sum(dim=(-2, -1))


LINEARITY_QUANTILES: tuple[tuple[str, float], ...] = (("median", 0.5), ("p90", 0.9), ("p99", 0.99))


def gradcampp_linearity_terms(acts: Tensor, grads: Tensor) -> Tensor:
    """``|g^c_kij · Σ_ab A_kab| / 2`` at every entry with ``g^c_kij > 0`` (docs/method.md §6.4), as a 1-D tensor.

    Grad-CAM++'s weight ``Σ_ij g / (2 + g·ΣA)`` (:func:`gradcampp_weights`, over ``g > 0``) is
    ``Σ_ij (g/2) / (1 + t)`` with ``t = g·ΣA/2``: while every ``|t| ≪ 1`` it is the channel-weighted
    weight's ``Σ_ij ReLU(g)`` halved (to within a factor in ``[1/(1 + max t), 1/(1 − max |t|)]``), and the
    max-normalised maps of the two mechanisms coincide. ``acts`` (B, K, H, W) broadcasts against
    ``grads`` (B, C, K, H, W) as in :func:`gradcampp_weights`.
    """
    if acts.dim() == grads.dim() - 1:
        acts = acts.unsqueeze(1)
    sum_acts = acts.sum(dim=(-2, -1), keepdim=True)
    t = (grads * sum_acts).abs() / 2.0
    return t[(grads > 0).expand_as(t)].reshape(-1)


def linearity_summary(terms: Tensor, maximum: float | None = None, count: int | None = None
                      ) -> dict[str, float | int | None]:
    """``{"median", "p90", "p99", "max", "entries"}`` of the values ``terms`` (1-D; quantiles by linear
    interpolation between order statistics, as ``numpy.percentile``); all None without values.

    ``maximum`` and ``count`` override the max and the number of entries (when ``terms`` is a subsample
    of a larger set whose max and size are known).
    """
    values = terms.detach().reshape(-1).double().cpu()
    n = int(values.numel())
    if n == 0:
        return {**{name: None for name, _ in LINEARITY_QUANTILES}, "max": maximum, "entries": count or 0}
    values, _ = values.sort()
    out: dict[str, float | int | None] = {}
    for name, q in LINEARITY_QUANTILES:
        pos = q * (n - 1)
        lo = int(pos)
        hi = min(lo + 1, n - 1)
        out[name] = float(values[lo] + (pos - lo) * (values[hi] - values[lo]))
    out["max"] = float(values[-1]) if maximum is None else float(maximum)
    out["entries"] = n if count is None else int(count)
    return out


def gradcampp_linearity(acts: Tensor, grads: Tensor) -> dict[str, float | int | None]:
    """The distribution of ``|g·ΣA|/2`` over the positive-gradient entries (:func:`gradcampp_linearity_terms`):
    median, p90, p99, max and the number of entries. A median well under 1 means Grad-CAM++'s maps are
    the channel-weighted ones (docs/method.md §6.4)."""
    return linearity_summary(gradcampp_linearity_terms(acts, grads))


# --------------------------------------------------------------------------- the registry

@dataclass(frozen=True)
class Mechanism:
    """One attention mechanism: its ``name`` (``--mechanism``, ``run.cue_sets``), its ``kind`` (one of ``KINDS``),
    how it ``weighs`` the feature map (one line), and either its channel-weight function ``weights``
    (native) or the pytorch-grad-cam class name ``cam_class``."""

    name: str
    kind: str
    weighs: str
    weights: ChannelWeights | None = None
    cam_class: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"mechanism {self.name!r}: kind {self.kind!r}; expected one of {KINDS}")
        if (self.weights is None) != (self.kind == GRAD_CAM) or (self.cam_class is None) != (self.kind == NATIVE):
            raise ValueError(f"mechanism {self.name!r}: a native mechanism has weights, a {GRAD_CAM} one a cam_class")

    @property
    def native(self) -> bool:
        """Whether it is computed here (differentiable, all classes from one pass)."""
        return self.kind == NATIVE

    @property
    def description(self) -> str:
        """``"<kind>; <how it weighs>"``: the leaderboard's "kind" column."""
        return f"{self.kind}; {self.weighs}"


REGISTRY: dict[str, Mechanism] = {m.name: m for m in (
    Mechanism("gradcam", NATIVE, "channel weight = mean gradient (Eq. 1)", weights=gradcam_weights),
    Mechanism("gradcampp", NATIVE, "channel weight = positive gradients, second-order weighted",
              weights=gradcampp_weights),
    Mechanism("channel", NATIVE, "channel weight = mean positive gradient (Eq. 2, ICASC)", weights=channel_weights),
    # pytorch-grad-cam's: (name, its class, how it weighs the feature map); their formulas are that library's
    *(Mechanism(name, GRAD_CAM, weighs, cam_class=cam_class) for name, cam_class, weighs in (
        ("scorecam", "ScoreCAM", "gradient-free: class score of the input masked by each channel"),
        ("layercam", "LayerCAM", "element-wise: ReLU(gradient) × activation"),
        ("xgradcam", "XGradCAM", "channel weight = Σ gradient × activation / Σ activation"),
        ("eigencam", "EigenCAM", "gradient-free, class-agnostic: first principal component of the activations"),
        ("eigengradcam", "EigenGradCAM", "first principal component of gradient × activation"),
        ("hirescam", "HiResCAM", "element-wise: gradient × activation"),
        ("ablationcam", "AblationCAM", "gradient-free: score drop when a channel is zeroed"),
        ("gradcamelementwise", "GradCAMElementWise", "element-wise: ReLU(gradient × activation)"),
    )),
)}
"""Every mechanism by name, native ones first (the order of listings)."""

MECHANISMS: tuple[str, ...] = tuple(n for n, m in REGISTRY.items() if m.native)
"""The native mechanisms' names: differentiable, all classes in one pass."""


def names(kind: str | None = None) -> list[str]:
    """The registered names (of one ``kind``), in registry order."""
    return [n for n, m in REGISTRY.items() if kind is None or m.kind == kind]


def get_mechanism(name: str) -> Mechanism:
    """The registry entry of ``name``; a :class:`MechanismError` listing the known ones if there is none."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise MechanismError(f"unknown mechanism {name!r}; expected one of: {', '.join(names(NATIVE))} (native) "
                             f"or {', '.join(names(GRAD_CAM))} ({GRAD_CAM})") from None


def gradcam_available() -> bool:
    """Whether pytorch-grad-cam can be imported (its mechanisms need it)."""
    try:
        import pytorch_grad_cam  # noqa: F401
    except ImportError:
        return False
    return True


def check_mechanism(name: str) -> str:
    """``name`` when it is registered and can run here; else a :class:`MechanismError` saying why."""
    if not get_mechanism(name).native and not gradcam_available():
        raise MechanismError(f"mechanism {name!r} runs through {GRAD_CAM}, which is not installed: {INSTALL_HINT}")
    return name
