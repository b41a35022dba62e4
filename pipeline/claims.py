"""The seed paper's three claims, each judged against the seed-to-seed spread (docs/method.md §2, §3, §6).

(a) channel-weighted attention gives better localization cues (cue mIoU) and a better final segmenter
    (val mIoU, with CRF where measured) than Grad-CAM and Grad-CAM++, compared on the same classifier;
(b) ICASC training raises classification mAP over the plain classifier (each ICASC variant of the run,
    ``icasc``, ``icasc@val``, ..., vs ``baseline``);
(c) ICASC separates the target class's attention from the most confusing class's, measured on maps it was
    not trained on (docs/method.md §2.7, §6.4): a lower attention overlap L_AS (Eq. 3, val split) of
    Grad-CAM maps at the last layer and of Grad-CAM and channel-weighted maps at the inner layer, and a
    larger KS distance between target and most-confusing-class probabilities (§6.3), than the plain
    classifier's; per ICASC variant. The overlap of the maps the variant trains on at the last layer
    (channel-weighted for ``icasc``, Grad-CAM for ``icasc-gradcam``: its own objective, L_AS^last) is shown
    as a reference row that does not enter the verdict.

The rule, per comparison of two report rows on one metric (means over seeds ``m_1`` for the side the
paper says is better, ``m_2`` for the other): the gain ``Δ = m_1 − m_2`` (``m_2 − m_1`` where lower is
better) is compared with ``threshold = max(2·s_p, 0.02)``, ``s_p`` the pooled sample standard deviation
``sqrt(((n_1−1)s_1² + (n_2−1)s_2²) / (n_1+n_2−2))`` (0.02: the 2 mIoU points WSSS results move between
seeds; with one seed per side only this floor applies). ``Δ > threshold``: "holds"; ``Δ < −threshold``:
"does not hold"; otherwise "within noise". A claim holds when every comparison holds, does not hold
when any comparison goes against it, and is within noise otherwise (reference rows left out); with none
of its rows in the run it is "not measured", and the missing rows are named.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from sharpen_core.errors import UsageError

from .leaderboard import leaderboard_markdown
from .numbers import finite_number as _number
from .numbers import hms
from .start import pretrained_markdown

NOISE_FLOOR = 0.02
HOLDS, FAILS, NOISE, UNMEASURED = "holds", "does not hold", "within noise", "not measured"
RULE = ("gain Δ (claimed-better minus other; other minus claimed-better where lower is better) of the means "
        "over seeds vs threshold = max(2·pooled sample sd, 0.02): Δ > threshold holds, Δ < −threshold does not "
        "hold, else within noise (one seed: 0.02 alone). A claim holds when all its comparisons hold, does not "
        "hold when any goes against it, else within noise.")
STATEMENTS = {
    "a": "channel-weighted attention gives better cues and a better segmenter than Grad-CAM and Grad-CAM++",
    "b": "ICASC training raises classification mAP over the plain classifier",
    "c": "ICASC separates target and most-confusing-class attention better than the plain classifier: lower "
         "attention overlap L_AS on maps it was not trained on, larger KS distance between their probabilities",
}
BASELINE = "baseline"
# claim (c)'s measures: (row field, mechanism, layer, lower is better); pipeline.aggregate.CLASSIFIER_FIELDS
OVERLAP_MEASURES: tuple[tuple[str, str, str], ...] = (
    ("overlap_gradcam_last", "gradcam", "last"), ("overlap_channel_inner", "channel", "inner"),
    ("overlap_gradcam_inner", "gradcam", "inner"), ("overlap_channel_last", "channel", "last"))
KS_METRIC = "cls_ks"
REFERENCE_NOTE = "ICASC's training objective: reference, not in the verdict"


def _stats(row: dict[str, Any], metric: str) -> tuple[float | None, float | None, list[float]]:
    """Mean, sample sd and per-seed values of ``metric`` in a report row (values: the numbers only)."""
    values = [x for x in (_number(v) for v in row.get(metric + "_values") or []) if x is not None]
    mean = _number(row.get(metric))
    if not values and mean is not None:
        values = [mean]
    return mean, _number(row.get(metric + "_std")), values


def pooled_sd(sd_1: float | None, n_1: int, sd_2: float | None, n_2: int) -> float | None:
    """``sqrt(((n_1−1)s_1² + (n_2−1)s_2²) / (n_1+n_2−2))``; None unless both sides have two or more seeds."""
    if sd_1 is None or sd_2 is None or n_1 < 2 or n_2 < 2:
        return None
    return math.sqrt(((n_1 - 1) * sd_1 ** 2 + (n_2 - 1) * sd_2 ** 2) / (n_1 + n_2 - 2))


def judge(gain: float, spread: float | None, floor: float = NOISE_FLOOR) -> tuple[float, str]:
    """(threshold, verdict) of a gain in the claim's direction against ``max(2·spread, floor)``."""
    threshold = max(2.0 * spread, floor) if spread is not None else floor
    if gain > threshold:
        return threshold, HOLDS
    if gain < -threshold:
        return threshold, FAILS
    return threshold, NOISE


