"""Where the built-in pretrained weights live: a per-machine cache keyed by what made them.

``classify.weights = "builtin"`` / ``segment.weights = "builtin"`` ask for the project's own
"ImageNet" (docs/method.md §8): one classifier trained once on a separate, larger built-in set.
The driver resolves ``"builtin"`` to ``"builtin:<key>"`` (classify/pretrain.py trains the weights
when the cache lacks them); the key is a hash of everything that made the weights, so a change
to any of it makes new weights and never reuses stale ones, and the same key on two machines
names the same recipe. Stages read ``"builtin:<key>"`` through :func:`weights_file`.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import UserError

BUILTIN = "builtin"
PREFIX = BUILTIN + ":"
WEIGHTS_NAME = "weights.pt"
RECORD_NAME = "pretrain.json"


def cache_root() -> Path:
    """``$SHARPEN_CACHE``, else ``$XDG_CACHE_HOME/sharpen-focus``, else ``~/.cache/sharpen-focus``."""
    if os.environ.get("SHARPEN_CACHE"):
        return Path(os.environ["SHARPEN_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "sharpen-focus"


def pretrained_folder(key: str) -> Path:
    """The cache folder of the weights made by recipe ``key``."""
    return cache_root() / "pretrained" / key


def is_builtin(weights: str) -> bool:
    """Whether ``weights`` names the built-in pretrained weights (unresolved or resolved)."""
    return weights == BUILTIN or weights.startswith(PREFIX)


def weights_file(weights: str) -> str:
    """The file behind ``"builtin:<key>"``; any other value unchanged (``"none"``, ``"imagenet"``, a path).

    Raises :class:`UserError` for an unresolved ``"builtin"`` or a key whose weights are not cached.
    """
    if weights == BUILTIN:
        raise UserError('weights = "builtin" must be resolved first: run the stage through `sharpen run` '
                        "or a `sharpen classify|segment train` command, which make or find the weights")
    if not weights.startswith(PREFIX):
        return weights
    key = weights[len(PREFIX):]
    path = pretrained_folder(key) / WEIGHTS_NAME
    if not path.is_file():
        raise UserError(f"{path}: the built-in pretrained weights {key} are not in this machine's cache; "
                        "`sharpen classify pretrain --config C` (or `sharpen run`) makes them")
    return str(path)
