"""The report's figures, drawn from ``report.json`` alone (matplotlib through :mod:`sharpen_core.plots`).

Each figure ``figures/<name>`` is written as ``<name>.png`` (shown in ``report.md``), ``<name>.pdf``
(vector) and ``<name>.csv``: the numbers of ``report.json`` the figure shows, exactly as stored there
(fractions, not percentages; ``*_std`` columns empty with one seed), so a user can replot them in
their own style. With several seeds every figure that has a number per seed shows mean ± sample
standard deviation (error bars, or bands around curves).

* ``tau_curves``: cue mIoU against the background threshold τ (docs/method.md §6), best τ marked
  (``rows[].tau_curve``), the floors as grey dashed reference lines (``floors[].tau_curve``);
* ``per_class_iou``: per-class IoU of each segmenter (val, with CRF) and of the fully supervised
  reference (``rows[].per_class_iou``, ``full_per_class_iou``);
* ``seed_precision_recall``: the SEC seeds' mean precision and recall per cue set (``rows[].seed_*``);
* ``classification_ap``: per-class AP of each classifier, mAP in the legend (``classifiers``);
* ``training_classify``: loss terms per epoch of each classifier, L_cls, L_AS inner/last, L_AC
  (docs/method.md §2; ``training.classify``, from its ``metrics.json``);
* ``training_segment``: loss terms per iteration of each segmenter, seeding, expansion, constrain
  (docs/method.md §4); cross-entropy for the reference (``training.segment``);
* ``stages``: wall time and peak memory per stage (``stages``), drawn last so that it includes the
  report stage's own numbers.

The attention-map grid (pictures, no numbers) is drawn by :func:`cues.show.show_maps` in
:mod:`pipeline.report`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Sequence

from matplotlib.ticker import MaxNLocator

from sharpen_core.numbers import finite
from sharpen_core.plots import (REFERENCE_COLOUR, Bars, Line, draw_grouped_bars, draw_horizontal_bars, draw_lines,
                                figure, legend_below, legend_labels, save_figure, write_csv)

# (key, title) in the order report.md shows them.
FIGURE_TITLES: tuple[tuple[str, str], ...] = (
    ("tau_curves", "Cue mIoU against the background threshold τ"),
    ("per_class_iou", "Per-class IoU (val, with CRF)"),
    ("seed_precision_recall", "SEC seeds: precision and recall"),
    ("attention_grid", "Attention maps"),
    ("classification_ap", "Classifiers: per-class AP (val)"),
    ("training_classify", "Training curves of the classifiers"),
    ("training_segment", "Training curves of the segmenters"),
    ("stages", "Wall time and peak memory per stage"),
)

FLOOR_STYLES: tuple[Any, ...] = ("--", (0, (6, 2, 1, 2)))  # the floors' lines in the τ-curve figure

# Loss terms as metrics.json names them, and as the paper / SEC write them.
TERM_LABELS: dict[str, str] = {
    "train_loss": "L (total, Eq. 6)", "train_cls": "$L_{cls}$", "train_as_inner": "$L_{AS}^{inner}$",
    "train_as_last": "$L_{AS}^{last}$", "train_ac": "$L_{AC}$",
    "loss": "L (total)", "seed": "seeding", "expand": "expansion", "constrain": "constrain",
}


class NothingToDraw(ValueError):
    """The report holds no number this figure would show."""


def _std_list(values: dict[str, Any] | None, keys: Sequence[str]) -> list[float | None]:
    return [(values or {}).get(k) for k in keys]


def _seeds_note(report: dict[str, Any]) -> str:
    n = int(report.get("n_seeds") or 1)
    return f" (mean ± sd over {n} seeds)" if n > 1 else ""


# --------------------------------------------------------------------------- the figures

def tau_curves(report: dict[str, Any], stem: Path) -> None:
    rows = [r for r in report.get("rows") or [] if (r.get("tau_curve") or {}).get("tau")]
    if not rows:
        raise NothingToDraw("no row has a tau curve")
    floors = [f for f in report.get("floors") or [] if (f.get("tau_curve") or {}).get("tau")]
    lines, table = [], []
    for r in rows:
        c = r["tau_curve"]
        mark = best_tau_index(c, r.get("cue_best_tau"))
        mark_label = ""
        if mark is not None and finite(c["miou"][mark]):
            mark_label = f"(τ*={float(c['tau'][mark]):.2f}: {100 * float(c['miou'][mark]):.1f})"
        std = c.get("miou_std")
        lines.append(Line(r["label"], c["tau"], c["miou"], std=std, mark=mark, mark_label=mark_label))
        for i, (t, v) in enumerate(zip(c["tau"], c["miou"])):
            table.append((r["label"], t, v, std[i] if std else None, i == mark))
    references = []  # the floors: grey dashed lines, no markers (what a map that does not localize reaches)
    for f in floors:
        c = f["tau_curve"]
        mark = best_tau_index(c, f.get("best_tau"))
        label = floor_label(f["name"])
        if mark is not None and finite(c["miou"][mark]):
            label += f" (best {100 * float(c['miou'][mark]):.1f})"
        references.append((label, c))
        std = c.get("miou_std")
        for i, (t, v) in enumerate(zip(c["tau"], c["miou"])):
            table.append((floor_label(f["name"]), t, v, std[i] if std else None, i == mark))
    write_csv(stem.with_suffix(".csv"), ("series", "tau", "miou", "miou_std", "marked_best"), table)
    with figure(7.0, 4.8) as fig:
        ax = fig.add_subplot()
        draw_lines(ax, lines, scale=100.0)
        for k, (label, c) in enumerate(references):
            ax.plot([float(t) for t in c["tau"]], [100 * float(v) if finite(v) else math.nan for v in c["miou"]],
                    color=REFERENCE_COLOUR, linestyle=FLOOR_STYLES[k % len(FLOOR_STYLES)], linewidth=1.4,
                    label=label, zorder=1)
        ax.set_title("Cue mIoU against the background threshold τ" + _seeds_note(report))
        ax.set_xlabel("background threshold τ (fraction of each map's maximum)")
        ax.set_ylabel("cue mIoU (%)")
        labels = [*legend_labels(lines), *[label for label, _ in references]]
        legend_below(fig, ax, ncol=1 if len(labels) > 3 or max(len(t) for t in labels) > 40 else len(labels))
        save_figure(fig, stem)


def floor_label(name: str) -> str:
    """A floor's series name in the τ-curve figure and its CSV."""
    return f"{name} (floor)"


