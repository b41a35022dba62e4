"""``report.md`` of a run, from the ``report.json`` content (:func:`pipeline.report.build_report`): the main
table (percentages, ``mean ± std`` with several seeds), the reference, the submission, the comparison of
every row with the best one against the seed noise, the stage table, the leaderboard, the paper's claims,
the figures and a note on reading them. :func:`main_table_markdown` gives the table alone (the README's,
:mod:`pipeline.readme`). Pure functions: nothing is read or written.
"""

from __future__ import annotations

from typing import Any

from .aggregate import CUE_FIELDS, FULL_FIELDS, GAIN_FIELD, RATIO_FIELD
from .claims import claims_markdown
from .leaderboard import FLOOR_COLUMNS, FLOOR_NOTE, SEED_NOTE, TAU_EDGE_NOTE, floor_kind, leaderboard_markdown
from .numbers import hms, is_number
from .start import pretrained_markdown

# How each field of a row is printed, and the table's columns in order.
PERCENT_FIELDS = frozenset({"cls_map", "cue_miou", "seed_precision", "seed_recall", "seg_miou", "seg_miou_crf",
                            RATIO_FIELD, GAIN_FIELD, *CUE_FIELDS, *FULL_FIELDS})
DECIMALS = {"cls_auc": 3, "attention_overlap": 3, "cue_best_tau": 2, "cls_ks": 3}
TABLE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("cls_map", "cls mAP"), ("cls_auc", "AUC"), ("attention_overlap", "attention overlap"),
    ("cue_best_tau", "cue τ*"), ("cue_miou", "cue mIoU"), (GAIN_FIELD, "gain over floor"), ("seed_precision", "seed P"),
    ("seed_recall", "seed R"), ("seed_precision_at_tau", "seed P@τ*"), ("seed_recall_at_tau", "seed R@τ*"),
    ("seg_miou", "seg mIoU"), ("seg_miou_crf", "seg mIoU+CRF"), (RATIO_FIELD, "weak/full"),
)
DASH = "–"
TAU_EDGE_MARK = " ⚠"
CLASSIFIER_COLUMNS: tuple[tuple[str, str], ...] = (
    ("cls_map", "cls mAP"), ("cls_ks", "KS(t, conf) ↑"), ("overlap_gradcam_last", "L_AS Grad-CAM last ↓"),
    ("overlap_channel_last", "L_AS channel last ↓"), ("overlap_gradcam_inner", "L_AS Grad-CAM inner ↓"),
    ("overlap_channel_inner", "L_AS channel inner ↓"),
)
LINEARITY_TIE = 0.05
"""Below this median of |g·ΣA|/2, Grad-CAM++'s maps are channel-weighted's (docs/method.md §6.4)."""


def format_value(field: str, value: float | None, std: float | None = None) -> str:
    """A table cell: percentages with 1 decimal (AUC 3, τ 2, overlap 3 decimals), ``–`` for None."""
    if not is_number(value):
        return DASH
    if field in PERCENT_FIELDS:
        text = f"{100 * float(value):.1f}"
        return text + (f" ± {100 * float(std):.1f}" if is_number(std) else "")
    d = DECIMALS.get(field, 3)
    return f"{float(value):.{d}f}" + (f" ± {float(std):.{d}f}" if is_number(std) else "")

def _floor_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The report's floors as table rows: the floor's kind as classifier, its name as mechanism, its numbers
    under the rows' names (:data:`pipeline.leaderboard.FLOOR_COLUMNS`)."""
    out = []
    for fl in report.get("floors") or []:
        row: dict[str, Any] = {"classifier": f"*{floor_kind(fl.get('name'))}*", "mechanism": fl.get("name"),
                               "cue_tau_at_edge": bool(fl.get("tau_at_edge"))}
        for f, source in FLOOR_COLUMNS.items():
            row[f], row[f + "_std"] = fl.get(source), fl.get(source + "_std")
        out.append(row)
    return out

def table_columns(report: dict[str, Any]) -> list[tuple[str, str]]:
    """The main table's columns: :data:`TABLE_COLUMNS`, the gain over floor only when the report has floors,
    the seeds at τ* only when some row or floor has them (a report written before them keeps its table)."""
    rows = [*(report.get("rows") or []), *(report.get("floors") or [])]
    shown = []
    for f, title in TABLE_COLUMNS:
        if f == GAIN_FIELD and not report.get("floors"):
            continue
        if f in CUE_FIELDS and not any(is_number(r.get(f)) for r in rows):
            continue
        shown.append((f, title))
    return shown

