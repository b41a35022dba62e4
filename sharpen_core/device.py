"""Devices and processes: ``--device auto`` picks CUDA when present; torchrun sets up DDP."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from sharpen_core.errors import UsageError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA when available, else CPU; ``cuda``/``cuda:N``/``cpu`` as given (checked)."""
    if name == "auto":
        if torch.cuda.is_available():
            local = int(os.environ.get("LOCAL_RANK", 0))
            return torch.device("cuda", local % torch.cuda.device_count())
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r}; expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {name!r} asked for, but CUDA is not available here; use --device cpu or auto")
    return device


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch, and ask torch for deterministic kernels.

    Without ``torch.use_deterministic_algorithms``, ICASC training (a double backward) on a
    multi-threaded CPU gave different weights from run to run at batch 16 / 96 px; with it, the
    same seed and config give the same numbers. Kernels with no deterministic version (some CUDA
    ones) warn instead of failing (``warn_only``): that non-determinism is documented, not hidden.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS determinism (read at CUDA init)
    torch.use_deterministic_algorithms(True, warn_only=True)


@dataclass
class DistInfo:
    """Where this process stands in a torchrun job (world_size 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group torchrun describes (env:// rendezvous): NCCL on CUDA, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(),
                    local_rank=int(os.environ.get("LOCAL_RANK", 0)))


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def training_device(name: str = "auto") -> tuple[torch.device, DistInfo]:
    """This process's device and its place in a torchrun job (under torchrun, each process its own GPU)."""
    device = resolve_device(name)
    dist_info = init_distributed(device)
    if dist_info.distributed and device.type == "cuda":
        device = torch.device("cuda", dist_info.local_rank)
    return device, dist_info
