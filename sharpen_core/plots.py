"""Drawing with matplotlib for every stage and the report: one style, PNG + PDF, the data as CSV.

Only the object-oriented API on the Agg canvas is used (no pyplot, no display, no global backend
switch). A figure is saved as ``<stem>.png`` (for Markdown) and ``<stem>.pdf`` (vector, fonts
embedded as TrueType), atomically and byte-for-byte reproducible: the PDF carries no creation date.
The palette is Okabe & Ito's colour-blind-safe one; every series also gets its own marker and line
style, markers are staggered along x and line widths decrease with the series index, so a series
drawn exactly over another (identical values) stays visible, and its legend entry says so.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import matplotlib
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from sharpen_core.io import write_bytes_atomic
from sharpen_core.numbers import finite

# Okabe & Ito (2008), "Color Universal Design": distinguishable with every common colour-vision deficiency.
OKABE_ITO: tuple[str, ...] = ("#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7", "#F0E442",
                              "#000000")
REFERENCE_COLOUR = "#666666"  # the fully supervised reference: grey, hatched
MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES: tuple[Any, ...] = ("-", "--", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)), (0, (1, 2)),
                               (0, (8, 2, 1, 2)))
HATCHES: tuple[str, ...] = ("", "//", "..", "\\\\", "--", "oo", "++", "||")
REFERENCE_HATCH = "xx"

STYLE: dict[str, Any] = {
    "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8,
    "xtick.labelsize": 8, "ytick.labelsize": 8, "axes.spines.top": False, "axes.spines.right": False,
    "axes.grid": True, "grid.color": "#DDDDDD", "grid.linewidth": 0.6, "axes.axisbelow": True,
    "pdf.fonttype": 42, "ps.fonttype": 42, "svg.hashsalt": "sharpen-focus", "figure.dpi": 100,
    "savefig.dpi": 150, "legend.frameon": False, "hatch.linewidth": 0.6,
}
PNG_METADATA = {"Software": None}
PDF_METADATA = {"CreationDate": None, "Producer": None, "Creator": "sharpen-focus"}


def colour(k: int) -> str:
    return OKABE_ITO[k % len(OKABE_ITO)]


@contextlib.contextmanager
def figure(width: float, height: float) -> Iterator[Figure]:
    """A new figure (inches) on an Agg canvas, drawn and saved under the project's style."""
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(width, height), layout="constrained")
        FigureCanvasAgg(fig)
        yield fig


def save_figure(fig: Figure, stem: str | Path) -> list[Path]:
    """Write ``stem.png`` and ``stem.pdf`` atomically (call inside :func:`figure`); return both paths."""
    stem = Path(stem)
    paths = []
    for fmt, metadata in (("png", PNG_METADATA), ("pdf", PDF_METADATA)):
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, metadata=metadata)
        path = stem.with_suffix("." + fmt)
        write_bytes_atomic(path, buf.getvalue())
        paths.append(path)
    return paths


def csv_cell(v: Any) -> str:
    """A CSV cell that reads back as the same number: ``repr`` of a float (as JSON writes it), '' for None."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, float):
        return repr(v)
    return str(v)


def write_csv(path: str | Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> Path:
    """``header`` then ``rows`` as CSV (numbers written as :func:`csv_cell` does), atomically."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(list(header))
    for row in rows:
        w.writerow([csv_cell(v) for v in row])
    write_bytes_atomic(path, buf.getvalue().encode())
    return Path(path)


# --------------------------------------------------------------------------- lines

@dataclass
class Line:
    """One series of a line plot: ``y`` (None: a gap) against ``x``, optional ``std`` band, one marked point."""

    label: str
    x: Sequence[float]
    y: Sequence[float | None]
    std: Sequence[float | None] | None = None
    mark: int | None = None
    mark_label: str = ""


def _same_values(a: Line, b: Line) -> bool:
    return list(map(float, a.x)) == list(map(float, b.x)) and [None if not finite(v) else float(v) for v in a.y] \
        == [None if not finite(v) else float(v) for v in b.y]


def legend_labels(lines: Sequence[Line]) -> list[str]:
    """Labels, with ``(same values as <earlier label>)`` for a series identical to an earlier one."""
    out = []
    for k, line in enumerate(lines):
        twin = next((e for e in lines[:k] if _same_values(e, line)), None)
        label = line.label + (f" {line.mark_label}" if line.mark_label else "")
        out.append(label + (f" (same values as {twin.label})" if twin is not None else ""))
    return out


def draw_lines(ax: Axes, lines: Sequence[Line], scale: float = 1.0, n_markers: int = 10) -> None:
    """Draw ``lines`` on ``ax`` (values ×``scale``), each with its own colour, marker and line style.

    Markers are spread over about ``n_markers`` points per series and shifted per series, lines get
    thinner with the series index, so identical series all show; ± std as a translucent band.
    """
    n = max(len(lines), 1)
    labels = legend_labels(lines)
    for k, (line, label) in enumerate(zip(lines, labels)):
        xs = [float(v) for v in line.x]
        ys = [float(v) * scale if finite(v) else math.nan for v in line.y]
        every = max(1, math.ceil(len(xs) / n_markers))
        offset = (k * every) // n if every > 1 else 0
        width = 2.6 - 1.5 * k / (n - 1) if n > 1 else 1.8
        ax.plot(xs, ys, color=colour(k), linestyle=LINESTYLES[k % len(LINESTYLES)], linewidth=width,
                marker=MARKERS[k % len(MARKERS)], markersize=max(3.5, 9.0 - 1.3 * k), markerfacecolor="none",
                markeredgewidth=1.2, markevery=(offset, every), label=label, zorder=2 + k)
        if line.std is not None and any(finite(s) for s in line.std):
            lo = [y - float(s) * scale if finite(s) else math.nan for y, s in zip(ys, line.std)]
            hi = [y + float(s) * scale if finite(s) else math.nan for y, s in zip(ys, line.std)]
            ax.fill_between(xs, lo, hi, color=colour(k), alpha=0.18, linewidth=0, zorder=1)
        if line.mark is not None and 0 <= line.mark < len(xs) and math.isfinite(ys[line.mark]):
            ax.plot([xs[line.mark]], [ys[line.mark]], linestyle="none", marker=MARKERS[k % len(MARKERS)],
                    markersize=10, color=colour(k), markerfacecolor=colour(k), markeredgecolor="black",
                    markeredgewidth=0.8, zorder=20 + k)
            ax.axvline(xs[line.mark], color=colour(k), linewidth=0.8, linestyle=":", zorder=1)


