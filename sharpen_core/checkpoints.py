"""Checkpoints, in one place: write atomically, read with clear errors, unwrap DDP, restore a
training state bit-exactly. Used by every stage that saves or loads weights."""

from __future__ import annotations

import io
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sharpen_core.errors import CheckpointMismatch as CheckpointMismatch  # re-exported
from sharpen_core.errors import DatasetError, first_line
from sharpen_core.io import write_bytes_atomic


#: What a checkpoint of an unfinished run holds besides the weights, for a bit-exact resume.
RESUME_KEYS = ("optimizer", "scheduler", "scaler", "rng_cpu")
#: What a bad checkpoint's message says was expected, unless the caller says it more precisely.
EXPECTED_CHECKPOINT = "a checkpoint.pt written by `sharpen classify train` or `sharpen segment train`"
EXPECTED_WEIGHTS = "a PyTorch state dict (parameter name -> tensor) or a checkpoint holding one"


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / DataParallel, else the model itself."""
    return model.module if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else model


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """``torch.save(state)`` written atomically (temp file, then rename)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    write_bytes_atomic(path, buf.getvalue())


def _not_a_checkpoint(path: Path) -> str | None:
    """Why ``path`` cannot be a file ``torch.save`` wrote, from its first bytes (None: it may be one).

    ``torch.save`` writes a zip archive (``PK\\x03\\x04``); files of torch before 1.6 are a pickle
    (first byte 0x80, the PROTO opcode)."""
    with open(path, "rb") as f:
        head = f.read(64)
    if not head:
        return "the file is empty"
    if head.startswith(b"PK\x03\x04") or head[:1] == pickle.PROTO:
        return None
    if all(32 <= b < 127 or b in b"\t\n\r" for b in head):
        return f"a text file, starting {head.decode().strip().splitlines()[0][:24]!r}"
    return "neither a zip archive nor a pickle"


def _torch_load(path: str | Path, expected: str) -> Any:
    """``torch.load(weights_only=True)`` on CPU; a one-line :class:`UserError` naming the file otherwise.

    A missing file is a :class:`DatasetError`; a file that is not a PyTorch checkpoint, or that holds
    anything but tensors and plain Python values, a :class:`CheckpointMismatch` saying what it is not
    and ``expected`` (never torch's many-line unpickler text)."""
    path = Path(path)
    if path.is_dir():
        raise DatasetError(path, f"a folder, not a file; expected {expected}")
    if not path.is_file():
        raise DatasetError(path, f"not found; expected {expected}")
    try:
        why = _not_a_checkpoint(path)
    except OSError as e:
        raise DatasetError(path, f"unreadable ({e.strerror or e}); expected {expected}") from None
    if why is not None:
        raise CheckpointMismatch(f"{path}: not a PyTorch checkpoint ({why}); expected {expected}")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": a second line for a bad file
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch.load of a readable file fails only on its content
        raise CheckpointMismatch(f"{path}: not a PyTorch checkpoint of this project (could not unpickle: "
                                 f"{_unpickle_reason(e)}); expected {expected}") from None


def _unpickle_reason(error: BaseException) -> str:
    """The informative line of torch's error: for the weights-only unpickler the line after its advice
    ("Unsupported global: ...", "Unsupported operand 35"), else the first line."""
    lines = [s.strip() for s in str(error).splitlines() if s.strip()]
    for i, line in enumerate(lines):
        if "WeightsUnpickler error:" in line:
            rest = line.split("WeightsUnpickler error:", 1)[1].strip()
            return first_line(rest or (lines[i + 1] if i + 1 < len(lines) else type(error).__name__))
    return first_line(error).split(". ")[0]  # torch's first sentence says what failed; the rest is advice


def load_checkpoint(path: str | Path, expected: str = EXPECTED_CHECKPOINT) -> dict[str, Any]:
    """The raw checkpoint dict (``weights_only=True``, on CPU), with a one-line error for a missing file,
    a file that is not a PyTorch checkpoint, or a checkpoint without a ``"model"`` state dict."""
    state = _torch_load(path, expected)
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        held = f"a dict with keys {sorted(map(str, state))[:6]}" if isinstance(state, dict) else type(state).__name__
        raise CheckpointMismatch(f"{path}: a PyTorch file holding {held}, not a checkpoint with a 'model' "
                                 f"state dict; expected {expected}")
    return state


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict in a weights file: a bare state dict, or a checkpoint holding one under
    ``"model"`` or ``"state_dict"``; a DDP ``module.`` prefix is dropped. Clear errors otherwise."""
    path = Path(path)
    obj = _torch_load(path, EXPECTED_WEIGHTS)
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointMismatch(f"{path}: a PyTorch file, but not a state dict; expected {EXPECTED_WEIGHTS}")
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
        raise CheckpointMismatch(f"checkpoint lacks {absent}, which resuming needs (a finished run's checkpoint keeps "
                                 "only its weights); start the run in another output folder")
    model.load_state_dict(state["model"])
    implementation = [{k: g.get(k) for k in ("fused", "foreach")} for g in optimizer.param_groups]
    optimizer.load_state_dict(state["optimizer"])
    for group, kept in zip(optimizer.param_groups, implementation):
        group.update(kept)  # the kernel this machine's optimizer chose, not the saving machine's
    scheduler.load_state_dict(state["scheduler"])  # type: ignore[attr-defined]
    scaler.load_state_dict(state["scaler"])  # type: ignore[attr-defined]
    torch.set_rng_state(state["rng_cpu"])
    if device.type == "cuda" and state.get("rng_cuda") is not None:
        torch.cuda.set_rng_state(state["rng_cuda"], device)
