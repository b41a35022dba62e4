"""Report figures with PIL only: grouped bars, several curves on one plot, horizontal bars.

``cues.show`` draws one curve (``plot_curve``) and grids of maps (``render_grid``, ``show_maps``);
the report needs a few more kinds of chart, drawn here in the same style (PIL's default font, white
background) and saved atomically with ``cues.show.save_png``. Values are fractions; with
``percent=True`` the axis shows them ×100. ``None`` (or NaN) values are left out of a chart.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

from PIL import Image, ImageDraw, ImageFont

from cues.show import BLACK, GREY, WHITE, save_png

# A colour-blind-friendly qualitative palette (the usual ten categorical colours), then greys.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)
REFERENCE_COLOUR = (60, 60, 60)  # the fully supervised reference
GRIDLINE = (230, 230, 230)


def series_colour(k: int) -> tuple[int, int, int]:
    return PALETTE[k % len(PALETTE)]


def _font() -> ImageFont.ImageFont:
    return ImageFont.load_default()


def _text_width(text: str, font: ImageFont.ImageFont) -> float:
    return ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(text, font=font)


def _finite(v: float | None) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def nice_ticks(lo: float, hi: float, max_ticks: int = 8) -> list[float]:
    """Evenly spaced round tick values covering ``[lo, hi]`` (step 1, 2, 2.5 or 5 × 10^k), at most ``max_ticks``+1."""
    span = hi - lo if hi > lo else 1.0
    for exp in range(-4, 7):
        for m in (1.0, 2.0, 2.5, 5.0):
            step = m * 10.0 ** exp
            first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
            if last - first <= max_ticks and step >= span / max_ticks / 2:
                return [round(k * step, 10) for k in range(first, max(last, first + 1) + 1)]
    return [lo, hi]  # pragma: no cover


def _nice_range(values: Sequence[float], floor_zero: bool) -> tuple[float, float]:
    """A y range with round ends covering ``values`` (0..1 when there is nothing to show)."""
    vals = [float(v) for v in values if _finite(v)]
    if not vals:
        return 0.0, 1.0
    lo = 0.0 if floor_zero else min(vals)
    hi = max(vals)
    if hi <= lo:
        hi = lo + 0.1
    ticks = nice_ticks(lo, hi)
    return ticks[0], ticks[-1]


def _legend(draw: ImageDraw.ImageDraw, entries: Sequence[tuple[str, tuple[int, int, int]]], x: int, y: int,
            max_width: int, font: ImageFont.ImageFont) -> int:
    """Draw colour swatches with labels left to right, wrapping at ``max_width``; return the height used."""
    cx, cy, line_h = x, y, 14
    for label, colour in entries:
        w = 14 + int(_text_width(label, font)) + 14
        if cx + w > x + max_width and cx > x:
            cx, cy = x, cy + line_h
        draw.rectangle([cx, cy + 2, cx + 9, cy + 11], fill=colour)
        draw.text((cx + 13, cy), label, fill=BLACK, font=font)
        cx += w
    return cy + line_h - y


def _legend_height(labels: Sequence[str], max_width: int, font: ImageFont.ImageFont) -> int:
    scratch = ImageDraw.Draw(Image.new("RGB", (max(max_width, 1), 400)))
    return _legend(scratch, [(t, BLACK) for t in labels], 0, 0, max_width, font)


def _y_axis(draw: ImageDraw.ImageDraw, left: int, right_x: int, top: int, bottom_y: int, lo: float, hi: float,
            percent: bool, font: ImageFont.ImageFont) -> None:
    draw.line([(left, top), (left, bottom_y), (right_x, bottom_y)], fill=BLACK)
    for v in nice_ticks(lo, hi):
        yy = bottom_y - (v - lo) / (hi - lo) * (bottom_y - top)
        draw.line([(left - 4, yy), (left, yy)], fill=BLACK)
        if v > lo:
            draw.line([(left + 1, yy), (right_x, yy)], fill=GRIDLINE)
        text = f"{100 * v:g}" if percent else f"{v:g}"
        draw.text((left - 8 - _text_width(text, font), yy - 6), text, fill=BLACK, font=font)


def _rotated_text(text: str, font: ImageFont.ImageFont) -> Image.Image:
    """``text`` in black on white, turned 90° anticlockwise (reads bottom to top)."""
    w = max(1, int(_text_width(text, font)) + 2)
    im = Image.new("RGB", (w, 12), WHITE)
    ImageDraw.Draw(im).text((1, 0), text, fill=BLACK, font=font)
    return im.rotate(90, expand=True)


# --------------------------------------------------------------------------- grouped bars

def grouped_bars(categories: Sequence[str], series: Sequence[tuple[str, Sequence[float | None]]],
                 path: str | Path, title: str = "", ylabel: str = "", percent: bool = True,
                 colours: Sequence[tuple[int, int, int]] | None = None, bar_width: int = 7,
                 height: int = 420) -> Image.Image:
    """One group of bars per category, one bar (and colour) per series; a missing value leaves a gap.

    ``series`` is ``[(label, values per category), ...]``; the y axis starts at 0.
    """
    font = _font()
    n_series = max(1, len(series))
    colours = list(colours) if colours is not None else [series_colour(k) for k in range(n_series)]
    gap = max(6, bar_width)
    group_w = n_series * bar_width + gap
    left, right, top = 56, 16, 30
    plot_w = max(len(categories), 1) * group_w
    width = max(left + plot_w + right, 360)
    legend_h = _legend_height([s[0] for s in series], width - left - right, font)
    label_h = max([_rotated_text(c, font).height for c in categories] + [12])
    bottom = label_h + 12 + legend_h + 8
    canvas = Image.new("RGB", (width, height + label_h + legend_h), WHITE)
    h = canvas.height
    draw = ImageDraw.Draw(canvas)
    all_values = [v for _, vals in series for v in vals]
    lo, hi = _nice_range(all_values, floor_zero=True)
    bottom_y = h - bottom
    _y_axis(draw, left, left + plot_w, top, bottom_y, lo, hi, percent, font)
    for i, cat in enumerate(categories):
        gx = left + gap // 2 + i * group_w
        for k, (_, vals) in enumerate(series):
            v = vals[i] if i < len(vals) else None
            if not _finite(v):
                continue
            y = bottom_y - (float(v) - lo) / (hi - lo) * (bottom_y - top)
            x = gx + k * bar_width
            draw.rectangle([x, min(y, bottom_y - 1), x + bar_width - 2, bottom_y - 1], fill=colours[k % len(colours)])
        rot = _rotated_text(cat, font)
        canvas.paste(rot, (int(gx + (n_series * bar_width) / 2 - rot.width / 2), bottom_y + 4))
    _legend(draw, [(label, colours[k % len(colours)]) for k, (label, _) in enumerate(series)],
            left, bottom_y + label_h + 10, width - left - right, font)
    draw.text(((width - _text_width(title, font)) / 2, 8), title, fill=BLACK, font=font)
    draw.text((6, top - 20), ylabel + (" (%)" if percent and ylabel else ""), fill=BLACK, font=font)
    save_png(canvas, path)
    return canvas


# --------------------------------------------------------------------------- several curves

def plot_curves(series: Sequence[tuple[str, Sequence[float], Sequence[float | None]]], path: str | Path,
                title: str = "", xlabel: str = "", ylabel: str = "", marks: Sequence[int | None] | None = None,
                percent: bool = True, size: tuple[int, int] = (720, 440),
                colours: Sequence[tuple[int, int, int]] | None = None) -> Image.Image:
    """Line plot of several ``(label, x, y)`` series on shared axes, a legend below, ``marks[k]`` circled.

    The legend label of a marked series gains the marked point (``best τ=0.25: 41.3``).
    """
    font = _font()
    w, h0 = size
    colours = list(colours) if colours is not None else [series_colour(k) for k in range(len(series))]
    marks = list(marks) if marks is not None else [None] * len(series)
    labels = []
    for k, (label, xs, ys) in enumerate(series):
        m = marks[k] if k < len(marks) else None
        if m is not None and 0 <= m < len(xs) and _finite(ys[m]):
            value = f"{100 * ys[m]:.1f}" if percent else f"{ys[m]:.3f}"
            label = f"{label} (best {xs[m]:.2f}: {value})"
        labels.append(label)
    left, right, top = 64, 20, 34
    legend_h = _legend_height(labels, w - left - right, font)
    h = h0 + legend_h
    bottom = 44 + legend_h + 8
    canvas = Image.new("RGB", (w, h), WHITE)
    draw = ImageDraw.Draw(canvas)
    all_x = [float(x) for _, xs, _ in series for x in xs]
    all_y = [y for _, _, ys in series for y in ys]
    lo, hi = _nice_range(all_y, floor_zero=False)
    x0, x1 = (min(all_x), max(all_x)) if all_x else (0.0, 1.0)
    if x1 <= x0:
        x1 = x0 + 1.0
    bottom_y = h - bottom

    def px(xv: float, yv: float) -> tuple[float, float]:
        return (left + (xv - x0) / (x1 - x0) * (w - left - right),
                bottom_y - (yv - lo) / (hi - lo) * (bottom_y - top))

    _y_axis(draw, left, w - right, top, bottom_y, lo, hi, percent, font)
    for v in nice_ticks(x0, x1, max_ticks=12):
        if v < x0 - 1e-9 or v > x1 + 1e-9:
            continue
        xx, _ = px(v, lo)
        draw.line([(xx, bottom_y), (xx, bottom_y + 4)], fill=BLACK)
        text = f"{v:g}"
        draw.text((xx - _text_width(text, font) / 2, bottom_y + 6), text, fill=BLACK, font=font)
    for k, (_, xs, ys) in enumerate(series):
        colour = colours[k % len(colours)]
        points = [px(float(a), float(b)) for a, b in zip(xs, ys) if _finite(b)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        elif points:
            (x, y), = points
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
        m = marks[k] if k < len(marks) else None
        if m is not None and 0 <= m < len(xs) and _finite(ys[m]):
            mx, my = px(float(xs[m]), float(ys[m]))
            draw.ellipse([mx - 5, my - 5, mx + 5, my + 5], outline=colour, width=2)
            draw.line([(mx, my + 6), (mx, bottom_y)], fill=colour)
    draw.text(((w - _text_width(xlabel, font)) / 2, bottom_y + 22), xlabel, fill=BLACK, font=font)
    _legend(draw, list(zip(labels, [colours[k % len(colours)] for k in range(len(series))])),
            left, bottom_y + 40, w - left - right, font)
    draw.text(((w - _text_width(title, font)) / 2, 8), title, fill=BLACK, font=font)
    draw.text((6, top - 20), ylabel + (" (%)" if percent and ylabel else ""), fill=BLACK, font=font)
    save_png(canvas, path)
    return canvas


# --------------------------------------------------------------------------- horizontal bars

def horizontal_bars(labels: Sequence[str], values: Sequence[float | None], path: str | Path, title: str = "",
                    annotations: Mapping[int, str] | Sequence[str] | None = None, unit: str = "",
                    width: int = 640, row_h: int = 20) -> Image.Image:
    """One horizontal bar per label (length ∝ value, from 0), the value and an optional note at its end."""
    font = _font()
    label_w = int(max([_text_width(t, font) for t in labels] + [0])) + 12
    top, pad = 28, 6
    height = top + len(labels) * row_h + 2 * pad
    canvas = Image.new("RGB", (width, max(height, 60)), WHITE)
    draw = ImageDraw.Draw(canvas)
    vals = [float(v) for v in values if _finite(v)]
    vmax = max(vals) if vals and max(vals) > 0 else 1.0
    text_room = 220
    bar_max = max(20, width - label_w - text_room)
    for i, (label, v) in enumerate(zip(labels, values)):
        y = top + i * row_h
        draw.text((6, y + 3), label, fill=BLACK, font=font)
        note = ""
        if annotations is not None:
            note = annotations[i] if i < len(annotations) else ""  # type: ignore[index]
        if _finite(v):
            length = max(1, int(round(float(v) / vmax * bar_max)))
            draw.rectangle([label_w, y + 3, label_w + length, y + row_h - 4], fill=series_colour(0))
            text = f"{float(v):.1f}{unit}" + (f"  {note}" if note else "")
            draw.text((label_w + length + 6, y + 3), text, fill=BLACK, font=font)
        else:
            draw.text((label_w + 2, y + 3), "n/a" + (f"  {note}" if note else ""), fill=GREY, font=font)
    draw.line([(label_w, top - 2), (label_w, top + len(labels) * row_h)], fill=BLACK)
    draw.text(((width - _text_width(title, font)) / 2, 8), title, fill=BLACK, font=font)
    save_png(canvas, path)
    return canvas