# --------------------------------------------------------------------------- bars

@dataclass
class Bars:
    """One bar series over the categories: ``values[i]`` (None: no bar) ± ``std[i]``."""

    label: str
    values: Sequence[float | None]
    std: Sequence[float | None] | None = None
    reference: bool = False  # drawn grey and hatched (the fully supervised reference)


def draw_grouped_bars(ax: Axes, categories: Sequence[str], series: Sequence[Bars], scale: float = 1.0,
                      rotate: bool = True) -> None:
    """One group per category, one bar per series (colour and hatch per series), ± std as error bars."""
    n = max(len(series), 1)
    width = 0.8 / n
    for k, s in enumerate(series):
        xs, hs, errs = [], [], []
        for i in range(len(categories)):
            v = s.values[i] if i < len(s.values) else None
            if not finite(v):
                continue
            xs.append(i - 0.4 + width * (k + 0.5))
            hs.append(float(v) * scale)
            e = s.std[i] if s.std is not None and i < len(s.std) else None
            errs.append(float(e) * scale if finite(e) else 0.0)
        face = REFERENCE_COLOUR if s.reference else colour(k)
        ax.bar(xs, hs, width=width * 0.95, color=face, edgecolor="black", linewidth=0.4,
               hatch=REFERENCE_HATCH if s.reference else HATCHES[k % len(HATCHES)], label=s.label,
               yerr=errs if any(errs) else None, error_kw={"elinewidth": 0.8, "capsize": 1.5, "ecolor": "black"})
    ax.set_xticks(range(len(categories)))
    ax.set_xticklabels(categories, rotation=45 if rotate else 0, ha="right" if rotate else "center")
    ax.set_xlim(-0.6, len(categories) - 0.4)
    ax.grid(axis="x", visible=False)


def draw_horizontal_bars(ax: Axes, labels: Sequence[str], values: Sequence[float | None],
                         std: Sequence[float | None] | None = None, k: int = 0, fmt: str = "{:.1f}") -> None:
    """One horizontal bar per label (top to bottom), its value written at its end, ± std as error bars."""
    ys = list(range(len(labels)))[::-1]
    vals = [float(v) if finite(v) else 0.0 for v in values]
    errs = [float(s) if std is not None and finite(s) else 0.0 for s in (std or [None] * len(labels))]
    ax.barh(ys, vals, color=colour(k), edgecolor="black", linewidth=0.4, xerr=errs if any(errs) else None,
            error_kw={"elinewidth": 0.8, "capsize": 2, "ecolor": "black"})
    ax.set_yticks(ys)
    ax.set_yticklabels(labels)
    top = max([v + e for v, e in zip(vals, errs)] + [1e-9])
    ax.set_xlim(0, top * 1.3)
    for y, v, raw in zip(ys, vals, values):
        ax.text(v + top * 0.02, y, fmt.format(float(raw)) if finite(raw) else "n/a", va="center", fontsize=7)
    ax.grid(axis="y", visible=False)


def legend_below(fig: Figure, ax: Axes, ncol: int = 3) -> None:
    """The legend of ``ax`` under the plot, outside the data (room made by the constrained layout)."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncol=max(1, ncol))


def line_figure(stem: str | Path, lines: Sequence[Line], title: str, xlabel: str, ylabel: str, scale: float = 1.0,
                size: tuple[float, float] = (6.4, 4.2)) -> list[Path]:
    """One axes of :func:`draw_lines`, the legend below it; written as ``stem.png`` and ``stem.pdf``."""
    with figure(*size) as fig:
        ax = fig.add_subplot()
        draw_lines(ax, lines, scale=scale)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        legend_below(fig, ax, ncol=1 if len(lines) > 3 or max([len(s) for s in legend_labels(lines)] + [0]) > 40
                     else len(lines))
        return save_figure(fig, stem)


def image_pdf(image: Any, path: str | Path, dpi: float = 150.0) -> Path:
    """A raster picture (H×W×3 uint8) as a one-page PDF of its own size, losslessly and without dates."""
    import numpy as np

    arr = np.asarray(image)
    h, w = arr.shape[:2]
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(w / dpi, h / dpi))
        FigureCanvasAgg(fig)
        ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
        ax.imshow(arr, interpolation="nearest")
        ax.set_axis_off()
        buf = io.BytesIO()
        fig.savefig(buf, format="pdf", metadata=PDF_METADATA, dpi=dpi)
    write_bytes_atomic(path, buf.getvalue())
    return Path(path)
