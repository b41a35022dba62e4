"""The report of ``sharpen run``: ``report.json``, ``report.md`` and ``figures/`` in the run folder.

:func:`write_report` takes the ``summary`` that :mod:`pipeline.run` assembles (one row per classifier
variant × mechanism, the fully supervised reference, per-stage timings, the config) and writes

* ``report.json``: the rows with every number, the reference, the stages, the config, the figures
  and notes; with several seeds each numeric field holds the mean over seeds, plus ``<field>_std``
  (sample standard deviation, ``ddof=1``; ``None`` with fewer than two values) and ``<field>_values``
  (one entry per seed, ``None`` where that seed did not produce it);
* ``report.md``: the main table (percentages, ``mean ± std`` with several seeds), the reference, the
  submission, a comparison of every row with the best one against the seed noise, the stage table,
  the figures and a note on reading them;
* ``figures/``: ``per_class_iou.png``, ``tau_curves.png``, ``attention_grid.png`` (through
  :func:`cues.show.show_maps`) and ``stages.png``; a figure that cannot be drawn is skipped with a note.

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

from data.io import write_bytes_atomic, write_json_atomic

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
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


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
    s = int(round(float(seconds)))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


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
    lines.append(f"| **total** | | {_seconds(report.get('total_wall_seconds'), None)} | "
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
        "",
        "## Results",
        "",
        main_table_markdown(report),
        _reference_line(report),
        "",
        _submission_line(report),
        "",
        "## Do the differences exceed the seed noise?",
        "",
        _comparison_markdown(report),
        "## Stages",
        "",
        stages_table_markdown(report),
        "## Figures",
        "",
    ]
    titles = {"per_class_iou": "Per-class IoU (val, with CRF)",
              "tau_curves": "Cue mIoU against the background threshold τ",
              "attention_grid": "Attention maps", "stages": "Wall time per stage"}
    for key, title in titles.items():
        rel = (report.get("figures") or {}).get(key)
        parts += [f"### {title}", "", f"![{title}]({rel})" if rel else "(not drawn; see the notes)", ""]
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

def best_tau_index(curve: dict[str, Any], best_tau: float | None = None) -> int | None:
    """The point of ``curve`` to mark: the one at ``best_tau`` when the curve has it, else its maximum."""
    taus, miou = curve.get("tau") or [], curve.get("miou") or []
    if _is_number(best_tau):
        near = [i for i, t in enumerate(taus) if abs(float(t) - float(best_tau)) < 1e-6]
        if near:
            return near[0]
    finite = [(float(v), -i) for i, v in enumerate(miou) if _is_number(v)]
    return -max(finite)[1] if finite else None


def _figure(notes: list[str], name: str, draw: Callable[[], Any]) -> bool:
    """Run ``draw``; on failure keep going and say why in the notes."""
    try:
        draw()
        return True
    except Exception as e:  # a figure must never cost the report
        notes.append(f"figure {name} not drawn: {type(e).__name__}: {e}")
        return False


def draw_figures(report: dict[str, Any], summary: dict[str, Any], fig_dir: Path, show_grid: bool,
                 notes: list[str]) -> dict[str, str | None]:
    """Draw the figures into ``fig_dir``; return their paths relative to the run folder (None: not drawn)."""
    from .figures import REFERENCE_COLOUR, grouped_bars, horizontal_bars, plot_curves, series_colour

    rows = report["rows"]
    figures: dict[str, str | None] = {"per_class_iou": None, "tau_curves": None, "attention_grid": None,
                                      "stages": None}
    rel = f"{FIGURES_DIR}/"

    # per-class IoU: one bar per row and the reference
    ref = report["full_supervision"]
    series = [(r["label"], r.get("per_class_iou") or {}) for r in rows]
    if ref.get("full_per_class_iou"):
        series.append(("full supervision", ref["full_per_class_iou"]))
    classes: list[str] = []
    for _, d in series:
        classes += [c for c in d if c not in classes]
    series = [(label, d) for label, d in series if any(_is_number(v) for v in d.values())]
    if classes and series:
        colours = [REFERENCE_COLOUR if label == "full supervision" else series_colour(k)
                   for k, (label, _) in enumerate(series)]
        if _figure(notes, "per_class_iou.png", lambda: grouped_bars(
                classes, [(label, [d.get(c) for c in classes]) for label, d in series],
                fig_dir / "per_class_iou.png", title="Per-class IoU on val (segmenter with CRF)", ylabel="IoU",
                colours=colours)):
            figures["per_class_iou"] = rel + "per_class_iou.png"
    else:
        notes.append("figure per_class_iou.png not drawn: no per-class IoU in any row")

    # tau curves, best tau marked
    with_curve = [r for r in rows if r.get("tau_curve") and r["tau_curve"].get("tau")]
    curves = [(r["label"], r["tau_curve"]) for r in with_curve]
    if curves:
        marks = [best_tau_index(r["tau_curve"], r.get("cue_best_tau")) for r in with_curve]
        if _figure(notes, "tau_curves.png", lambda: plot_curves(
                [(label, c["tau"], c["miou"]) for label, c in curves], fig_dir / "tau_curves.png",
                title="Cue mIoU against the background threshold tau", xlabel="background threshold tau",
                ylabel="cue mIoU", marks=marks)):
            figures["tau_curves"] = rel + "tau_curves.png"
    else:
        notes.append("figure tau_curves.png not drawn: no row has a tau curve")

    # attention maps of the rows' extraction folders
    if not show_grid:
        notes.append("figure attention_grid.png not drawn: turned off")
    else:
        dirs = list(dict.fromkeys(str(r["maps_dir"]) for r in rows if r.get("maps_dir")))
        dirs = [d for d in dirs if Path(d).is_dir()]
        if not dirs:
            notes.append("figure attention_grid.png not drawn: no row has an extraction folder (maps_dir) on disk")
        else:
            def grid() -> None:
                from cues.show import show_maps

                from .config import config_from_dict

                raw = json.loads(json.dumps(summary.get("config") or {}))
                if summary.get("dataset_root"):
                    raw.setdefault("data", {})["root"] = str(summary["dataset_root"])
                cfg = config_from_dict(raw, source=str(summary.get("config_source") or "<report>"))
                show_maps(cfg, fig_dir / "attention_grid.png", maps_dirs=dirs, count=4)

            if _figure(notes, "attention_grid.png", grid):
                figures["attention_grid"] = rel + "attention_grid.png"

    # stages
    stages = [(name, st) for name, st in report["stages"].items() if _is_number(st.get("wall_seconds"))]
    if stages:
        def bars() -> None:
            horizontal_bars([n for n, _ in stages], [st["wall_seconds"] for _, st in stages], fig_dir / "stages.png",
                            title="Wall time per stage (s), peak RSS",
                            annotations=[f"({st['peak_rss_mib']:.0f} MiB)" if _is_number(st.get("peak_rss_mib"))
                                         else "" for _, st in stages], unit=" s")

        if _figure(notes, "stages.png", bars):
            figures["stages"] = rel + "stages.png"
    return figures


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
        "stages": aggregate_stages(summary),
        "total_wall_seconds": summary.get("total_wall_seconds"),
        "peak_rss_mib": summary.get("peak_rss_mib"),
        "submission": summary.get("submission"),
        "config": summary.get("config"),
        "figures": {},
        "notes": notes,
    }
    return report


def write_report(run_dir: str | Path, summary: dict[str, Any], show_grid: bool = True) -> dict[str, Any]:
    """Write ``report.json``, ``report.md`` and ``figures/`` under ``run_dir``; return the report.json content."""
    run_dir = Path(run_dir)
    report = build_report(summary)
    fig_dir = run_dir / FIGURES_DIR
    fig_dir.mkdir(parents=True, exist_ok=True)
    report["figures"] = draw_figures(report, summary, fig_dir, show_grid, report["notes"])
    write_json_atomic(run_dir / "report.json", report)
    write_bytes_atomic(run_dir / "report.md", report_markdown(report).encode())
    return report


# --------------------------------------------------------------------------- README

def update_readme_table(readme_path: str | Path, table_md: str, begin: str = "<!-- report-table:begin -->",
                        end: str = "<!-- report-table:end -->") -> None:
    """Replace the text between ``begin`` and ``end`` in the README with ``table_md`` (atomic write).

    Raises ``ValueError`` naming the file when a marker is missing, repeated or out of order.
    """
    path = Path(readme_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: README not found")
    text = path.read_text()
    for marker in (begin, end):
        count = text.count(marker)
        if count != 1:
            raise ValueError(f"{path}: expected the marker {marker!r} exactly once, found it {count} times; "
                             f"put {begin!r} and {end!r} on their own lines where the table goes")
    i, j = text.index(begin), text.index(end)
    if j < i:
        raise ValueError(f"{path}: the marker {end!r} comes before {begin!r}")
    new = text[:i + len(begin)] + "\n" + table_md.strip("\n") + "\n" + text[j:]
    write_bytes_atomic(path, new.encode())


def readme_table_from_run(run_dir: str | Path, readme_path: str | Path) -> str:
    """Regenerate the README table from ``run_dir/report.json``; return the table written."""
    path = Path(run_dir) / "report.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no report here; run `sharpen run` to the report stage first")
    table = main_table_markdown(json.loads(path.read_text()))
    update_readme_table(readme_path, table)
    return table
