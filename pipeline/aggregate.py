"""The report's numbers: the rows, the fully supervised reference, the stages, the classifiers and the
training curves of a run's ``summary`` (:func:`pipeline.collect.collect_summary`), aggregated over
seeds when ``summary["per_seed"]`` holds several. Pure functions of dicts: nothing is read or written.

With several seeds each numeric field holds the mean over seeds, plus ``<field>_std`` (sample standard
deviation, ``ddof=1``; ``None`` with fewer than two values) and ``<field>_values`` (one entry per seed,
``None`` where that seed did not produce it). The weak/full ratio of a row is its segmenter's val mIoU
with CRF over the fully supervised segmenter's val mIoU with CRF (both without CRF when the reference
has no CRF number); with several seeds it is computed per seed, then averaged. So is a row's gain over the
floors (``cue_gain_over_floor``): its cue mIoU minus the best cue mIoU of the floors of the same seed
(maps that do not localize, docs/method.md §6.2; :func:`aggregate_floors` gives the floors themselves).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from .numbers import finite_number, is_number

# A classifier's own numbers, in each of its rows (pipeline.collect.classifier_fields): the attention overlap
# (docs/method.md §2.7) of Grad-CAM and channel-weighted maps at the last and the inner layer, and the KS
# distance between target and most-confusing-class probabilities (§6.3): claim (c)'s measures.
CLASSIFIER_FIELDS: tuple[str, ...] = ("overlap_gradcam_last", "overlap_channel_last", "overlap_gradcam_inner",
                                      "overlap_channel_inner", "cls_ks")
# The numeric fields of a row, in table order.
ROW_FIELDS: tuple[str, ...] = ("cls_map", "cls_auc", "attention_overlap", *CLASSIFIER_FIELDS, "cue_best_tau",
                               "cue_miou", "seed_precision", "seed_recall", "seg_miou", "seg_miou_crf")
LINEARITY_STATS: tuple[str, ...] = ("median", "p90", "p99", "max")  # of |g·ΣA|/2 (docs/method.md §6.4)
RATIO_FIELD = "weak_full_ratio"
# The cue fields read beside ROW_FIELDS: SEC's seeds with the foreground threshold at the maps' own τ*
# (those of ROW_FIELDS are at SEC's fixed cues.fg_threshold), and the gain over the floors (per seed).
CUE_FIELDS: tuple[str, ...] = ("seed_precision_at_tau", "seed_recall_at_tau")
GAIN_FIELD = "cue_gain_over_floor"
# The numeric fields of a floor (summary["floors"][i], pipeline.collect.collect_floors).
FLOOR_FIELDS: tuple[str, ...] = ("best_tau", "best_miou", "seed_precision", "seed_recall", "seed_precision_at_tau",
                                 "seed_recall_at_tau")
FULL_FIELDS: tuple[str, ...] = ("full_supervision_miou", "full_supervision_miou_crf")
NOISE_MIOU = 0.02  # WSSS results move by about 2 mIoU between seeds
CLASSIFY_TERMS: tuple[str, ...] = ("train_loss", "train_cls", "train_as_inner", "train_as_last", "train_ac")
ICASC_TERMS = frozenset({"train_as_inner", "train_as_last", "train_ac"})  # not computed for the baseline
SEGMENT_TERMS: tuple[str, ...] = ("loss", "seed", "expand", "constrain")
MAX_CURVE_POINTS = 200


def mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (``ddof=1``) of the numbers among ``values``.

    ``None`` (and NaN) entries are left out; the mean is ``None`` without numbers and the standard
    deviation ``None`` with fewer than two. ``[0.4, 0.6]`` gives ``(0.5, 0.1414...)``.
    """
    nums = [float(v) for v in values if is_number(v)]
    if not nums:
        return None, None
    mean = sum(nums) / len(nums)
    if len(nums) < 2:
        return mean, None
    var = sum((x - mean) ** 2 for x in nums) / (len(nums) - 1)
    return mean, math.sqrt(var)

def _ratio(num: float | None, den: float | None) -> float | None:
    if not (is_number(num) and is_number(den)) or float(den) == 0.0:
        return None
    return float(num) / float(den)

