"""The report of ``sharpen run``: ``report.json``, ``report.md`` and ``figures/`` in the run folder.

:func:`write_report` takes the ``summary`` that :mod:`pipeline.run` assembles (one row per classifier
variant × mechanism, the fully supervised reference, per-stage timings, the config) and writes

* ``report.json``: the rows with every number, the reference, the stages, the config, the figures
  and notes; with several seeds each numeric field holds the mean over seeds, plus ``<field>_std``
  (sample standard deviation, ``ddof=1``; ``None`` with fewer than two values) and ``<field>_values``
  (one entry per seed, ``None`` where that seed did not produce it);
* ``report.md``: the main table (percentages, ``mean ± std`` with several seeds), the reference, the
  submission, a comparison of every row with the best one against the seed noise, the stage table,
  the leaderboard of cue sets by cue mIoU (:mod:`pipeline.leaderboard`, also under ``leaderboard``), the
  paper's claims judged against the seed spread (:mod:`pipeline.claims`, also under ``claims``), the
  figures and a note on reading them;
* ``report.json`` also holds each classifier's per-class AP (``classifiers``) and the loss curves of
  every classifier and segmenter from their ``metrics.json`` (``training``);
* ``figures/``: the figures of :mod:`pipeline.figures` (PNG, PDF and a CSV of the numbers each shows)
  and the attention-map grid (:func:`cues.show.show_maps`, PNG and PDF); a figure that cannot be drawn
  is skipped with a note.

:func:`report_run` writes all of it from a run folder's JSON files: the report stage of ``sharpen
run`` and ``sharpen report --run-dir DIR`` (a redraw, nothing rerun) both call it.

The weak/full ratio of a row is its segmenter's val mIoU with CRF over the fully supervised
segmenter's val mIoU with CRF (both without CRF when the reference has no CRF number); with several
seeds it is computed per seed, then averaged. :func:`main_table_markdown` gives the table alone and
:func:`update_readme_table` writes it between two markers of the README, so the README shows the
table as the pipeline wrote it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, Sequence

from sharpen_core.errors import DatasetError
from sharpen_core.io import write_bytes_atomic, write_json_atomic

from .claims import claims_markdown, paper_claims
from .leaderboard import leaderboard, leaderboard_markdown
from .numbers import finite_number, hms

# The numeric fields of a row, in table order, and how each is printed.
ROW_FIELDS: tuple[str, ...] = ("cls_map", "cls_auc", "attention_overlap", "cue_best_tau", "cue_miou",
                               "seed_precision", "seed_recall", "seg_miou", "seg_miou_crf")
RATIO_FIELD = "weak_full_ratio"
FULL_FIELDS: tuple[str, ...] = ("full_supervision_miou", "full_supervision_miou_crf")
PERCENT_FIELDS = frozenset({"cls_map", "cue_miou", "seed_precision", "seed_recall", "seg_miou", "seg_miou_crf",
                            RATIO_FIELD, *FULL_FIELDS})
DECIMALS = {"cls_auc": 3, "attention_overlap": 3, "cue_best_tau": 2}
TABLE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("cls_map", "cls mAP"), ("cls_auc", "AUC"), ("attention_overlap", "attention overlap"),
    ("cue_best_tau", "cue τ*"), ("cue_miou", "cue mIoU"), ("seed_precision", "seed P"),
    ("seed_recall", "seed R"), ("seg_miou", "seg mIoU"), ("seg_miou_crf", "seg mIoU+CRF"),
    (RATIO_FIELD, "weak/full"),
)
NOISE_MIOU = 0.02  # WSSS results move by about 2 mIoU between seeds
DASH = "–"
TAU_EDGE_MARK = " ⚠"
FIGURES_DIR = "figures"


# --------------------------------------------------------------------------- numbers

def _is_number(v: Any) -> bool:
    return finite_number(v) is not None


def mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (``ddof=1``) of the numbers among ``values``.

    ``None`` (and NaN) entries are left out; the mean is ``None`` without numbers and the standard
    deviation ``None`` with fewer than two. ``[0.4, 0.6]`` gives ``(0.5, 0.1414...)``.
    """
    nums = [float(v) for v in values if _is_number(v)]
    if not nums:
        return None, None
    mean = sum(nums) / len(nums)
    if len(nums) < 2:
        return mean, None
    var = sum((x - mean) ** 2 for x in nums) / (len(nums) - 1)
    return mean, math.sqrt(var)


