"""Decode once per run: an in-memory cache of a split's prepared uint8 arrays, under a memory cap.

The training stages read every image of their split once per epoch. Decoding a JPEG and resizing
it costs more than a small network's step on a small machine, so a stage asks :class:`DecodedCache`
to hold the prepared arrays (uint8 images at the network's input size, cue planes, masks) of the
whole split when they fit under ``data.cache_mib``: it fills the cache once, before the first
epoch (with a progress bar), and serves every later read from memory. When the split does not
fit, nothing is cached, the arrays are prepared on every read as before, and the stage says so
once. The items are a pure function of the index, so cached and uncached runs give the same
samples.
"""

from __future__ import annotations

import sys
from typing import Any, Callable

import numpy as np
import torch
from tqdm import tqdm

from sharpen_core.errors import ConfigError

MIB = 1 << 20


def nbytes(item: Any) -> int:
    """Bytes held by the arrays/tensors of ``item`` (a dict, list or tuple of them, or one)."""
    if isinstance(item, dict):
        return sum(nbytes(v) for v in item.values())
    if isinstance(item, (list, tuple)):
        return sum(nbytes(v) for v in item)
    if isinstance(item, np.ndarray):
        return int(item.nbytes)
    if hasattr(item, "element_size") and hasattr(item, "numel"):
        return int(item.element_size() * item.numel())
    return 0


class DecodedCache:
    """``prepare(i)`` for ``i in range(n)``, computed once and kept when the split fits in ``cap_mib``.

    ``item_bytes``: the size of one prepared item (the items of a split share one size: arrays at
    the network's input size); the split fits when ``n · item_bytes ≤ cap_mib · 2^20``.
    ``cap_mib = 0`` turns caching off. :meth:`get` prepares an item on its first read and keeps it
    (in the main process only: a loader worker's copy would die with it); :meth:`fill` prepares
    them all up front. When the split does not fit, :meth:`get` prepares on every read and
    :meth:`report` says so once.
    """

    def __init__(self, prepare: Callable[[int], Any], n: int, item_bytes: int, cap_mib: int, name: str = "images"):
        if cap_mib < 0:
            raise ConfigError(f"data.cache_mib must be >= 0, got {cap_mib}")
        self.prepare, self.n, self.item_bytes, self.cap_mib, self.name = prepare, int(n), int(item_bytes), cap_mib, name
        self.needed_mib = self.n * self.item_bytes / MIB
        self.enabled = cap_mib > 0 and self.needed_mib <= cap_mib
        self.items: list[Any] = [None] * self.n if self.enabled else []
        self.prepared = 0  # calls of prepare (a cached split: each item once)

    def describe(self) -> str:
        state = "decoded once, kept in memory" if self.enabled else "decoded on every read"
        return (f"{self.name}: {self.n} items, {self.needed_mib:.0f} MiB decoded, data.cache_mib = "
                f"{self.cap_mib}: {state}")

    def report(self) -> None:
        """Say once, on stderr, that the split does not fit under the cap (nothing when it does or caching is off)."""
        if not self.enabled and self.cap_mib > 0:
            print(f"[cache] {self.describe()}; raise data.cache_mib to hold it", file=sys.stderr)

    def fill(self, progress: bool = True) -> None:
        """Prepare every item now (no-op when disabled)."""
        if self.enabled:
            for i in tqdm(range(self.n), desc=f"decoding {self.name} once", unit="img", disable=not progress,
                          leave=False):
                self.get(i)

    def get(self, index: int) -> Any:
        if not self.enabled:
            self.prepared += 1
            return self.prepare(index)
        item = self.items[index]
        if item is None:
            self.prepared += 1
            item = self.prepare(index)
            if torch.utils.data.get_worker_info() is None:
                self.items[index] = item
        return item
