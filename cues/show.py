"""Pictures with PIL: attention maps over images side by side, with a colour bar for the map scale.

``sharpen cues show`` draws one row per (image, ground-truth class): the image, its ground truth
(VOC palette) and, per mechanism, that class's map colourised with a jet-like colormap and blended
over the image. Maps come from extraction folders (``--maps``) or are computed on the spot from a
checkpoint (``--checkpoint`` with ``--mechanism``, same scales and flip as ``cues extract``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from data.classes import VOC_CLASSES, VOC_PALETTE
from sharpen_core.io import write_bytes_atomic
from sharpen_core.errors import UsageError

WHITE, BLACK, GREY = (255, 255, 255), (0, 0, 0), (150, 150, 150)


# --------------------------------------------------------------------------- colours

def jet(values: np.ndarray) -> np.ndarray:
    """A jet-like colormap: values in [0, 1] (H, W) -> (H, W, 3) uint8, blue -> cyan -> yellow -> red."""
    x = np.clip(np.asarray(values, dtype=np.float32), 0.0, 1.0)
    r = np.clip(1.5 - np.abs(4 * x - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * x - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * x - 1), 0, 1)
    return np.round(np.stack([r, g, b], -1) * 255).astype(np.uint8)


def overlay(image: np.ndarray, attention: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The colourised map blended over the image (both H×W)."""
    blended = (1 - alpha) * image.astype(np.float32) + alpha * jet(attention).astype(np.float32)
    return np.round(blended).astype(np.uint8)


def colorize_mask(mask: np.ndarray) -> np.ndarray:
    """A label mask (values 0..20, 255 void) in the VOC palette: (H, W, 3) uint8."""
    return VOC_PALETTE[np.asarray(mask, dtype=np.uint8)]


def _font() -> ImageFont.ImageFont:
    return ImageFont.load_default()


