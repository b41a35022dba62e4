"""Is this output up to date? One declared list of the config keys each output depends on, and one
comparison, used by every stage (classifier and segmenter checkpoints, map and prediction folders)
and by ``sharpen run``'s stage records.

A key is ``"section"`` (all its keys) or ``"section.key"``. ``NEVER_CHANGE_RESULTS`` are left out
everywhere: worker and process counts and checkpoint spacing change how fast a result comes, not
the result (augmentation is a function of seed, epoch and image; resumes are bit-exact).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from sharpen_core.errors import DatasetError

NEVER_CHANGE_RESULTS: tuple[str, ...] = ("data.num_workers", "data.train_workers", "data.torch_threads", "data.cache_mib",
                                         "segment.crf_processes", "segment.checkpoint_every")

# output -> (keys it depends on, keys of those it does not depend on)
DEPENDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # a classifier checkpoint: training data and schedule, the seed
    "classifier": (("run.seed", "data", "classify"), ("data.val_split", "data.test_split")),
    # a segmenter checkpoint (plus its supervision and the cue folder's parameters)
    "segmenter": (("run.seed", "data", "segment"),
                  ("data.val_split", "data.test_split", "segment.predict_scales", "segment.predict_flip",
                   "segment.predict_crf", "segment.supervision")),
    # the stages of `sharpen run`: each also depends on every earlier stage's keys
    "run.data": (("data",), ()),
    "run.classify": (("classify", "run.seed"), ()),
    "run.cues": (("cues", "eval", "run.cue_sets"), ()),
    "run.segment": (("segment", "run.full_supervision", "run.segment_cue_sets"), ()),
    "run.predict": (("run.submission",), ()),
    "run.report": ((), ()),
}


def _flatten(cfg_dict: Mapping[str, Any], key: str) -> dict[str, Any]:
    if "." in key:
        section, name = key.split(".", 1)
        return {key: cfg_dict[section][name]}
    return {f"{key}.{name}": value for name, value in cfg_dict[key].items()}


def config_part(cfg: Any, outputs: str | Iterable[str]) -> dict[str, Any]:
    """``{"section.key": value}`` of every key the ``outputs`` (names of ``DEPENDS``) depend on."""
    d = cfg.to_dict()
    part: dict[str, Any] = {}
    for output in [outputs] if isinstance(outputs, str) else outputs:
        keys, excluded = DEPENDS[output]
        for key in keys:
            part.update(_flatten(d, key))
        for key in (*excluded, *NEVER_CHANGE_RESULTS):
            part.pop(key, None)
    return part


def fingerprint(payload: Mapping[str, Any]) -> str:
    """A short stable hash of a JSON-able mapping (what a record stores to be compared later)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def changed(old: Mapping[str, Any], new: Mapping[str, Any], ignore: Iterable[str] = ()) -> dict[str, tuple[Any, Any]]:
    """The entries of ``new`` that ``old`` holds differently: ``{key: (old value, new value)}``; empty
    when the output made with ``old`` is up to date for ``new``. ``ignore``: keys not compared."""
    skip = set(ignore)
    return {k: (old.get(k), v) for k, v in new.items() if k not in skip and old.get(k) != v}


def refuse_changed(path: str | Path, what: str, old: Mapping[str, Any], new: Mapping[str, Any],
                   ignore: Iterable[str] = (), folder: str | Path | None = None) -> None:
    """Raise :class:`DatasetError` naming ``path`` and each differing key when ``old`` and ``new`` differ."""
    diff = changed(old, new, ignore)
    if diff:
        shown = "; ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in diff.items())
        raise DatasetError(path, f"this folder holds {what} made with other parameters ({shown}); "
                           f"use another --out, or delete {folder if folder is not None else Path(path).parent} "
                           "to start fresh")
