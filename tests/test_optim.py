"""sharpen_core/optim.py: known-answer learning-rate curves, the optimisers' first steps, and
scheduler state that resumes exactly."""

from __future__ import annotations

import math

import pytest
import torch

from sharpen_core.optim import Schedule, build_optimizer, make_scheduler, optimizer_from_config
from sharpen_core.config import Config


def curve(schedule: Schedule, n: int | None = None) -> list[float]:
    return [schedule.factor(s) for s in range((schedule.total_steps if n is None else n) + 1)]


def test_cosine_and_poly_without_warmup():
    assert curve(Schedule("cosine", 4)) == pytest.approx([1.0, 0.5 + 0.5 * math.cos(math.pi / 4), 0.5,
                                                          0.5 - 0.5 * math.cos(math.pi / 4), 0.0])
    assert curve(Schedule("poly", 4, power=1.0)) == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])
    assert curve(Schedule("poly", 4, power=2.0)) == pytest.approx([1.0, 0.5625, 0.25, 0.0625, 0.0])
    assert Schedule("cosine", 4).factor(9) == pytest.approx(0.0)  # stays at the end value past the run


def test_step_milestones_are_absolute_steps():
    s = Schedule("step", 10, milestones=(3, 6), gamma=0.5)
    assert curve(s) == pytest.approx([1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.25, 0.25])
    # warm-up before the first milestone: linear from 0.2, milestones unchanged
    s = Schedule("step", 10, warmup_steps=2, warmup_factor=0.2, milestones=(3, 6), gamma=0.5)
    assert curve(s, 7) == pytest.approx([0.2, 0.6, 1, 0.5, 0.5, 0.5, 0.25, 0.25])


def test_linear_warmup_then_cosine_over_the_remaining_steps():
    s = Schedule("cosine", 12, warmup_steps=4, warmup_factor=0.2)
    assert curve(s) == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0] + [0.5 + 0.5 * math.cos(math.pi * k / 8)
                                                                  for k in range(1, 9)])
    assert s.factor(8) == pytest.approx(0.5)


def test_onecycle_rises_by_cosine_then_falls_to_zero():
    s = Schedule("onecycle", 10, warmup_factor=0.04)  # rises over round(0.3 * 10) = 3 steps
    assert s.rise_steps() == 3
    rise = [0.04 + 0.96 * 0.5 * (1 - math.cos(math.pi * k / 3)) for k in range(3)]
    fall = [0.5 * (1 + math.cos(math.pi * k / 7)) for k in range(8)]
    assert curve(s) == pytest.approx(rise + fall)
    assert max(curve(s)) == 1.0 and curve(s)[-1] == pytest.approx(0.0)
    assert Schedule("onecycle", 10, warmup_steps=5).rise_steps() == 5


def test_bad_schedule_and_optimizer_names():
    with pytest.raises(ValueError, match="unknown schedule 'linear'"):
        Schedule("linear", 10)
    with pytest.raises(ValueError, match="warmup_factor"):
        Schedule("cosine", 10, warmup_factor=1.5)
    cfg = Config()
    cfg.segment.optimizer = "adam"
    with pytest.raises(ValueError, match="segment.optimizer: unknown optimizer 'adam'"):
        optimizer_from_config(cfg.segment, [torch.nn.Parameter(torch.zeros(1))], "segment")


def test_first_steps_of_sgd_and_adamw_known_answers():
    # SGD, momentum 0.9, wd 0.1: g' = g + wd·p = 0.5 + 0.1 = 0.6; p = 1 − 0.1·0.6 = 0.94
    p = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    opt = build_optimizer("sgd", [p], lr=0.1, weight_decay=0.1, momentum=0.9)
    p.grad = torch.tensor([0.5], dtype=torch.float64)
    opt.step()
    assert p.item() == pytest.approx(0.94, rel=1e-12)
    # Nesterov: the step uses g' + m·buf = 0.6 + 0.9·0.6 = 1.14 on the first step
    q = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    opt = build_optimizer("sgd", [q], lr=0.1, weight_decay=0.1, momentum=0.9, nesterov=True)
    q.grad = torch.tensor([0.5], dtype=torch.float64)
    opt.step()
    assert q.item() == pytest.approx(1 - 0.1 * 1.14, rel=1e-12)
    # AdamW: decoupled decay p·(1 − lr·wd), then lr · m̂ / (sqrt(v̂) + eps) = lr · g / |g| on the first step
    r = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    opt = build_optimizer("adamw", [r], lr=0.1, weight_decay=0.01, betas=[0.9, 0.999])
    r.grad = torch.tensor([0.5], dtype=torch.float64)
    opt.step()
    assert r.item() == pytest.approx(1 * (1 - 0.1 * 0.01) - 0.1 * 0.5 / (0.5 + 1e-8), rel=1e-12)