def format_value(field: str, value: float | None, std: float | None = None) -> str:
    """A table cell: percentages with 1 decimal (AUC 3, τ 2, overlap 3 decimals), ``–`` for None."""
    if not _is_number(value):
        return DASH
    if field in PERCENT_FIELDS:
        text = f"{100 * float(value):.1f}"
        return text + (f" ± {100 * float(std):.1f}" if _is_number(std) else "")
    d = DECIMALS.get(field, 3)
    return f"{float(value):.{d}f}" + (f" ± {float(std):.{d}f}" if _is_number(std) else "")


def _ratio(num: float | None, den: float | None) -> float | None:
    if not (_is_number(num) and _is_number(den)) or float(den) == 0.0:
        return None
    return float(num) / float(den)


def row_key(row: dict[str, Any]) -> tuple[str, str | None]:
    return (str(row.get("classifier")), row.get("mechanism"))


def row_label(row: dict[str, Any]) -> str:
    mech = row.get("mechanism")
    return f"{row.get('classifier')}/{mech}" if mech else str(row.get("classifier"))


def _ratio_basis(summary: dict[str, Any]) -> str:
    """``"crf"`` when the reference has a CRF number, else ``"no_crf"`` (compare like with like)."""
    return "crf" if _is_number(summary.get("full_supervision_miou_crf")) else "no_crf"


def _row_ratio(row: dict[str, Any], summary: dict[str, Any], basis: str) -> float | None:
    if basis == "crf":
        return _ratio(row.get("seg_miou_crf"), summary.get("full_supervision_miou_crf"))
    return _ratio(row.get("seg_miou"), summary.get("full_supervision_miou"))


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
        return {"tau": taus, "miou": [float(v) if _is_number(v) else None for v in present[0]["miou"]]}
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
            values = [None if r is None else (float(r[f]) if _is_number(r.get(f)) else None) for r in matched]
            out[f], out[f + "_std"] = mean_std(values)
            out[f + "_values"] = values
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
        values = [float(run[f]) if _is_number(run.get(f)) else None for run in runs]
        reference[f], reference[f + "_std"] = mean_std(values)
        reference[f + "_values"] = values
    reference["full_per_class_iou"], reference["full_per_class_iou_std"] = _mean_dict(
        [run.get("full_per_class_iou") for run in runs])
    return rows, reference, notes


def _run_totals(summary: dict[str, Any]) -> dict[str, Any]:
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
            values = [float(e[f]) if _is_number(e.get(f)) else None for e in entries]
            out[f], out[f + "_std"] = mean_std(values)
            out[f + "_values"] = values
        stages[name] = out
    return stages


CLASSIFY_TERMS: tuple[str, ...] = ("train_loss", "train_cls", "train_as_inner", "train_as_last", "train_ac")
ICASC_TERMS = frozenset({"train_as_inner", "train_as_last", "train_ac"})  # not computed for the baseline
SEGMENT_TERMS: tuple[str, ...] = ("loss", "seed", "expand", "constrain")
MAX_CURVE_POINTS = 200


def training_curve(history: Sequence[dict[str, Any]] | None, x_key: str, terms: Sequence[str],
                   max_points: int = MAX_CURVE_POINTS) -> dict[str, Any] | None:
    """The loss terms of one model from its ``metrics.json`` history, as the training figures show them.

    One point per entry, or with more than ``max_points`` entries the mean over windows of
    ``ceil(n / max_points)`` consecutive entries (x: the window's last epoch/iteration). Terms absent
    from every entry are left out; None without entries.
    """
    entries = [h for h in history or [] if _is_number(h.get(x_key))]
    present = [t for t in terms if any(_is_number(h.get(t)) for h in entries)]
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