def per_class_iou(report: dict[str, Any], stem: Path) -> None:
    series: list[tuple[str, dict[str, Any], dict[str, Any] | None, bool]] = [
        (r["label"], r.get("per_class_iou") or {}, r.get("per_class_iou_std"), False)
        for r in report.get("rows") or []]
    ref = report.get("full_supervision") or {}
    if report.get("full_per_class_iou"):
        series.append(("full supervision", report["full_per_class_iou"], ref.get("full_per_class_iou_std"), True))
    series = [s for s in series if any(finite(v) for v in s[1].values())]
    classes: list[str] = []
    for _, d, _, _ in series:
        classes += [c for c, v in d.items() if c not in classes and finite(v)]
    if not series or not classes:
        raise NothingToDraw("no per-class IoU in any row")
    table = [(label, c, d.get(c), (std or {}).get(c)) for label, d, std, _ in series for c in classes
             if finite(d.get(c))]
    write_csv(stem.with_suffix(".csv"), ("series", "class", "iou", "iou_std"), table)
    bars = [Bars(label, [d.get(c) for c in classes], _std_list(std, classes), reference=ref_)
            for label, d, std, ref_ in series]
    with figure(max(6.4, 1.0 + 0.14 * len(classes) * len(bars)), 4.8) as fig:
        ax = fig.add_subplot()
        draw_grouped_bars(ax, classes, bars, scale=100.0)
        ax.set_ylabel("IoU (%)")
        ax.set_title("Per-class IoU on val, segmenters with CRF" + _seeds_note(report))
        legend_below(fig, ax, ncol=min(3, len(bars)))
        save_figure(fig, stem)