def _fit(image: np.ndarray, tile: int) -> Image.Image:
    """The image scaled to fit a ``tile``×``tile`` square, centred on white."""
    im = Image.fromarray(image)
    s = tile / max(im.size)
    im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.BILINEAR)
    canvas = Image.new("RGB", (tile, tile), WHITE)
    canvas.paste(im, ((tile - im.width) // 2, (tile - im.height) // 2))
    return canvas


def render_grid(rows: Sequence[Sequence[np.ndarray | None]], row_labels: Sequence[str], col_labels: Sequence[str],
                tile: int = 128, pad: int = 4) -> Image.Image:
    """A grid of RGB tiles (None: an empty tile) with column titles above and row labels at the left."""
    ncols = len(col_labels)
    font = _font()
    label_w = max([ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(t, font=font) for t in row_labels] + [0])
    left, top = int(label_w) + 2 * pad, 18 + pad
    width = left + ncols * (tile + pad)
    height = top + len(rows) * (tile + pad)
    canvas = Image.new("RGB", (width, height), WHITE)
    draw = ImageDraw.Draw(canvas)
    for j, title in enumerate(col_labels):
        draw.text((left + j * (tile + pad), pad), title, fill=BLACK, font=font)
    for i, (row, label) in enumerate(zip(rows, row_labels)):
        y = top + i * (tile + pad)
        draw.text((pad, y + tile // 2 - 6), label, fill=BLACK, font=font)
        for j, cell in enumerate(row):
            x = left + j * (tile + pad)
            if cell is None:
                draw.rectangle([x, y, x + tile - 1, y + tile - 1], outline=GREY)
            else:
                canvas.paste(_fit(cell, tile), (x, y))
    return canvas


def with_colour_bar(grid: Image.Image, label: str, pad: int = 4, bar_w: int = 256, bar_h: int = 12) -> Image.Image:
    """``grid`` with the colormap of :func:`overlay` as a bar under it, ticks 0, 0.25, ..., 1 and ``label``."""
    font = _font()
    canvas = Image.new("RGB", (max(grid.width, bar_w + 2 * pad + 40), grid.height + bar_h + 3 * pad + 28), WHITE)
    canvas.paste(grid, (0, 0))
    draw = ImageDraw.Draw(canvas)
    x0, y0 = 2 * pad, grid.height + pad
    canvas.paste(Image.fromarray(jet(np.tile(np.linspace(0.0, 1.0, bar_w, dtype=np.float32), (bar_h, 1)))), (x0, y0))
    draw.rectangle([x0 - 1, y0 - 1, x0 + bar_w, y0 + bar_h], outline=BLACK)
    for v in (0.0, 0.25, 0.5, 0.75, 1.0):
        x = x0 + round(v * (bar_w - 1))
        draw.line([(x, y0 + bar_h), (x, y0 + bar_h + 3)], fill=BLACK)
        text = f"{v:g}"
        draw.text((x - draw.textlength(text, font=font) / 2, y0 + bar_h + 4), text, fill=BLACK, font=font)
    draw.text((x0, y0 + bar_h + 16), label, fill=BLACK, font=font)
    return canvas


def save_png(image: Image.Image, path: str | Path) -> None:
    import io

    buf = io.BytesIO()
    image.save(buf, format="PNG")
    write_bytes_atomic(path, buf.getvalue())


# --------------------------------------------------------------------------- the stage

def show_maps(cfg: Any, out_png: str | Path, maps_dirs: Sequence[str | Path] = (), checkpoint: str | Path | None = None,
              mechanisms: Sequence[str] = (), split: str | None = None, ids: Sequence[str] | None = None,
              count: int = 4, tile: int = 128) -> dict[str, Any]:
    """Draw the grid for ``ids`` (default: the first ``count`` images of the split) into ``out_png``."""
    from data.voc import VOCSegmentation

    from sharpen_attention.attention import AttentionExtractor
    from sharpen_attention.mechanisms import check_mechanism
    from .extract import (ExtractItems, gt_maps, load_classifier, load_maps, map_path, multiscale_maps,
                          read_extract_params)

    if not maps_dirs and not mechanisms:
        raise UsageError("nothing to show: give extraction folders (--maps) or --checkpoint with --mechanism")
    if mechanisms and checkpoint is None:
        raise UsageError("--mechanism needs --checkpoint (maps are computed from the classifier)")
    for m in mechanisms:
        check_mechanism(m)
    extracts = [read_extract_params(d) for d in maps_dirs]
    split = split or (extracts[0]["split"] if extracts else cfg.data.train_split)
    dataset = VOCSegmentation(cfg.data.root, split)
    if ids:
        unknown = [i for i in ids if i not in dataset.ids]
        if unknown:
            raise UsageError(f"image id {unknown[0]!r} is not in split {split!r} of {dataset.root}")
        indices = [dataset.ids.index(i) for i in ids]
    else:
        indices = list(range(min(count, len(dataset))))
    columns: list[tuple[str, list[tuple[np.ndarray, np.ndarray]]]] = []  # (title, per image (maps, classes))
    for d, ex in zip(maps_dirs, extracts):
        title = ex["mechanism"] if sum(e["mechanism"] == ex["mechanism"] for e in extracts) == 1 \
            else f"{ex.get('variant')}/{ex['mechanism']}"
        per_image = []
        for i in indices:
            path = map_path(d, dataset.ids[i])
            per_image.append(gt_maps(load_maps(path), path))
        columns.append((title, per_image))
    if mechanisms:
        from sharpen_core.device import resolve_device

        c = cfg.cues
        device = resolve_device(cfg.run.device)
        model, _ = load_classifier(checkpoint, dataset.num_classes - 1, dataset.class_names[1:], device)
        base = cfg.classify.image_size if c.scale_base == "classify" else None
        items = ExtractItems(dataset, indices, c.scales, base, cfg.data.mean, cfg.data.std, all_classes=False)
        samples = [items[k] for k in range(len(items))]
        for m in mechanisms:
            with AttentionExtractor(model, layers=(c.layer,), mechanism=m) as extractor:
                maps = [multiscale_maps(extractor, c.layer, [s], c.flip, c.scale_average, device)[0] for s in samples]
            columns.append((m, [(mm, np.asarray(s["classes"])) for mm, s in zip(maps, samples)]))
    rows, labels = [], []
    for k, i in enumerate(indices):
        sample = dataset.load(i)
        image = sample["image"]
        truth = colorize_mask(sample["mask"]) if "mask" in sample else None
        classes = [int(c) for c in columns[0][1][k][1]] if columns else []
        for c in classes or [0]:
            row: list[np.ndarray | None] = [image, truth]
            for _, per_image in columns:
                maps, cls = per_image[k]
                where = np.flatnonzero(np.asarray(cls) == c)
                row.append(overlay(image, maps[where[0]]) if where.size else None)
            rows.append(row)
            labels.append(f"{sample['id']} {VOC_CLASSES[c] if c else '(no class)'}")
    grid = render_grid(rows, labels, ["image", "ground truth", *[t for t, _ in columns]], tile=tile)
    grid = with_colour_bar(grid, "attention (each map scaled to its maximum), blended 50 % over the image")
    save_png(grid, out_png)
    return {"out": str(out_png), "split": split, "images": [dataset.ids[i] for i in indices],
            "columns": [t for t, _ in columns], "rows": len(rows)}