def aggregate_classifiers(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per classifier variant: mAP and per-class AP on val (mean, ``_std``; ``map_values`` per seed)."""
    runs = list(summary.get("per_seed") or [summary])
    names: list[str] = []
    for run in [summary, *runs]:
        names += [v for v in (run.get("classifiers") or {}) if v not in names]
    out = {}
    for v in names:
        entries = [(run.get("classifiers") or {}).get(v) or {} for run in runs]
        values = [float(e["map"]) if _is_number(e.get("map")) else None for e in entries]
        m, sd = mean_std(values)
        ap, ap_std = _mean_dict([e.get("per_class_ap") for e in entries])
        out[v] = {"map": m, "map_std": sd, "map_values": values, "per_class_ap": ap, "per_class_ap_std": ap_std}
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
    metric = next((f for f in ("seg_miou_crf", "seg_miou", "cue_miou") if all(_is_number(r.get(f)) for r in rows)),
                  None)
    if metric is None:
        return None
    best = max(rows, key=lambda r: r[metric])

    def se2(r: dict[str, Any]) -> float | None:
        n = sum(_is_number(v) for v in r.get(metric + "_values") or [])
        s = r.get(metric + "_std")
        return float(s) ** 2 / n if _is_number(s) and n >= 2 else None

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


# --------------------------------------------------------------------------- markdown

def main_table_markdown(report: dict[str, Any]) -> str:
    """The main table (one line per classifier variant × mechanism) as GitHub markdown."""
    header = ["classifier", "mechanism", *[title for _, title in TABLE_COLUMNS]]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * len(TABLE_COLUMNS)) + "|"]
    for row in report.get("rows") or []:
        cells = [str(row.get("classifier")), row.get("mechanism") or DASH]
        cells += [format_value(f, row.get(f), row.get(f + "_std")) + (TAU_EDGE_MARK if f == "cue_best_tau" and
                  row.get("cue_tau_at_edge") else "") for f, _ in TABLE_COLUMNS]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    if any(row.get("cue_tau_at_edge") for row in report.get("rows") or []):
        lines += ["", f"{TAU_EDGE_MARK} best τ at an edge of the τ sweep (`eval.tau_min`..`eval.tau_max`): the sweep "
                      "is too narrow to show where these maps' best τ lies; widen it."]
    return "\n".join(lines) + "\n"


def _hms(seconds: float | None) -> str:
    if not _is_number(seconds):
        return DASH
    return hms(seconds)


def _seconds(value: float | None, std: float | None) -> str:
    if not _is_number(value):
        return DASH
    return f"{float(value):.1f}" + (f" ± {float(std):.1f}" if _is_number(std) else "")


def stages_table_markdown(report: dict[str, Any]) -> str:
    lines = ["| stage | status | wall (s) | wall (h:mm:ss) | peak RSS (MiB) |", "|---|---|---:|---:|---:|"]
    for name, st in (report.get("stages") or {}).items():
        wall = _seconds(st.get("wall_seconds"), st.get("wall_seconds_std"))
        rss = _seconds(st.get("peak_rss_mib"), st.get("peak_rss_mib_std"))
        lines.append(f"| {name} | {st.get('status') or DASH} | {wall} | {_hms(st.get('wall_seconds'))} | {rss} |")
    n = int(report.get("n_seeds") or 1)
    total = "**total**" if n == 1 else f"**total, {n} seeds** (wall summed, peak the largest)"
    lines.append(f"| {total} | | {_seconds(report.get('total_wall_seconds'), None)} | "
                 f"{_hms(report.get('total_wall_seconds'))} | {_seconds(report.get('peak_rss_mib'), None)} |")
    return "\n".join(lines) + "\n"


def _reference_line(report: dict[str, Any]) -> str:
    ref = report.get("full_supervision") or {}
    if not any(_is_number(ref.get(f)) for f in FULL_FIELDS):
        return "Fully supervised reference: not run (no weak/full ratio)."
    basis = "with CRF" if ref.get("ratio_basis") == "crf" else "without CRF (the reference has no CRF number)"
    plain, crf = (format_value(f, ref.get(f), ref.get(f + "_std")) for f in FULL_FIELDS)
    return (f"Fully supervised reference (same segmenter trained on the ground-truth masks): val mIoU {plain}, "
            f"with CRF {crf}. weak/full = a row's segmenter mIoU over the reference's, both {basis}.")


def _submission_line(report: dict[str, Any]) -> str:
    sub = report.get("submission")
    if not sub:
        return "Submission: none written."
    score = sub.get("test_miou")
    scored = (f"test mIoU {format_value('seg_miou', score)}" if _is_number(score)
              else "not scored here (no test ground truth; score it on the evaluation server)")
    return f"Submission: `{sub.get('tarball')}` from segmenter `{sub.get('segmenter')}`; {scored}."


def _comparison_markdown(report: dict[str, Any]) -> str:
    cmp = report.get("comparison")
    if not cmp:
        return "Fewer than two rows with a shared mIoU: nothing to compare.\n"
    n = cmp["n_seeds"]
    rule = ("a difference exceeds the seed noise when |Δ| > max(2.0, 2·SE), SE from the seeds' standard deviations"
            if n > 1 else "one seed only: a difference exceeds the seed noise when |Δ| > 2.0 (the spread WSSS "
                          "results show between seeds); rerun with `--seeds 3` or more to measure it")
    lines = [f"Each row against the best on `{cmp['metric']}` (**{cmp['best']}**); {rule}.", "",
             "| row | Δ mIoU | threshold | beyond seed noise? |", "|---|---:|---:|---|"]
    for r in cmp["rows"]:
        lines.append(f"| {r['label']} | {100 * r['diff']:+.1f} | {100 * r['threshold']:.1f} | "
                     f"{'yes' if r['exceeds_noise'] else 'no'} |")
    return "\n".join(lines) + "\n"


def report_markdown(report: dict[str, Any]) -> str:
    """The whole ``report.md``."""
    seeds = report.get("seeds") or []
    n = report.get("n_seeds", 1)
    cfg_classify, cfg_cues = ((report.get("config") or {}).get(k) or {} for k in ("classify", "cues"))
    seeds_text = (", ".join(str(s) for s in seeds) if seeds else "–") + (
        f" ({n} seeds: every number is mean ± std)" if n > 1 else " (one seed: no ± shown)")
    parts = [
        f"# Report: {report.get('name')}",
        "",
        "## What ran",
        "",
        f"- config: `{report.get('config_source')}` (the full config is in `report.json` under `config`)",
        f"- dataset: `{report.get('dataset_root')}`; cues on split `{report.get('cue_split')}`, "
        f"evaluated on split `{report.get('val_split')}`",
        f"- seeds: {seeds_text}",
        f"- classifier `{cfg_classify.get('arch')}`; attention maps from layer `{cfg_cues.get('layer')}` "
        "(`cues.layer`: at a ResNet's last layer Grad-CAM = CAM and Grad-CAM++ ∝ channel-weighted per channel)",
        "",
        "## Results",
        "",
        main_table_markdown(report),
        _reference_line(report),
        "",
        _submission_line(report),
        "",
        "## Leaderboard: attention mechanisms as localization cues (by cue mIoU)",
        "",
        leaderboard_markdown(report.get("leaderboard") or []),
        "## The paper's claims",
        "",
        claims_markdown(report.get("claims")),
        "## Do the differences exceed the seed noise?",
        "",
        _comparison_markdown(report),
        "## Stages",
        "",
        stages_table_markdown(report),
        "## Figures",
        "",
    ]
    from .figures import FIGURE_TITLES

    parts += ["Each figure is also a vector PDF, and (except the attention maps) a CSV of the numbers of "
              "`report.json` it shows, beside its PNG.", ""]
    for key, title in FIGURE_TITLES:
        rel = (report.get("figures") or {}).get(key)
        links = f"[PDF]({rel[:-4]}.pdf)" + ("" if key == "attention_grid" else f" · [CSV]({rel[:-4]}.csv)") \
            if rel else ""
        parts += [f"### {title}", "", f"![{title}]({rel})" if rel else "(not drawn; see the notes)", ""]
        parts += [links, ""] if links else []
    parts += [
        "## How to read this",
        "",
        "- mIoU, mAP, seed precision/recall and weak/full are in %; AUC and attention overlap are fractions "
        "(attention overlap: the mean L_AS of Eq. 3 between each target class's map and the most confusing "
        "class's map on the val split, lower means better separated attention); "
        "cue τ* is the background threshold with the best cue mIoU.",
        "- cue mIoU: the thresholded attention maps against the ground truth of the cue split; "
        "seed P/R: the SEC seeds' pixel precision and recall; seg mIoU: the segmenter on the val split "
        "without and with the dense CRF.",
        "- ± is the sample standard deviation over seeds. WSSS results move by about 2 mIoU between seeds, "
        "so a difference under ~2 mIoU (or under twice its standard error) is within seed noise.",
        "",
    ]
    notes = report.get("notes") or []
    if notes:
        parts += ["## Notes", "", *[f"- {t}" for t in notes], ""]
    return "\n".join(parts)


# --------------------------------------------------------------------------- figures

def draw_figures(report: dict[str, Any], summary: dict[str, Any], fig_dir: Path, show_grid: bool,
                 notes: list[str], run_dir: Path | None = None,
                 own_stage: dict[str, Any] | Callable[[], dict[str, Any]] | None = None) -> dict[str, str | None]:
    """Draw the figures into ``fig_dir``; return their PNG paths relative to the run folder (None: not drawn).

    The data figures come from ``report`` alone (:mod:`pipeline.figures`); the attention grid from the
    rows' extraction folders (``maps_dir``, relative to ``run_dir`` unless absolute). ``own_stage``
    (or what it returns) becomes ``report["stages"]["report"]`` just before the stages figure, drawn
    last, so that figure shows the report stage too.
    """
    from .figures import FIGURE_TITLES, draw_data_figures

    drawn = draw_data_figures(report, fig_dir, notes, skip=("stages",))
    figures: dict[str, str | None] = {key: drawn.get(key) for key, _ in FIGURE_TITLES}
    figures["attention_grid"] = _attention_grid(report, summary, fig_dir, show_grid, notes,
                                                Path(run_dir) if run_dir is not None else fig_dir.parent)
    if own_stage is not None:
        report["stages"]["report"] = own_stage() if callable(own_stage) else own_stage
    figures.update(draw_data_figures(report, fig_dir, notes, only=("stages",)))
    return figures


def _attention_grid(report: dict[str, Any], summary: dict[str, Any], fig_dir: Path, show_grid: bool,
                    notes: list[str], base: Path) -> str | None:
    """The grid of attention maps (PNG, and PDF of the same picture); None with a note when not drawn."""
    if not show_grid:
        notes.append("figure attention_grid.png not drawn: turned off")
        return None
    dirs = list(dict.fromkeys(str(r["maps_dir"]) for r in report["rows"] if r.get("maps_dir")))
    dirs = [str(base / d) for d in dirs if (base / d).is_dir()]
    if not dirs:
        notes.append("figure attention_grid.png not drawn: no row has an extraction folder (maps_dir) on disk")
        return None
    try:
        import numpy as np
        from PIL import Image

        from cues.show import show_maps
        from sharpen_core.config import config_from_dict
        from sharpen_core.plots import image_pdf

        raw = json.loads(json.dumps(summary.get("config") or {}))
        if summary.get("dataset_root"):
            raw.setdefault("data", {})["root"] = str(summary["dataset_root"])
        cfg = config_from_dict(raw, source=str(summary.get("config_source") or "<report>"))
        show_maps(cfg, fig_dir / "attention_grid.png", maps_dirs=dirs, count=4)
        with Image.open(fig_dir / "attention_grid.png") as im:
            image_pdf(np.asarray(im.convert("RGB")), fig_dir / "attention_grid.pdf")
        return f"{FIGURES_DIR}/attention_grid.png"
    except Exception as e:  # a figure must never cost the report
        notes.append(f"figure attention_grid.png not drawn: {type(e).__name__}: {e}")
        return None


# --------------------------------------------------------------------------- the stage

def build_report(summary: dict[str, Any]) -> dict[str, Any]:
    """The ``report.json`` content without figures (pure: no files read or written)."""
    rows, reference, notes = aggregate(summary)
    seeds = list(summary.get("seeds") or [])
    n_seeds = len(summary.get("per_seed") or []) or 1
    report: dict[str, Any] = {
        "name": summary.get("name"),
        "config_source": summary.get("config_source"),
        "dataset_root": summary.get("dataset_root"),
        "val_split": summary.get("val_split"),
        "cue_split": summary.get("cue_split"),
        "seeds": seeds,
        "n_seeds": n_seeds,
        "rows": rows,
        **{f + suffix: reference[f + suffix] for f in FULL_FIELDS for suffix in ("", "_std", "_values")},
        "full_per_class_iou": reference["full_per_class_iou"],
        "full_supervision": reference,
        "comparison": compare_rows(rows, n_seeds),
        "claims": paper_claims(rows, n_seeds),
        "leaderboard": leaderboard(rows),
        "stages": aggregate_stages(summary),
        **_run_totals(summary),
        "submission": summary.get("submission"),
        "config": summary.get("config"),
        "classifiers": aggregate_classifiers(summary),
        "training": aggregate_training(summary, notes),
        "figures": {},
        "notes": notes,
    }
    return report


def write_report(run_dir: str | Path, summary: dict[str, Any], show_grid: bool = True,
                 own_stage: dict[str, Any] | Callable[[], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Write ``report.json``, ``report.md`` and ``figures/`` under ``run_dir``; return the report.json content.

    ``own_stage`` (or what it returns, called before the last figure, the stages one) becomes
    ``stages["report"]``: the report stage's own wall time and memory, which its stage record cannot
    hold yet.
    """
    run_dir = Path(run_dir)
    report = build_report(summary)
    fig_dir = run_dir / FIGURES_DIR
    fig_dir.mkdir(parents=True, exist_ok=True)
    report["figures"] = draw_figures(report, summary, fig_dir, show_grid, report["notes"], run_dir, own_stage)
    write_json_atomic(run_dir / "report.json", report)
    write_bytes_atomic(run_dir / "report.md", report_markdown(report).encode())
    return report


def stage_entry(wall_seconds: float | None, peak_rss_mib: float | None, status: str = "done") -> dict[str, Any]:
    """A ``report["stages"]`` entry for one run (one seed): the numbers, no std, one value each."""
    return {"status": status, "wall_seconds": wall_seconds, "wall_seconds_std": None,
            "wall_seconds_values": [wall_seconds], "peak_rss_mib": peak_rss_mib, "peak_rss_mib_std": None,
            "peak_rss_mib_values": [peak_rss_mib]}


def _read_json_file(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DatasetError(path, f"not valid JSON ({e}); expected the file `sharpen run` wrote") from None


def _run_config(run_dir: Path) -> Any:
    """The config a run folder was made with (its ``config.toml``), under the source the run recorded."""
    from sharpen_core.config import ConfigError, load_config

    path = run_dir / "config.toml"
    if not path.is_file():
        raise ConfigError(f"{path}: not found; expected a run folder made by `sharpen run` (config.toml, stages/, "
                          "report.json), or the root of a --seeds run (seed-<s>/ folders)")
    cfg = load_config(path)
    for name in ("run.json", "report.json"):
        source = (_read_json_file(run_dir / name) or {}).get("config_source")
        if source:
            cfg.source = source
            break
    return cfg


def _run_seeds(run_dir: Path) -> list[int] | None:
    """The seeds of a ``--seeds N`` root folder (its run.json, else its seed-<s>/ folders); None for one run."""
    if (run_dir / "config.toml").is_file():
        return None
    listed = (_read_json_file(run_dir / "run.json") or {}).get("seeds")
    if listed:
        return [int(s) for s in listed]
    found = sorted(int(p.parent.name[5:]) for p in run_dir.glob("seed-*/config.toml") if p.parent.name[5:].isdigit())
    return found or None


def report_run(run_dir: str | Path, cfg: Any = None, seeds: Sequence[int] | None = None,
               own_stage: Callable[[], dict[str, Any]] | None = None, each_seed: bool = True) -> dict[str, Any]:
    """Write the report of a run folder from its stages' JSON files (nothing is rerun); return report.json.

    The report stage of ``sharpen run`` calls it with the run's ``cfg`` and ``own_stage`` (its wall time
    and memory); ``sharpen report --run-dir DIR`` without: the config is the folder's ``config.toml`` (its
    source as ``run.json`` recorded it), the report stage's own numbers are those the run recorded (the
    existing ``report.json``, else the stage record), so an unchanged or copied folder gets the same
    ``report.json`` byte for byte. A ``--seeds N`` root folder gets the report over its seeds (and, with
    ``each_seed``, every ``seed-<s>/`` its own).
    """
    from .run import RunLayout, collect_summary

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DatasetError(run_dir, "run folder not found")
    seeds = list(seeds) if seeds is not None else _run_seeds(run_dir)
    if seeds is not None and cfg is None:
        summaries = []
        for s in seeds:
            seed_dir = run_dir / f"seed-{s}"
            if each_seed:
                report_run(seed_dir)
            summaries.append(collect_summary(_run_config(seed_dir), RunLayout(seed_dir)))
        summary = dict(summaries[0])
        summary["rows"] = [{**r, "maps_dir": f"seed-{seeds[0]}/{r['maps_dir']}" if r.get("maps_dir") else None}
                           for r in summary["rows"]]  # the attention grid shows the first seed's maps
        summary["seeds"] = list(seeds)
        summary["per_seed"] = summaries
        return write_report(run_dir, summary)
    if own_stage is None:
        previous = ((_read_json_file(run_dir / "report.json") or {}).get("stages") or {}).get("report")
        record = _read_json_file(RunLayout(run_dir).stage_record("report"))
        own = previous or (stage_entry(record.get("wall_seconds"), record.get("peak_rss_mib"))
                           if record else None)
        own_stage = (lambda: own) if own is not None else None
    cfg = cfg if cfg is not None else _run_config(run_dir)
    return write_report(run_dir, collect_summary(cfg, RunLayout(run_dir), skip_stages=("report",)),
                        own_stage=own_stage)


# --------------------------------------------------------------------------- README

def update_readme_table(readme_path: str | Path, table_md: str, begin: str = "<!-- report-table:begin -->",
                        end: str = "<!-- report-table:end -->") -> None:
    """Replace the text between ``begin`` and ``end`` in the README with ``table_md`` (atomic write).

    Raises :class:`DatasetError` naming the file when a marker is missing, repeated or out of order.
    """
    path = Path(readme_path)
    if not path.is_file():
        raise DatasetError(path, "README not found")
    text = path.read_text()
    for marker in (begin, end):
        count = text.count(marker)
        if count != 1:
            raise DatasetError(path, f"expected the marker {marker!r} exactly once, found it {count} times; "
                               f"put {begin!r} and {end!r} on their own lines where the table goes")
    i, j = text.index(begin), text.index(end)
    if j < i:
        raise DatasetError(path, f"the marker {end!r} comes before {begin!r}")
    new = text[:i + len(begin)] + "\n" + table_md.strip("\n") + "\n" + text[j:]
    write_bytes_atomic(path, new.encode())


def readme_table_from_run(run_dir: str | Path, readme_path: str | Path) -> str:
    """Regenerate the README table from ``run_dir/report.json``; return the table written."""
    path = Path(run_dir) / "report.json"
    if not path.is_file():
        raise DatasetError(path, "no report here; run `sharpen run` to the report stage first")
    table = main_table_markdown(json.loads(path.read_text()))
    update_readme_table(readme_path, table)
    return table