def main_table_markdown(report: dict[str, Any]) -> str:
    """The main table (one line per classifier variant × mechanism, then the floors) as GitHub markdown."""
    columns = table_columns(report)
    header = ["classifier", "mechanism", *[title for _, title in columns]]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * len(columns)) + "|"]
    rows = [*(report.get("rows") or []), *_floor_rows(report)]
    for row in rows:
        cells = [str(row.get("classifier")), row.get("mechanism") or DASH]
        cells += [format_value(f, row.get(f), row.get(f + "_std")) + (TAU_EDGE_MARK if f == "cue_best_tau" and
                  row.get("cue_tau_at_edge") else "") for f, _ in columns]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    notes = []
    if any(row.get("cue_tau_at_edge") for row in rows):
        notes.append(f"{TAU_EDGE_MARK.strip()} {TAU_EDGE_NOTE}")
    if report.get("floors"):
        notes.append(FLOOR_NOTE)
    if any(f in CUE_FIELDS for f, _ in columns):
        notes.append(SEED_NOTE)
    for note in notes:
        lines += ["", note]
    return "\n".join(lines) + "\n"

def classifiers_table_markdown(report: dict[str, Any]) -> str:
    """One line per classifier: mAP, KS distance and the attention overlap L_AS of Grad-CAM and
    channel-weighted maps at the last and the inner layer (claim (c)'s measures, docs/method.md §2.7)."""
    header = ["classifier", *[title for _, title in CLASSIFIER_COLUMNS]]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * len(CLASSIFIER_COLUMNS)) + "|"]
    seen: set[str] = set()
    for row in report.get("rows") or []:
        name = str(row.get("classifier"))
        if name in seen:
            continue
        seen.add(name)
        cells = [name] + [format_value(f, row.get(f), row.get(f + "_std")) for f, _ in CLASSIFIER_COLUMNS]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"

def linearity_lines(report: dict[str, Any]) -> list[str]:
    """Per classifier, why Grad-CAM++ and channel-weighted rows agree (or not): the median and p99 of
    |g·ΣA|/2 at the cue layer (docs/method.md §6.4); none for classifiers without the measurement."""
    out = []
    for name, entry in (report.get("classifiers") or {}).items():
        lin = (entry or {}).get("gradcampp_linearity") or {}
        median, p99 = lin.get("median"), lin.get("p99")
        if not is_number(median):
            continue
        where = f"at layer `{lin.get('layer')}` of `{name}`"
        numbers = f"median |g·ΣA|/2 = {float(median):.2g} (p99 {float(p99):.2g})" if is_number(p99) else \
            f"median |g·ΣA|/2 = {float(median):.2g}"
        if float(median) < LINEARITY_TIE:
            out.append(f"Grad-CAM++ ≈ channel-weighted/2 {where} because {numbers}; the two rows agree by "
                       "construction (Grad-CAM++'s weight Σ g/(2 + g·ΣA) is channel-weighted's Σ g halved while "
                       "|g·ΣA| ≪ 2; docs/method.md §6.4).")
        else:
            out.append(f"Grad-CAM++ and channel-weighted differ {where}: {numbers} is not ≪ 1, so Grad-CAM++'s "
                       "weight Σ g/(2 + g·ΣA) is not channel-weighted's Σ g halved (docs/method.md §6.4).")
    return out

def _hms(seconds: float | None) -> str:
    if not is_number(seconds):
        return DASH
    return hms(seconds)

def _seconds(value: float | None, std: float | None) -> str:
    if not is_number(value):
        return DASH
    return f"{float(value):.1f}" + (f" ± {float(std):.1f}" if is_number(std) else "")

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
    if not any(is_number(ref.get(f)) for f in FULL_FIELDS):
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
    scored = (f"test mIoU {format_value('seg_miou', score)}" if is_number(score)
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
        f"- {pretrained_markdown(report.get('pretrained'), report.get('config'))}",
        "",
        "## Results",
        "",
        main_table_markdown(report),
        _reference_line(report),
        "",
        _submission_line(report),
        "",
        "## Classifiers",
        "",
        "Attention overlap L_AS (Eq. 3, target vs most confusing class, val split; lower is better separated) of "
        "Grad-CAM and channel-weighted maps at the last and the inner layer, and the KS distance between target "
        "and most-confusing-class probabilities (higher is better): claim (c)'s measures (docs/method.md §2.7).",
        "",
        classifiers_table_markdown(report),
        *[f"- {line}" for line in linearity_lines(report)],
        *([""] if linearity_lines(report) else []),
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
        "seed P/R: the SEC seeds' pixel precision and recall at SEC's fixed foreground threshold "
        f"(`cues.fg_threshold` = {cfg_cues.get('fg_threshold')}), seed P@τ*/R@τ*: the same seeds thresholded at "
        "the maps' own τ*; seg mIoU: the segmenter on the val split without and with the dense CRF.",
        "- floors: the cue mIoU of maps that do not localize (each image's labels over the whole image; a centred "
        "prior), scored like the cue sets on the same split; gain over floor: a cue set's cue mIoU minus the "
        "best floor's (per seed, then mean ± std), so a cue set is read as what it adds to knowing the labels.",
        "- ± is the sample standard deviation over seeds. WSSS results move by about 2 mIoU between seeds, "
        "so a difference under ~2 mIoU (or under twice its standard error) is within seed noise.",
        "",
    ]
    notes = report.get("notes") or []
    if notes:
        parts += ["## Notes", "", *[f"- {t}" for t in notes], ""]
    return "\n".join(parts)
