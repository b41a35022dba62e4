"""The run's pretrained start (docs/method.md §8) in the report: what made it, how long, which seeds
found it in the cache. Pure functions of dicts: nothing is read or written."""

from __future__ import annotations

from typing import Any

from .numbers import hms, is_number


def aggregate_pretrained(summary: dict[str, Any]) -> dict[str, Any] | None:
    """The pretrained start's record (``RUN/classify/pretrain.json``) over the seeds, or None when the run's
    classifiers did not start from the built-in weights. ``made_by_seeds``: the seeds whose run made the
    weights (a cache miss); ``cache_hit_seeds``: those that found them in the machine's cache."""
    runs = list(summary.get("per_seed") or [summary])
    records = [((run.get("seeds") or [None])[0], run.get("pretrained")) for run in runs]
    records = [(s, r) for s, r in records if isinstance(r, dict)]
    if not records:
        return None
    first = records[0][1]
    return {
        "key": first.get("key"), "arch": first.get("arch"), "settings": first.get("pretrain"),
        "images": first.get("images"), "val_map": first.get("val_map"),
        "data_seconds": first.get("data_seconds"), "train_seconds": first.get("train_seconds"),
        "torch": first.get("torch"),
        "made_by_seeds": [s for s, r in records if not r.get("cache_hit")],
        "cache_hit_seeds": [s for s, r in records if r.get("cache_hit")],
        "segmenters": any(bool(run.get("pretrained_segmenters")) for run in runs),
    }


def pretrained_markdown(p: dict[str, Any] | None, config: dict[str, Any] | None = None) -> str:
    """One sentence: how the start was made and whether this run made it or found it in the cache."""
    if not p:
        weights = ((config or {}).get("classify") or {}).get("weights")
        return f"Start: `classify.weights = {weights!r}`" + (" (random weights)" if weights == "none" else "") + "."
    s = p.get("settings") or {}
    images = p.get("images") or {}
    made = [x for x in (p.get("data_seconds"), p.get("train_seconds")) if is_number(x)]
    how = (f"made once in {hms(sum(made))} (rendering {p['data_seconds']:.0f} s, training {p['train_seconds']:.0f} s)"
           if len(made) == 2 else "made once")
    by = p.get("made_by_seeds") or []
    hits = p.get("cache_hit_seeds") or []
    where = []
    if by:
        where.append(f"by this run (seed {', '.join(str(x) for x in by)})")
    if hits:
        where.append(f"found in the machine's cache by seed{'s' if len(hits) > 1 else ''} "
                     f"{', '.join(str(x) for x in hits)}")
    val = p.get("val_map")
    nets = "every classifier and segmenter encoder" if p.get("segmenters") else "every classifier"
    return (f"Start: {nets} from the built-in pretrained weights "
            f"`builtin:{p.get('key')}` (docs/method.md §8): a plain {p.get('arch')} trained on the built-in "
            f"`{s.get('size')}` set ({images.get('train', '?')} train images, generator seed {s.get('seed')}; none is a "
            f"train/val/test image), {s.get('epochs')} epochs at {s.get('image_size')} px, output stride "
            f"{s.get('output_stride')}"
            + (f", its own val mAP {100 * val:.1f}" if is_number(val) else "")
            + f"; {how}" + (f", {'; '.join(where)}" if where else "") + ".")