def row_key(row: dict[str, Any]) -> tuple[str, str | None]:
    return (str(row.get("classifier")), row.get("mechanism"))

def row_label(row: dict[str, Any]) -> str:
    mech = row.get("mechanism")
    return f"{row.get('classifier')}/{mech}" if mech else str(row.get("classifier"))

def _ratio_basis(summary: dict[str, Any]) -> str:
    """``"crf"`` when the reference has a CRF number, else ``"no_crf"`` (compare like with like)."""
    return "crf" if is_number(summary.get("full_supervision_miou_crf")) else "no_crf"

def _row_ratio(row: dict[str, Any], summary: dict[str, Any], basis: str) -> float | None:
    if basis == "crf":
        return _ratio(row.get("seg_miou_crf"), summary.get("full_supervision_miou_crf"))
    return _ratio(row.get("seg_miou"), summary.get("full_supervision_miou"))

def best_floor_miou(floors: Sequence[dict[str, Any]] | None) -> float | None:
    """The highest ``best_miou`` among one run's floors (None without one)."""
    values = [float(f["best_miou"]) for f in floors or [] if is_number(f.get("best_miou"))]
    return max(values) if values else None

def floor_gain(cue_miou: float | None, floors: Sequence[dict[str, Any]] | None) -> float | None:
    """A row's cue mIoU minus the best floor's of the same run (None when either is missing)."""
    best = best_floor_miou(floors)
    return float(cue_miou) - best if is_number(cue_miou) and best is not None else None

def _mean_dict(dicts: Sequence[dict[str, Any] | None]) -> tuple[dict[str, float | None], dict[str, float | None]]:
    """Per-key mean and std of several ``{name: value}`` dicts (keys in order of first appearance)."""
    keys: list[str] = []
    for d in dicts:
        for k in (d or {}):
            if k not in keys:
                keys.append(k)
    means, stds = {}, {}
    for k in keys:
        means[k], stds[k] = mean_std([(d or {}).get(k) for d in dicts])
    return means, stds

def _mean_curve(curves: Sequence[dict[str, Any] | None]) -> dict[str, Any] | None:
    """The seeds' τ curves averaged pointwise when they share the τ grid; else the first one."""
    present = [c for c in curves if c and c.get("tau")]
    if not present:
        return None
    taus = [float(t) for t in present[0]["tau"]]
    if len(present) == 1 or any([float(t) for t in c["tau"]] != taus for c in present[1:]):
        return {"tau": taus, "miou": [float(v) if is_number(v) else None for v in present[0]["miou"]]}
    miou, std = [], []
    for i in range(len(taus)):
        m, s = mean_std([c["miou"][i] if i < len(c["miou"]) else None for c in present])
        miou.append(m)
        std.append(s)
    return {"tau": taus, "miou": miou, "miou_std": std}


# --------------------------------------------------------------------------- aggregation