def test_scheduler_sets_every_group_and_resumes_exactly():
    model = torch.nn.Linear(2, 2)
    groups = [{"params": [model.weight], "lr": 0.1}, {"params": [model.bias], "lr": 1.0}]
    schedule = Schedule("onecycle", 20, warmup_steps=4, warmup_factor=0.1)
    opt = build_optimizer("adamw", groups, lr=0.1, weight_decay=0.0)
    sched = make_scheduler(opt, schedule)
    seen = []
    for step in range(7):
        seen.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    assert [a for a, _ in seen] == pytest.approx([0.1 * schedule.factor(s) for s in range(7)])
    assert [b for _, b in seen] == pytest.approx([1.0 * schedule.factor(s) for s in range(7)])
    # a fresh optimiser and scheduler loaded from the state dicts continue with the same rates
    opt2 = build_optimizer("adamw", [{"params": [model.weight], "lr": 0.1}, {"params": [model.bias], "lr": 1.0}],
                           lr=0.1, weight_decay=0.0)
    sched2 = make_scheduler(opt2, schedule)
    opt2.load_state_dict(opt.state_dict())
    sched2.load_state_dict(sched.state_dict())
    for _ in range(3):
        assert [g["lr"] for g in opt2.param_groups] == [g["lr"] for g in opt.param_groups]
        for o, s in ((opt, sched), (opt2, sched2)):
            o.step()
            s.step()


def test_adamw_is_fused_where_torch_can_and_updates_as_the_default():
    from sharpen_core.optim import fused_adamw_supported

    torch.manual_seed(0)
    a = torch.nn.Linear(5, 3)
    b = torch.nn.Linear(5, 3)
    b.load_state_dict(a.state_dict())
    fused = build_optimizer("adamw", [{"params": [a.weight], "lr": 0.05}, {"params": [a.bias]}], lr=0.1,
                            weight_decay=0.01)
    plain = torch.optim.AdamW([{"params": [b.weight], "lr": 0.05}, {"params": [b.bias]}], lr=0.1, weight_decay=0.01,
                              foreach=False)
    supported = fused_adamw_supported([a.weight])
    assert bool(fused.param_groups[0].get("fused")) == supported
    if tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 4):
        assert supported  # torch >= 2.4 has the CPU kernel
    x = torch.randn(7, 5)
    for _ in range(5):
        for model, opt in ((a, fused), (b, plain)):
            opt.zero_grad()
            model(x).square().sum().backward()
            opt.step()
    torch.testing.assert_close(a.weight, b.weight, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a.bias, b.bias, rtol=1e-5, atol=1e-6)
    # integer tensors or mixed devices: the default implementation
    assert not fused_adamw_supported([])
    assert not fused_adamw_supported([torch.zeros(2, dtype=torch.int64)])
    assert fused_adamw_supported([{"params": a.weight}]) == supported  # a group's lone tensor, not its rows


def test_resume_keeps_this_machines_optimizer_kernel():
    from sharpen_core.checkpoints import restore_training_state, training_state

    model = torch.nn.Linear(2, 2)
    old = torch.optim.AdamW(model.parameters(), lr=0.1, foreach=False)  # a checkpoint from before fused AdamW
    sched = make_scheduler(old, Schedule("cosine", 10))
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    state = {"model": model.state_dict(), **training_state(old, sched, scaler, torch.device("cpu"))}
    new = build_optimizer("adamw", model.parameters(), lr=0.1, weight_decay=0.0)
    chosen = {k: new.param_groups[0].get(k) for k in ("fused", "foreach")}
    restore_training_state(state, model, new, make_scheduler(new, Schedule("cosine", 10)), scaler,
                           torch.device("cpu"))
    assert {k: new.param_groups[0].get(k) for k in ("fused", "foreach")} == chosen
    assert new.param_groups[0]["lr"] == pytest.approx(0.1)


def test_adamw_takes_parameter_groups_given_as_generators():
    model = torch.nn.Linear(3, 2)
    opt = build_optimizer("adamw", ({"params": (p for p in [model.weight]), "lr": 0.05},
                                    {"params": model.bias}), lr=0.1, weight_decay=0.0)
    assert [len(g["params"]) for g in opt.param_groups] == [1, 1]
    assert opt.param_groups[0]["params"][0] is model.weight and opt.param_groups[1]["params"][0] is model.bias