def compare(better: dict[str, Any], other: dict[str, Any], metric: str, lower_is_better: bool = False
            ) -> dict[str, Any] | None:
    """One comparison of two report rows on ``metric``; None when either row lacks the number."""
    m1, s1, v1 = _stats(better, metric)
    m2, s2, v2 = _stats(other, metric)
    if m1 is None or m2 is None:
        return None
    gain = (m2 - m1) if lower_is_better else (m1 - m2)
    spread = pooled_sd(s1, len(v1), s2, len(v2))
    threshold, verdict = judge(gain, spread)
    return {"metric": metric, "lower_is_better": lower_is_better,
            "better": _label(better), "better_mean": m1, "better_std": s1, "better_values": v1,
            "other": _label(other), "other_mean": m2, "other_std": s2, "other_values": v2,
            "gain": gain, "pooled_sd": spread, "threshold": threshold, "verdict": verdict}


def _label(row: dict[str, Any]) -> str:
    mech = row.get("mechanism")
    return f"{row.get('classifier')}/{mech}" if mech else str(row.get("classifier"))


def _find(rows: Sequence[dict[str, Any]], classifier: str, mechanism: str | None = None) -> dict[str, Any] | None:
    """The row of (classifier, mechanism); with ``mechanism`` None, the classifier's first row."""
    for r in rows:
        if r.get("classifier") == classifier and (mechanism is None or r.get("mechanism") == mechanism):
            return r
    return None


def trained_mechanism(variant: str) -> str | None:
    """The attention mechanism ``variant``'s ICASC losses train on (``classify.train.check_variant``); None for
    the baseline and for a name that is no variant."""
    from classify.train import check_variant
    from sharpen_core.config import ConfigError

    try:
        return check_variant(variant)
    except ConfigError:
        return None