def aggregate(summary: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any], list[str]]:
    """The report rows and reference numbers, aggregated over ``summary["per_seed"]`` when given.

    Returns ``(rows, reference, notes)``. Rows are matched across seeds by (classifier, mechanism),
    in the order of ``summary["rows"]`` then of first appearance. Every numeric field gets its mean
    (under the field's name), ``_std`` and ``_values``; so does the weak/full ratio, computed per seed.
    Other keys of a row (paths, ...) are kept as the first seed has them.
    """
    notes: list[str] = []
    seeds = list(summary.get("seeds") or [])
    per_seed = summary.get("per_seed")
    if per_seed:
        runs = list(per_seed)
        if seeds and len(seeds) != len(runs):
            notes.append(f"{len(seeds)} seeds listed but {len(runs)} per-seed summaries given; "
                         "the statistics use the per-seed summaries")
    else:
        if len(seeds) > 1:
            notes.append(f"{len(seeds)} seeds listed but no per-seed summaries given; "
                         "the numbers are those of the first seed only")
        runs = [summary]
    basis = _ratio_basis(summary)
    order: list[tuple[str, str | None]] = []
    for source in [summary, *runs]:
        for row in source.get("rows") or []:
            if row_key(row) not in order:
                order.append(row_key(row))
    first_rows = {row_key(r): r for r in summary.get("rows") or []}
    rows = []
    for key in order:
        matched = [next((r for r in (run.get("rows") or []) if row_key(r) == key), None) for run in runs]
        base = first_rows.get(key) or next(r for r in matched if r is not None)
        out: dict[str, Any] = {"classifier": key[0], "mechanism": key[1], "label": row_label(base)}
        for f in ROW_FIELDS:
            values = [None if r is None else (float(r[f]) if is_number(r.get(f)) else None) for r in matched]
            out[f], out[f + "_std"] = mean_std(values)
            out[f + "_values"] = values
        for f in CUE_FIELDS:
            values = [None if r is None else (float(r[f]) if is_number(r.get(f)) else None) for r in matched]
            out[f], out[f + "_std"] = mean_std(values)
            out[f + "_values"] = values
        gains = [None if r is None else floor_gain(r.get("cue_miou"), run.get("floors"))
                 for r, run in zip(matched, runs)]
        out[GAIN_FIELD], out[GAIN_FIELD + "_std"] = mean_std(gains)
        out[GAIN_FIELD + "_values"] = gains
        ratios = [None if r is None else _row_ratio(r, run, basis) for r, run in zip(matched, runs)]
        out[RATIO_FIELD], out[RATIO_FIELD + "_std"] = mean_std(ratios)
        out[RATIO_FIELD + "_values"] = ratios
        out["per_class_iou"], out["per_class_iou_std"] = _mean_dict([None if r is None else r.get("per_class_iou")
                                                                     for r in matched])
        out["tau_curve"] = _mean_curve([None if r is None else r.get("tau_curve") for r in matched])
        out["maps_dir"] = base.get("maps_dir")
        out["cue_tau_at_edge"] = any(bool(r.get("cue_tau_at_edge")) for r in matched if r is not None)
        out["seeds_present"] = sum(r is not None for r in matched)
        out.update({k: v for k, v in base.items() if k not in out})  # whatever else the caller recorded
        rows.append(out)
    reference: dict[str, Any] = {"ratio_basis": basis}
    for f in FULL_FIELDS:
        values = [float(run[f]) if is_number(run.get(f)) else None for run in runs]
        reference[f], reference[f + "_std"] = mean_std(values)
        reference[f + "_values"] = values
    reference["full_per_class_iou"], reference["full_per_class_iou_std"] = _mean_dict(
        [run.get("full_per_class_iou") for run in runs])
    return rows, reference, notes