def seed_precision_recall(report: dict[str, Any], stem: Path) -> None:
    rows = [r for r in report.get("rows") or [] if finite(r.get("seed_precision")) or finite(r.get("seed_recall"))]
    if not rows:
        raise NothingToDraw("no row has seed precision or recall")
    fields = ("seed_precision", "seed_recall")
    write_csv(stem.with_suffix(".csv"), ("series", *[x for f in fields for x in (f, f + "_std")]),
              [(r["label"], *[r.get(x) for f in fields for x in (f, f + "_std")]) for r in rows])
    bars = [Bars(r["label"], [r.get(f) for f in fields], [r.get(f + "_std") for f in fields]) for r in rows]
    with figure(max(5.0, 2.0 + 0.5 * len(rows)), 4.2) as fig:
        ax = fig.add_subplot()
        draw_grouped_bars(ax, ["precision", "recall"], bars, scale=100.0, rotate=False)
        ax.set_ylabel("pixels (%)")
        ax.set_ylim(0, 105)
        ax.set_title("SEC seeds against the ground truth (mean over classes)" + _seeds_note(report))
        legend_below(fig, ax, ncol=min(3, len(bars)))
        save_figure(fig, stem)


def classification_ap(report: dict[str, Any], stem: Path) -> None:
    classifiers = [(v, c) for v, c in (report.get("classifiers") or {}).items()
                   if any(finite(x) for x in (c.get("per_class_ap") or {}).values())]
    if not classifiers:
        raise NothingToDraw("no classifier has per-class AP")
    classes: list[str] = []
    for _, c in classifiers:
        classes += [k for k, v in c["per_class_ap"].items() if k not in classes and finite(v)]
    table = [(v, k, c["per_class_ap"].get(k), (c.get("per_class_ap_std") or {}).get(k))
             for v, c in classifiers for k in classes if finite(c["per_class_ap"].get(k))]
    table += [(v, "mAP", c.get("map"), c.get("map_std")) for v, c in classifiers if finite(c.get("map"))]
    write_csv(stem.with_suffix(".csv"), ("classifier", "class", "ap", "ap_std"), table)

    def label(v: str, c: dict[str, Any]) -> str:
        if not finite(c.get("map")):
            return v
        sd = f" ± {100 * float(c['map_std']):.1f}" if finite(c.get("map_std")) else ""
        return f"{v} (mAP {100 * float(c['map']):.1f}{sd})"

    bars = [Bars(label(v, c), [c["per_class_ap"].get(k) for k in classes], _std_list(c.get("per_class_ap_std"),
                                                                                      classes))
            for v, c in classifiers]
    with figure(max(6.4, 1.0 + 0.14 * len(classes) * len(bars)), 4.6) as fig:
        ax = fig.add_subplot()
        draw_grouped_bars(ax, classes, bars, scale=100.0)
        ax.set_ylabel("average precision (%)")
        ax.set_ylim(0, 105)
        ax.set_title("Per-class AP of the classifiers on val" + _seeds_note(report))
        legend_below(fig, ax, ncol=min(3, len(bars)))
        save_figure(fig, stem)


def _training(report: dict[str, Any], stem: Path, stage: str, what: str) -> None:
    curves = [(name, c) for name, c in ((report.get("training") or {}).get(stage) or {}).items()
              if c and c.get("x") and c.get("terms")]
    if not curves:
        raise NothingToDraw(f"no {what} has a metrics.json history")
    table = []
    for name, c in curves:
        for term, values in c["terms"].items():
            stds = (c.get("terms_std") or {}).get(term)
            for i, (x, v) in enumerate(zip(c["x"], values)):
                table.append((name, term, x, v, stds[i] if stds else None))
    x_name = curves[0][1].get("x_name", "step")
    write_csv(stem.with_suffix(".csv"), ("model", "term", x_name, "value", "value_std"), table)
    ncols = min(3, len(curves))
    nrows = math.ceil(len(curves) / ncols)
    with figure(3.4 * ncols + 0.4, 2.9 * nrows + 0.5) as fig:
        axes = fig.subplots(nrows, ncols, squeeze=False)
        for ax, (name, c) in zip(axes.flat, curves):
            stds = c.get("terms_std") or {}
            lines = [Line(TERM_LABELS.get(t, t), c["x"], v, std=stds.get(t)) for t, v in c["terms"].items()]
            draw_lines(ax, lines)
            window = int(c.get("window") or 1)
            ax.set_xlabel(c.get("x_name", "step") + (f" (mean over windows of {window})" if window > 1 else ""))
            ax.set_ylabel("loss")
            if len(c["x"]) <= 10:
                ax.set_xticks(c["x"])  # a few epochs: one tick each
            else:
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_title(name, fontsize=9)
            ax.legend(fontsize=7, loc="best")
        for ax in list(axes.flat)[len(curves):]:
            ax.set_visible(False)
        fig.suptitle(f"Training losses of the {what}s" + _seeds_note(report))
        save_figure(fig, stem)


