"""sharpen_core.device: seeding makes torch pick deterministic kernels (ICASC's double backward needs it)."""

from __future__ import annotations

import torch

from sharpen_core.device import seed_everything


def test_seed_everything_seeds_and_asks_for_deterministic_kernels():
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        seed_everything(3)
        a = torch.rand(4)
        seed_everything(3)
        assert torch.equal(a, torch.rand(4))
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
