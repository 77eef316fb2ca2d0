"""Small PNG figures drawn with Pillow: a scatter plot, a grouped bar chart, an image sheet.

Pillow is already a dependency, and these three plots are all the reports
need, so no plotting library is pulled in.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75), (227, 119, 194)]
_W, _H, _M = 900, 560, 70  # canvas size and margin, pixels


def _font(size=14):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _axes(draw, x_range, y_range, xlabel, ylabel, title, x_ticks=True):
    (x0, x1), (y0, y1) = x_range, y_range
    left, right, top, bottom = _M, _W - 20, 40, _H - _M
    draw.rectangle([left, top, right, bottom], outline=(0, 0, 0))
    font = _font()
    for t in np.linspace(y0, y1, 6):
        y = bottom - (t - y0) / (y1 - y0 or 1) * (bottom - top)
        draw.line([left - 5, y, left, y], fill=(0, 0, 0))
        draw.line([left, y, right, y], fill=(230, 230, 230))
        draw.text((left - 8, y), f"{t:.3g}", fill=(0, 0, 0), font=font, anchor="rm")
    for t in np.linspace(x0, x1, 6) if x_ticks else []:
        x = left + (t - x0) / (x1 - x0 or 1) * (right - left)
        draw.line([x, bottom, x, bottom + 5], fill=(0, 0, 0))
        draw.text((x, bottom + 8), f"{t:.3g}", fill=(0, 0, 0), font=font, anchor="mt")
    draw.text(((left + right) / 2, _H - 25), xlabel, fill=(0, 0, 0), font=font, anchor="mm")
    draw.text((10, top - 20), ylabel, fill=(0, 0, 0), font=font)
    draw.text(((left + right) / 2, 15), title, fill=(0, 0, 0), font=_font(16), anchor="mm")

    def to_px(x, y):
        return (left + (x - x0) / (x1 - x0 or 1) * (right - left), bottom - (y - y0) / (y1 - y0 or 1) * (bottom - top))

    return to_px


def _legend(draw, names):
    for i, name in enumerate(names):
        y = 50 + 18 * i
        draw.rectangle([_W - 200, y, _W - 190, y + 10], fill=PALETTE[i % len(PALETTE)])
        draw.text((_W - 185, y - 2), name, fill=(0, 0, 0), font=_font(12))


def scatter(groups: dict[str, list[tuple[float, float]]], path: str | Path, *, xlabel: str, ylabel: str, title: str,
            vline: float | None = None) -> Path:
    """Points per named group, each group its own colour; an optional vertical guide line."""
    xs = [p[0] for pts in groups.values() for p in pts] or [0, 1]
    ys = [p[1] for pts in groups.values() for p in pts] or [0, 1]
    pad_x, pad_y = (max(xs) - min(xs)) * 0.05 or 1, (max(ys) - min(ys)) * 0.05 or 1
    image = Image.new("RGB", (_W, _H), "white")
    draw = ImageDraw.Draw(image)
    to_px = _axes(draw, (min(xs) - pad_x, max(xs) + pad_x), (min(ys) - pad_y, max(ys) + pad_y), xlabel, ylabel, title)
    if vline is not None and min(xs) - pad_x <= vline <= max(xs) + pad_x:
        draw.line([to_px(vline, min(ys) - pad_y), to_px(vline, max(ys) + pad_y)], fill=(120, 120, 120), width=2)
    for i, pts in enumerate(groups.values()):
        for x, y in pts:
            px, py = to_px(x, y)
            draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=PALETTE[i % len(PALETTE)])
    _legend(draw, list(groups))
    image.save(path)
    return Path(path)


def grouped_bars(categories: list[str], series: dict[str, list[float]], path: str | Path, *, ylabel: str, title: str,
                 y_max: float = 100.0) -> Path:
    """One group of bars per category, one bar per series (e.g. accuracy per attack and configuration)."""
    image = Image.new("RGB", (_W, _H), "white")
    draw = ImageDraw.Draw(image)
    to_px = _axes(draw, (0, len(categories)), (0, y_max), "", ylabel, title, x_ticks=False)
    width = 0.8 / max(len(series), 1)
    for s, values in enumerate(series.values()):
        for c, value in enumerate(values):
            if value != value:  # NaN: no bar
                continue
            x_left = c + 0.1 + s * width
            draw.rectangle([to_px(x_left, value), to_px(x_left + width * 0.9, 0)], fill=PALETTE[s % len(PALETTE)])
    for c, name in enumerate(categories):
        px, py = to_px(c + 0.5, 0)
        draw.text((px, py + 8 + 14 * (c % 2)), name, fill=(0, 0, 0), font=_font(11), anchor="mt")  # staggered
    _legend(draw, list(series))
    image.save(path)
    return Path(path)


def image_sheet(rows: list[list[tuple[np.ndarray, str]]], path: str | Path, *, scale: int = 4) -> Path:
    """A grid of HWC uint8 or float [0, 1] images, each with a caption under it."""
    cell_h, cell_w = rows[0][0][0].shape[0] * scale, rows[0][0][0].shape[1] * scale
    cols = max(len(r) for r in rows)
    image = Image.new("RGB", (cols * (cell_w + 10) + 10, len(rows) * (cell_h + 34) + 10), "white")
    draw = ImageDraw.Draw(image)
    for r, row in enumerate(rows):
        for c, (pixels, caption) in enumerate(row):
            arr = pixels if pixels.dtype == np.uint8 else np.clip(pixels * 255 + 0.5, 0, 255).astype(np.uint8)
            tile = Image.fromarray(arr).resize((cell_w, cell_h), Image.Resampling.NEAREST)
            x, y = 10 + c * (cell_w + 10), 10 + r * (cell_h + 34)
            image.paste(tile, (x, y))
            draw.text((x, y + cell_h + 3), caption, fill=(0, 0, 0), font=_font(11))
    image.save(path)
    return Path(path)