def training_classify(report: dict[str, Any], stem: Path) -> None:
    _training(report, stem, "classify", "classifier")


def training_segment(report: dict[str, Any], stem: Path) -> None:
    _training(report, stem, "segment", "segmenter")


def stages(report: dict[str, Any], stem: Path) -> None:
    items = [(n, s) for n, s in (report.get("stages") or {}).items()
             if finite(s.get("wall_seconds")) or finite(s.get("peak_rss_mib"))]
    if not items:
        raise NothingToDraw("no stage has a wall time or peak memory")
    fields = ("wall_seconds", "peak_rss_mib")
    write_csv(stem.with_suffix(".csv"), ("stage", *[x for f in fields for x in (f, f + "_std")]),
              [(n, *[s.get(x) for f in fields for x in (f, f + "_std")]) for n, s in items])
    names = [n for n, _ in items]
    with figure(7.6, 0.8 + 0.32 * len(items)) as fig:
        left, right = fig.subplots(1, 2, sharey=True)
        draw_horizontal_bars(left, names, [s.get("wall_seconds") for _, s in items],
                             [s.get("wall_seconds_std") for _, s in items], k=3)
        left.set_xlabel("wall time (s)")
        draw_horizontal_bars(right, names, [s.get("peak_rss_mib") for _, s in items],
                             [s.get("peak_rss_mib_std") for _, s in items], k=4, fmt="{:.0f}")
        right.set_xlabel("peak resident memory (MiB)")
        fig.suptitle("Wall time and peak memory per stage" + _seeds_note(report))
        save_figure(fig, stem)


DATA_FIGURES: dict[str, Callable[[dict[str, Any], Path], None]] = {
    "tau_curves": tau_curves, "per_class_iou": per_class_iou, "seed_precision_recall": seed_precision_recall,
    "classification_ap": classification_ap, "training_classify": training_classify,
    "training_segment": training_segment, "stages": stages,
}


def best_tau_index(curve: dict[str, Any], best_tau: float | None = None) -> int | None:
    """The point of ``curve`` to mark: the one at ``best_tau`` when the curve has it, else its maximum."""
    taus, miou = curve.get("tau") or [], curve.get("miou") or []
    if finite(best_tau):
        near = [i for i, t in enumerate(taus) if abs(float(t) - float(best_tau)) < 1e-6]
        if near:
            return near[0]
    best = [(float(v), -i) for i, v in enumerate(miou) if finite(v)]
    return -max(best)[1] if best else None


def draw_data_figures(report: dict[str, Any], fig_dir: Path, notes: list[str], only: Sequence[str] | None = None,
                      skip: Sequence[str] = ()) -> dict[str, str | None]:
    """Draw the figures of :data:`DATA_FIGURES` (those in ``only``, if given, less ``skip``) into ``fig_dir``.

    Returns ``{name: "figures/<name>.png" | None}``. A figure with nothing to show, or whose drawing
    fails, is left out with a note (it never costs the report).
    """
    out: dict[str, str | None] = {}
    for name, draw in DATA_FIGURES.items():
        if (only is not None and name not in only) or name in skip:
            continue
        try:
            draw(report, fig_dir / name)
            out[name] = f"{fig_dir.name}/{name}.png"
        except NothingToDraw as e:
            notes.append(f"figure {name} not drawn: {e}")
            out[name] = None
        except Exception as e:  # a figure must never cost the report
            notes.append(f"figure {name} not drawn: {type(e).__name__}: {e}")
            out[name] = None
    return out