def icasc_variants(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The ICASC variants among the rows' classifiers (``icasc``, ``icasc-gradcam``, ``icasc@val``, ...), in order."""
    names = dict.fromkeys(str(r.get("classifier")) for r in rows)
    return [n for n in names if trained_mechanism(n) is not None]


def _claim(key: str, comparisons: list[dict[str, Any] | None], missing: list[str], variant: str | None = None
           ) -> dict[str, Any]:
    """A claim's item; its verdict from the comparisons without ``in_verdict: False`` (reference rows)."""
    done = [c for c in comparisons if c is not None]
    verdicts = [c["verdict"] for c in done if c.get("in_verdict", True)]
    if not done:
        verdict = UNMEASURED
    elif all(v == HOLDS for v in verdicts):
        verdict = HOLDS
    elif FAILS in verdicts:
        verdict = FAILS
    else:
        verdict = NOISE
    item = {"claim": key, "statement": STATEMENTS[key], "verdict": verdict, "comparisons": done, "missing": missing}
    if variant is not None:
        item["variant"] = variant
    return item


def _seg_metric(a: dict[str, Any], b: dict[str, Any]) -> str:
    """``seg_miou_crf`` when both rows have it, else ``seg_miou``."""
    return "seg_miou_crf" if all(_number(r.get("seg_miou_crf")) is not None for r in (a, b)) else "seg_miou"


def claim_channel_beats_gradcam(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Claim (a): on each classifier with a channel row, channel vs gradcam and vs gradcampp (cue and seg mIoU)."""
    comparisons: list[dict[str, Any] | None] = []
    missing: list[str] = []
    variants = list(dict.fromkeys(str(r.get("classifier")) for r in rows))
    found = False
    for variant in variants:
        channel = _find(rows, variant, "channel")
        rivals = [(m, _find(rows, variant, m)) for m in ("gradcam", "gradcampp")]
        if channel is None or all(r is None for _, r in rivals):
            continue
        found = True
        for mechanism, rival in rivals:
            if rival is None:
                missing.append(f"{variant}/{mechanism}")
                continue
            for metric in ("cue_miou", _seg_metric(channel, rival)):
                c = compare(channel, rival, metric)
                comparisons.append(c)
                if c is None:
                    missing.append(f"{metric} of {variant}/channel or {variant}/{mechanism}")
    if not found:
        missing.append("a classifier with cue sets <variant>:channel and <variant>:gradcam or :gradcampp")
    return _claim("a", comparisons, missing)


def _variants_or_icasc(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The ICASC variants of the run; ``["icasc"]`` (reported missing) when there is none."""
    return icasc_variants(rows) or ["icasc"]


def claim_icasc_raises_map(rows: Sequence[dict[str, Any]], variant: str = "icasc") -> dict[str, Any]:
    """Claim (b): classification mAP of the ICASC ``variant`` vs ``baseline``."""
    icasc, base = _find(rows, variant), _find(rows, BASELINE)
    missing = [name for name, r in ((variant, icasc), (BASELINE, base)) if r is None]
    c = compare({**icasc, "mechanism": None}, {**base, "mechanism": None}, "cls_map") if not missing else None
    if not missing and c is None:
        missing.append(f"cls_map of {variant} or {BASELINE}")
    return _claim("b", [c], missing, variant)


def claim_icasc_separates_attention(rows: Sequence[dict[str, Any]], variant: str = "icasc") -> dict[str, Any]:
    """Claim (c) for the ICASC ``variant`` vs ``baseline`` (classifier-level numbers of their rows).

    Comparisons, in order: the overlap L_AS (lower is better) of Grad-CAM at the last layer, channel-weighted
    and Grad-CAM at the inner layer, channel-weighted at the last layer, then the KS distance (higher is
    better). The overlap of the mechanism ``variant`` trains with at the last layer (its L_AS^last) is a
    reference row (``in_verdict: False``, listed last) and stays out of the verdict; the item names the
    metrics its verdict comes from (``verdict_from``) and the reference ones (``reference``).
    """
    icasc, base = _find(rows, variant), _find(rows, BASELINE)
    missing = [name for name, r in ((variant, icasc), (BASELINE, base)) if r is None]
    trained = trained_mechanism(variant)
    measures = [(metric, True, not (mechanism == trained and layer == "last"))
                for metric, mechanism, layer in OVERLAP_MEASURES] + [(KS_METRIC, False, True)]
    measures.sort(key=lambda m: not m[2])  # the reference rows last
    comparisons: list[dict[str, Any] | None] = []
    if not missing:
        for metric, lower, in_verdict in measures:
            c = compare({**icasc, "mechanism": None}, {**base, "mechanism": None}, metric, lower_is_better=lower)
            if c is None:
                missing.append(f"{metric} of {variant} or {BASELINE}")
                continue
            c["in_verdict"] = in_verdict
            if not in_verdict:
                c["note"] = REFERENCE_NOTE
            comparisons.append(c)
    item = _claim("c", comparisons, missing, variant)
    item["verdict_from"] = [m for m, _, in_verdict in measures if in_verdict]
    item["reference"] = [m for m, _, in_verdict in measures if not in_verdict]
    return item


def paper_claims(rows: Sequence[dict[str, Any]], n_seeds: int) -> dict[str, Any]:
    """``report.json["claims"]``: the rule, the number of seeds and claims (a), (b) and (c), (b) and (c) once
    per ICASC variant of the run (each item's ``variant``)."""
    variants = _variants_or_icasc(rows)
    return {"rule": RULE, "noise_floor": NOISE_FLOOR, "n_seeds": n_seeds,
            "items": [claim_channel_beats_gradcam(rows), *(claim_icasc_raises_map(rows, v) for v in variants),
                      *(claim_icasc_separates_attention(rows, v) for v in variants)]}


# --------------------------------------------------------------------------- text

PERCENT_METRICS = frozenset({"cue_miou", "seg_miou", "seg_miou_crf", "cls_map"})
METRIC_NAMES = {"cue_miou": "cue mIoU", "seg_miou": "seg mIoU", "seg_miou_crf": "seg mIoU+CRF", "cls_map": "cls mAP",
                "attention_overlap": "attention overlap L_AS",
                "overlap_gradcam_last": "L_AS of Grad-CAM maps, last layer",
                "overlap_channel_last": "L_AS of channel-weighted maps, last layer",
                "overlap_gradcam_inner": "L_AS of Grad-CAM maps, inner layer",
                "overlap_channel_inner": "L_AS of channel-weighted maps, inner layer",
                KS_METRIC: "KS distance, target vs most confusing class probabilities (higher is better)"}


SHORT_NAMES = {"overlap_gradcam_last": "Grad-CAM L_AS at the last layer",
               "overlap_channel_last": "channel-weighted L_AS at the last layer",
               "overlap_gradcam_inner": "Grad-CAM L_AS at the inner layer",
               "overlap_channel_inner": "channel-weighted L_AS at the inner layer", KS_METRIC: "KS distance"}


def _title(item: dict[str, Any]) -> str:
    """``(c)``, or ``(c, icasc@val)`` for an item of one ICASC variant."""
    return f"({item['claim']}, {item['variant']})" if item.get("variant") else f"({item['claim']})"


def _metric_text(c: dict[str, Any], direction: bool = True) -> str:
    """The metric's name, with "(lower is better)" (``direction``) and a reference row's note."""
    m = c["metric"]
    text = METRIC_NAMES.get(m, m) + (" (lower is better)" if direction and c["lower_is_better"] else "")
    return text + (f" ({c['note']})" if c.get("in_verdict", True) is False and c.get("note") else "")


def _verdict_from(item: dict[str, Any]) -> str | None:
    """"verdict from: ..." of an item that names its measures (claim (c)), else None."""
    if "verdict_from" not in item:
        return None
    used = "; ".join(SHORT_NAMES.get(m, m) for m in item["verdict_from"])
    ref = "; ".join(SHORT_NAMES.get(m, m) for m in item.get("reference") or [])
    return f"verdict from: {used}" + (f" (not from {ref}: {REFERENCE_NOTE.split(':')[0]})" if ref else "")


def _verdict_text(c: dict[str, Any]) -> str:
    """A comparison's verdict; in parentheses for a reference row (not in the claim's verdict)."""
    return c["verdict"] if c.get("in_verdict", True) else f"({c['verdict']})"


def _fmt(metric: str, value: float | None, sd: float | None = None, signed: bool = False) -> str:
    if value is None:
        return "–"
    scale, digits = (100.0, 1) if metric in PERCENT_METRICS else (1.0, 3)
    text = f"{scale * value:+.{digits}f}" if signed else f"{scale * value:.{digits}f}"
    return text + (f" ± {scale * sd:.{digits}f}" if sd is not None else "")


def claims_markdown(claims: dict[str, Any] | None) -> str:
    """The report.md section: one table per claim (mean ± sd over seeds, gain, threshold, verdict)."""
    if not claims:
        return "No claims evaluated.\n"
    n = claims.get("n_seeds", 1)
    lines = [f"Over {n} seed{'s' if n != 1 else ''}. Rule: {claims['rule']}"
             + ("" if n > 1 else " One seed: rerun with `--seeds 3` to measure the spread."), ""]
    for item in claims["items"]:
        lines += [f"### {_title(item)} {item['statement']}: **{item['verdict']}**", ""]
        used = _verdict_from(item)
        if used:
            lines += [used[0].upper() + used[1:] + ".", ""]
        if item["comparisons"]:
            lines += ["| metric | claimed better | other | gain Δ | threshold | verdict |",
                      "|---|---|---|---:|---:|---|"]
            for c in item["comparisons"]:
                m = c["metric"]
                lines.append(f"| {_metric_text(c)} | "
                             f"{c['better']} {_fmt(m, c['better_mean'], c['better_std'])} | "
                             f"{c['other']} {_fmt(m, c['other_mean'], c['other_std'])} | "
                             f"{_fmt(m, c['gain'], signed=True)} | {_fmt(m, c['threshold'])} | {_verdict_text(c)} |")
            lines.append("")
        if item["missing"]:
            lines += [f"Missing from this run: {'; '.join(item['missing'])}.", ""]
    return "\n".join(lines)


def _best(rows: list[dict[str, Any]], field: str) -> dict[str, Any] | None:
    scored = [r for r in rows if _number(r.get(field)) is not None]
    return max(scored, key=lambda r: r[field]) if scored else None


def _standing_lines(report: dict[str, Any]) -> list[str]:
    """Where the comparison stands, from the rows: the best cue set's gain over the floors, the best weak
    segmenter against the fully supervised reference, the cue sets whose best τ is at a sweep edge."""
    rows = [r for r in report.get("rows") or [] if r.get("mechanism")]
    floors = report.get("floors") or []
    out = []
    cue = _best(rows, "cue_miou")
    if cue is not None:
        best_floor = max((f for f in floors if _number(f.get("best_miou")) is not None),
                         key=lambda f: f["best_miou"], default=None)
        gain = (f", {_fmt('cue_miou', cue.get('cue_gain_over_floor'), cue.get('cue_gain_over_floor_std'), signed=True)}"
                f" over the best floor ({best_floor['name']} {_fmt('cue_miou', best_floor['best_miou'], best_floor.get('best_miou_std'))})"
                if best_floor is not None and _number(cue.get("cue_gain_over_floor")) is not None else "")
        out.append(f"- best cue set: {cue['label']} {_fmt('cue_miou', cue['cue_miou'], cue.get('cue_miou_std'))} cue mIoU{gain}")
    seg = _best(rows, "seg_miou_crf") or _best(rows, "seg_miou")
    if seg is not None:
        field = "seg_miou_crf" if _number(seg.get("seg_miou_crf")) is not None else "seg_miou"
        ratio = _number(seg.get("weak_full_ratio"))
        out.append(f"- best weak segmenter: {seg['label']} {_fmt('seg_miou', seg[field], seg.get(field + '_std'))} "
                   f"val mIoU{' with CRF' if field == 'seg_miou_crf' else ''}"
                   + (f", {ratio:.2f} × the fully supervised reference" if ratio is not None else ""))
    edge = [r["label"] for r in rows if r.get("cue_tau_at_edge")]
    out.append("- cue sets whose best τ is at an end of the sweep (in at least one seed): "
               + (", ".join(edge) if edge else "none"))
    return ["", "Where the comparison stands:", "", *out] if rows else []


def findings_markdown(report: dict[str, Any]) -> str:
    """The README's "Findings" block from a report's ``claims``: one bullet per claim and per comparison."""
    claims = report.get("claims")
    if not claims:
        raise UsageError("the report has no 'claims'; rerun the report stage (`sharpen run ... --from report`)")
    n = claims.get("n_seeds", 1)
    lines = [f"From `{report.get('name')}` ({report.get('config_source')}), {n} seed{'s' if n != 1 else ''} "
             f"({', '.join(str(s) for s in report.get('seeds') or [])}); mean ± sd over seeds. "
             f"Rule: {claims['rule']}", ""]
    for item in claims["items"]:
        used = _verdict_from(item)
        lines.append(f"- **{_title(item)} {item['statement']}: {item['verdict']}.**"
                     + (f" {used[0].upper() + used[1:]}." if used else ""))
        for c in item["comparisons"]:
            m = c["metric"]
            lines.append(f"  - {_metric_text(c, direction=False)}: {c['better']} "
                         f"{_fmt(m, c['better_mean'], c['better_std'])} vs {c['other']} "
                         f"{_fmt(m, c['other_mean'], c['other_std'])}, Δ "
                         f"{_fmt(m, c['gain'], signed=True)} (threshold {_fmt(m, c['threshold'])}): {_verdict_text(c)}")
        if item["missing"]:
            lines.append(f"  - missing from the run: {'; '.join(item['missing'])}")
    with_crf = _number(report.get("full_supervision_miou_crf"))
    crf = with_crf is not None
    full = with_crf if crf else _number(report.get("full_supervision_miou"))
    if full is not None:
        sd = _number(report.get("full_supervision_miou_crf_std" if crf else "full_supervision_miou_std"))
        lines += ["", f"The same segmenter trained on the ground-truth masks (the fully supervised reference): "
                      f"val mIoU{' with CRF' if crf else ''} {_fmt('seg_miou', full, sd)}."]
    lines += _standing_lines(report)
    if "pretrained" in report:
        lines += ["", pretrained_markdown(report.get("pretrained"), report.get("config"))]
    wall, peak = _number(report.get("total_wall_seconds")), _number(report.get("peak_rss_mib"))
    if wall is not None:
        lines += ["", f"The run's stages took {hms(wall)} in all ({n} seed{'s' if n != 1 else ''})"
                      + (f", peak resident memory {peak / 1024:.2f} GiB" if peak is not None else "")
                      + " (the stage records; per stage in report.md)."]
    board = report.get("leaderboard")
    if board:
        lines += ["", f"Every cue set of the run ranked by its cues' pseudo-label mIoU (mean ± sd over seeds; "
                      "seg mIoU+CRF only where a segmenter was trained):", "", leaderboard_markdown(board).rstrip("\n")]
    return "\n".join(lines) + "\n"