def aggregate_floors(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The floors (docs/method.md §6.2), matched across seeds by name in order of first appearance: each
    of :data:`FLOOR_FIELDS` as mean, ``_std`` and ``_values`` (as the rows), the τ curve averaged pointwise,
    ``tau_at_edge`` when any seed's is, and ``seeds_present``. ``[]`` when no run has floors."""
    runs = list(summary.get("per_seed") or [summary])
    names: list[str] = []
    for run in [summary, *runs]:
        names += [str(f.get("name")) for f in run.get("floors") or [] if str(f.get("name")) not in names]
    out = []
    for name in names:
        matched = [next((f for f in run.get("floors") or [] if str(f.get("name")) == name), None) for run in runs]
        entry: dict[str, Any] = {"name": name}
        for f in FLOOR_FIELDS:
            values = [None if e is None else (float(e[f]) if is_number(e.get(f)) else None) for e in matched]
            entry[f], entry[f + "_std"] = mean_std(values)
            entry[f + "_values"] = values
        entry["tau_curve"] = _mean_curve([None if e is None else e.get("tau_curve") for e in matched])
        entry["tau_at_edge"] = any(bool(e.get("tau_at_edge")) for e in matched if e is not None)
        entry["seeds_present"] = sum(e is not None for e in matched)
        out.append(entry)
    return out

def run_totals(summary: dict[str, Any]) -> dict[str, Any]:
    """The whole run's wall time (summed over seeds) and peak RSS (the largest over seeds), with the per-seed
    values; one seed: its own."""
    runs = list(summary.get("per_seed") or [summary])
    walls = [finite_number(r.get("total_wall_seconds")) for r in runs]
    peaks = [finite_number(r.get("peak_rss_mib")) for r in runs]
    known_walls, known_peaks = [w for w in walls if w is not None], [p for p in peaks if p is not None]
    return {"total_wall_seconds": sum(known_walls) if known_walls else None,
            "total_wall_seconds_values": walls,
            "peak_rss_mib": max(known_peaks) if known_peaks else None, "peak_rss_mib_values": peaks}

def aggregate_stages(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per stage: status, and wall time and peak RSS (mean, ``_std``, ``_values`` over seeds)."""
    runs = list(summary.get("per_seed") or [summary])
    names: list[str] = []
    for source in [summary, *runs]:
        for name in (source.get("stages") or {}):
            if name not in names:
                names.append(name)
    stages = {}
    for name in names:
        entries = [(run.get("stages") or {}).get(name) or {} for run in runs]
        first = (summary.get("stages") or {}).get(name) or entries[0]
        out: dict[str, Any] = {"status": first.get("status")}
        for f in ("wall_seconds", "peak_rss_mib"):
            values = [float(e[f]) if is_number(e.get(f)) else None for e in entries]
            out[f], out[f + "_std"] = mean_std(values)
            out[f + "_values"] = values
        stages[name] = out
    return stages

def stage_entry(wall_seconds: float | None, peak_rss_mib: float | None, status: str = "done") -> dict[str, Any]:
    """A ``report["stages"]`` entry for one run (one seed): the numbers, no std, one value each."""
    return {"status": status, "wall_seconds": wall_seconds, "wall_seconds_std": None,
            "wall_seconds_values": [wall_seconds], "peak_rss_mib": peak_rss_mib, "peak_rss_mib_std": None,
            "peak_rss_mib_values": [peak_rss_mib]}

def training_curve(history: Sequence[dict[str, Any]] | None, x_key: str, terms: Sequence[str],
                   max_points: int = MAX_CURVE_POINTS) -> dict[str, Any] | None:
    """The loss terms of one model from its ``metrics.json`` history, as the training figures show them.

    One point per entry, or with more than ``max_points`` entries the mean over windows of
    ``ceil(n / max_points)`` consecutive entries (x: the window's last epoch/iteration). Terms absent
    from every entry are left out; None without entries.
    """
    entries = [h for h in history or [] if is_number(h.get(x_key))]
    present = [t for t in terms if any(is_number(h.get(t)) for h in entries)]
    if not entries or not present:
        return None
    w = max(1, math.ceil(len(entries) / max_points))
    chunks = [entries[i:i + w] for i in range(0, len(entries), w)]
    return {"x_name": x_key, "x": [chunk[-1][x_key] for chunk in chunks], "window": w,
            "terms": {t: [mean_std([h.get(t) for h in chunk])[0] for chunk in chunks] for t in present}}

def _mean_training(curves: Sequence[dict[str, Any] | None], where: str, notes: list[str]) -> dict[str, Any] | None:
    """The seeds' curves averaged pointwise (``terms_std`` per point) when they share x and terms; else the first."""
    present = [c for c in curves if c]
    if not present:
        return None
    first = present[0]
    if len(present) == 1:
        return {**first, "terms_std": None}
    if any(c["x"] != first["x"] or list(c["terms"]) != list(first["terms"]) for c in present[1:]):
        notes.append(f"training curves of {where}: the seeds' histories differ in length; the first seed's is shown")
        return {**first, "terms_std": None}
    terms, stds = {}, {}
    for t in first["terms"]:
        pairs = [mean_std([c["terms"][t][i] for c in present]) for i in range(len(first["x"]))]
        terms[t], stds[t] = [m for m, _ in pairs], [sd for _, sd in pairs]
    return {**first, "terms": terms, "terms_std": stds}

def _mean_linearity(entries: Sequence[dict[str, Any] | None]) -> dict[str, Any] | None:
    """The seeds' ``gradcampp_linearity`` records: each statistic's mean, ``_std`` and ``_values``; the layer
    as the first seed has it; None when no seed has one."""
    present = [e for e in entries if e]
    if not present:
        return None
    out: dict[str, Any] = {"layer": present[0].get("layer"), "module": present[0].get("module")}
    for stat in LINEARITY_STATS:
        values = [float(e[stat]) if e and is_number(e.get(stat)) else None for e in entries]
        out[stat], out[stat + "_std"] = mean_std(values)
        out[stat + "_values"] = values
    return out

def aggregate_classifiers(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per classifier variant: mAP and per-class AP on val (mean, ``_std``; ``map_values`` per seed), and the
    distribution of ``|g·ΣA|/2`` at the cue layer (``gradcampp_linearity``: each statistic's mean over seeds)."""
    runs = list(summary.get("per_seed") or [summary])
    names: list[str] = []
    for run in [summary, *runs]:
        names += [v for v in (run.get("classifiers") or {}) if v not in names]
    out = {}
    for v in names:
        entries = [(run.get("classifiers") or {}).get(v) or {} for run in runs]
        values = [float(e["map"]) if is_number(e.get("map")) else None for e in entries]
        m, sd = mean_std(values)
        ap, ap_std = _mean_dict([e.get("per_class_ap") for e in entries])
        out[v] = {"map": m, "map_std": sd, "map_values": values, "per_class_ap": ap, "per_class_ap_std": ap_std,
                  "gradcampp_linearity": _mean_linearity([e.get("gradcampp_linearity") for e in entries])}
    return out

def aggregate_training(summary: dict[str, Any], notes: list[str]) -> dict[str, dict[str, Any]]:
    """The training curves (:func:`training_curve`) of every classifier and segmenter, mean ± std over seeds."""
    runs = list(summary.get("per_seed") or [summary])
    out: dict[str, dict[str, Any]] = {"classify": {}, "segment": {}}
    for stage, key, x_key in (("classify", "classifiers", "epoch"), ("segment", "segmenters", "iteration")):
        names: list[str] = []
        for run in [summary, *runs]:
            names += [n for n in (run.get(key) or {}) if n not in names]
        for name in names:
            terms = SEGMENT_TERMS if stage == "segment" else tuple(
                t for t in CLASSIFY_TERMS if name != "baseline" or t not in ICASC_TERMS)
            curves = [training_curve(((run.get(key) or {}).get(name) or {}).get("history"), x_key, terms)
                      for run in runs]
            curve = _mean_training(curves, f"{stage} {name}", notes)
            if curve is not None:
                out[stage][name] = curve
    return out

def compare_rows(rows: Sequence[dict[str, Any]], n_seeds: int) -> dict[str, Any] | None:
    """Each row against the best row on the furthest-stage mIoU all rows share, judged against seed noise.

    The metric is ``seg_miou_crf`` if every row has it, else ``seg_miou``, else ``cue_miou``. A
    difference Δ of means exceeds the noise when ``|Δ| > max(0.02, 2·SE)``, ``SE = sqrt(s_a²/n_a + s_b²/n_b)``
    from the seeds' sample standard deviations (with one seed only the 2 mIoU rule applies).
    """
    rows = [r for r in rows if r.get("mechanism") is not None]  # a classifier without cue set has no mIoU
    if len(rows) < 2:
        return None
    metric = next((f for f in ("seg_miou_crf", "seg_miou", "cue_miou") if all(is_number(r.get(f)) for r in rows)),
                  None)
    if metric is None:
        return None
    best = max(rows, key=lambda r: r[metric])

    def se2(r: dict[str, Any]) -> float | None:
        n = sum(is_number(v) for v in r.get(metric + "_values") or [])
        s = r.get(metric + "_std")
        return float(s) ** 2 / n if is_number(s) and n >= 2 else None

    out = []
    for r in rows:
        if r is best:
            continue
        diff = float(r[metric]) - float(best[metric])
        a, b = se2(r), se2(best)
        se = math.sqrt(a + b) if a is not None and b is not None else None
        threshold = max(NOISE_MIOU, 2 * se) if se is not None else NOISE_MIOU
        out.append({"label": r["label"], "classifier": r["classifier"], "mechanism": r["mechanism"],
                    "diff": diff, "se": se, "threshold": threshold, "exceeds_noise": abs(diff) > threshold})
    return {"metric": metric, "best": best["label"], "n_seeds": n_seeds,
            "rule": "|diff| > max(0.02, 2*sqrt(std_a^2/n_a + std_b^2/n_b)); 0.02 alone with one seed",
            "rows": out}
