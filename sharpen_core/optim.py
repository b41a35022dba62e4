"""Optimisers and learning-rate schedules of the training stages (docs/method.md §3 and §4).

One module for both stages: SGD (the paper's and SEC's; momentum, optional Nesterov) or AdamW,
and a learning-rate multiplier per optimiser step, ``lr(s) = base_lr · factor(s)``:

- ``cosine``: one cycle of cosine annealing to 0, ``0.5 (1 + cos(π s / T))``;
- ``poly``: ``(1 − s / T)^power`` (DeepLab);
- ``step``: ``gamma^k``, k = the number of milestones (absolute steps) at or before ``s``;
- ``onecycle``: a cosine rise from ``warmup_factor`` to 1 over the warm-up steps (30 % of the
  run when ``warmup_steps`` is 0), then a cosine fall to 0 over the rest.

A linear warm-up (``warmup_steps`` > 0, from ``warmup_factor`` to 1) precedes ``cosine``, ``poly``
and ``step``; ``cosine`` and ``poly`` then run over the ``T − W`` remaining steps, ``step`` keeps its
absolute milestones. Without warm-up every curve is exactly the one the stages used before.
The multiplier is a pure function of the step, applied through ``LambdaLR``, so the scheduler's
state is its step count and a resumed run (state dict in the checkpoint) repeats the same rates.
Imports only torch and the standard library (the floor package's rule).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

import torch
from sharpen_core.errors import ConfigError

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "poly", "step", "onecycle")
ONECYCLE_RISE = 0.3  # share of a one-cycle run spent rising when warmup_steps is 0


@dataclass(frozen=True)
class Schedule:
    """A learning-rate multiplier over ``total_steps`` optimiser steps (see the module docstring)."""

    name: str
    total_steps: int
    warmup_steps: int = 0
    warmup_factor: float = 0.1
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    power: float = 0.9

    def __post_init__(self) -> None:
        if self.name not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.name!r}; expected one of: {', '.join(SCHEDULES)}")
        if self.warmup_steps < 0 or not 0.0 <= self.warmup_factor <= 1.0:
            raise ValueError(f"warm-up of {self.warmup_steps} steps from factor {self.warmup_factor}: expected "
                             "warmup_steps >= 0 and 0 <= warmup_factor <= 1")

    def rise_steps(self) -> int:
        """The warm-up (or one-cycle rising) length in steps."""
        if self.name == "onecycle" and self.warmup_steps == 0:
            return int(round(ONECYCLE_RISE * max(1, self.total_steps)))
        return self.warmup_steps

    def factor(self, step: int) -> float:
        """The multiplier of the base learning rate at optimiser step ``step`` (0-based)."""
        w = self.rise_steps()
        if step < w:
            t = step / w
            if self.name == "onecycle":
                return self.warmup_factor + (1.0 - self.warmup_factor) * 0.5 * (1.0 - math.cos(math.pi * t))
            return self.warmup_factor + (1.0 - self.warmup_factor) * t
        if self.name == "step":
            return self.gamma ** sum(1 for m in self.milestones if step >= m)
        total = max(1, self.total_steps - w)
        s = min(step - w, total)
        if self.name in ("cosine", "onecycle"):
            return 0.5 * (1.0 + math.cos(math.pi * s / total))
        return max(0.0, 1.0 - s / total) ** self.power  # poly


def make_scheduler(optimizer: torch.optim.Optimizer, schedule: Schedule) -> torch.optim.lr_scheduler.LambdaLR:
    """``LambdaLR`` applying ``schedule.factor`` to every parameter group's base rate."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule.factor)


def _read_groups(params: Iterable[Any]) -> list[Any]:
    """``params`` as a list whose parameter-group dicts hold lists (generators read once, a lone tensor listed)."""
    return [dict(g, params=[g["params"]] if isinstance(g["params"], torch.Tensor) else list(g["params"]))
            if isinstance(g, dict) else g for g in params]


def _tensors(params: Iterable[Any]) -> list[torch.Tensor]:
    return [t for g in _read_groups(params) for t in (g["params"] if isinstance(g, dict) else [g])]


def fused_adamw_supported(params: Iterable[Any]) -> bool:
    """Whether torch's fused AdamW kernel takes these parameters: one kernel per step instead of a
    handful of ops per tensor, the same update to float rounding (measured by
    ``benchmarks/optimizer_step.py`` on 2 cores: a segmenter step 0.87x, a classifier step 0.98x). It needs
    torch >= 2.4 for CPU tensors, floating-point parameters, all on one device type; else False
    and the stages use the default (``foreach``) implementation."""
    tensors = [t for t in _tensors(params) if isinstance(t, torch.Tensor)]
    if not tensors or len({t.device.type for t in tensors}) != 1 or not all(t.is_floating_point() for t in tensors):
        return False
    try:
        torch.optim.AdamW([torch.zeros(1, device=tensors[0].device, dtype=tensors[0].dtype, requires_grad=True)],
                          fused=True)
    except (RuntimeError, TypeError, ValueError):
        return False
    return True


def build_optimizer(name: str, params: Iterable[Any], lr: float, weight_decay: float, momentum: float = 0.9,
                    nesterov: bool = False, betas: tuple[float, float] | list[float] = (0.9, 0.999)
                    ) -> torch.optim.Optimizer:
    """SGD (momentum, optional Nesterov) or AdamW (decoupled weight decay) over ``params``
    (tensors or parameter-group dicts, whose own ``lr``/``weight_decay`` take precedence); AdamW
    is torch's fused kernel where :func:`fused_adamw_supported` says it can be."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay,
                               nesterov=nesterov and momentum > 0)
    if name == "adamw":
        if len(betas) != 2:
            raise ValueError(f"AdamW betas must be two numbers, got {list(betas)}")
        params = _read_groups(params)
        kwargs = dict(lr=lr, betas=(float(betas[0]), float(betas[1])), weight_decay=weight_decay)
        if fused_adamw_supported(params):
            return torch.optim.AdamW(params, fused=True, **kwargs)
        return torch.optim.AdamW(params, **kwargs)
    raise ValueError(f"unknown optimizer {name!r}; expected one of: {', '.join(OPTIMIZERS)}")


def optimizer_from_config(section: Any, params: Iterable[Any], stage: str) -> torch.optim.Optimizer:
    """:func:`build_optimizer` from a stage's config section (``optimizer``, ``lr``, ``momentum``,
    ``nesterov``, ``betas``, ``weight_decay``); errors name ``stage.optimizer``."""
    try:
        return build_optimizer(section.optimizer, params, section.lr, section.weight_decay, section.momentum,
                               section.nesterov, section.betas)
    except ValueError as e:
        raise ConfigError(f"{stage}.optimizer: {e}") from None
