"""Checkpoints, in one place: write atomically, read with clear errors, unwrap DDP, restore a
training state bit-exactly. Used by every stage that saves or loads weights."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sharpen_core.errors import UserError
from sharpen_core.io import write_bytes_atomic


#: What a checkpoint of an unfinished run holds besides the weights, for a bit-exact resume.
RESUME_KEYS = ("optimizer", "scheduler", "scaler", "rng_cpu")


class CheckpointMismatch(UserError, ValueError):
    """A checkpoint made for another architecture, model or class count."""


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / DataParallel, else the model itself."""
    return model.module if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else model


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """``torch.save(state)`` written atomically (temp file, then rename)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    write_bytes_atomic(path, buf.getvalue())


def _torch_load(path: str | Path, missing: str, unreadable: str) -> Any:
    """``torch.load(weights_only=True)`` on CPU; FileNotFoundError / ValueError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {missing}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad file
        raise ValueError(f"{path}: {unreadable} ({e})") from None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw checkpoint dict (``weights_only=True``, on CPU), with a clear error for a missing or bad file."""
    return _torch_load(path, "checkpoint not found", "not a readable checkpoint")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict in a weights file: a bare state dict, or a checkpoint holding one under
    ``"model"`` or ``"state_dict"``; a DDP ``module.`` prefix is dropped. Clear errors otherwise."""
    path = Path(path)
    obj = _torch_load(path, "weights file not found; expected a torch state dict or checkpoint",
                      "not a readable torch weights file")
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: expected a state dict (parameter name -> tensor)")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def training_state(optimizer: torch.optim.Optimizer, scheduler: object, scaler: object,
                   device: torch.device) -> dict[str, Any]:
    """The optimizer, scheduler, AMP scaler and RNG states a bit-exact resume needs (the
    :data:`RESUME_KEYS`, plus the CUDA RNG on CUDA); :func:`restore_training_state` loads them."""
    return {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),  # type: ignore[attr-defined]
            "scaler": scaler.state_dict(), "rng_cpu": torch.get_rng_state(),  # type: ignore[attr-defined]
            "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def restore_training_state(state: dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                           scheduler: object, scaler: object, device: torch.device) -> None:
    """Load a checkpoint's model, optimizer, scheduler, AMP scaler and RNG states (bit-exact resume).

    A finished run's checkpoint keeps no optimiser state; resuming from one is refused by name."""
    absent = [k for k in RESUME_KEYS if k not in state]
    if absent:
        raise ValueError(f"checkpoint lacks {absent}, which resuming needs (a finished run's checkpoint keeps "
                         "only its weights); start the run in another output folder")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])  # type: ignore[attr-defined]
    scaler.load_state_dict(state["scaler"])  # type: ignore[attr-defined]
    torch.set_rng_state(state["rng_cpu"])
    if device.type == "cuda" and state.get("rng_cuda") is not None:
        torch.cuda.set_rng_state(state["rng_cuda"], device)
