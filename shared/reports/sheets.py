"""Image sheets drawn with matplotlib: rows of small images, each with its true label and the prediction.

A sheet is rows of tiles; a row has a title (what its images are: clean,
``bim eps=0.01 (2.55/255)``, the defence), a tile an image and a few short
lines of caption over it, red when the prediction is wrong. Captions sit
in each tile's own title, over its own column, so that two never run
together. Pixels are shown as they are (nearest neighbour, no smoothing).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: Inches per tile (one 32 x 32 image and up to three caption lines at :data:`CAPTION_PT`), and the row title's height.
TILE_W, TILE_H, ROW_TITLE_H = 1.35, 1.55, 0.3
CAPTION_PT = 7
WRONG, RIGHT = "#c62828", "black"


def across_classes(labels, count: int) -> list[int]:
    """Indices of ``count`` images taken one per class in turn (class 0's first, class 1's first, ...).

    A class-sorted set's first images would all be of one class.
    """
    labels = np.asarray(labels)
    queues = [list(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    picked: list[int] = []
    while len(picked) < min(count, len(labels)):
        for queue in queues:
            if queue and len(picked) < count:
                picked.append(int(queue.pop(0)))
    return picked


def _pixels(image: np.ndarray) -> np.ndarray:
    """HWC uint8 from HWC uint8 or float in [0, 1] (CHW is turned)."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[0] in (1, 3) and image.shape[-1] not in (1, 3):
        image = image.transpose(1, 2, 0)
    if image.dtype != np.uint8:
        image = np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8)
    return image[..., 0] if image.shape[-1] == 1 else image


def image_sheet(rows: list[tuple[str, list[tuple[np.ndarray, list[str], bool]]]], *, title: str | None = None):
    """A Figure of rows of captioned images.

    Parameters
    ----------
    rows : list of (str, list of (array, list of str, bool))
        Per row its title and its tiles: the image (HWC or CHW, uint8 or
        float in [0, 1]), its caption lines (short: a tile is about 18
        characters wide at this size), and whether the prediction is wrong
        (a red caption).

    Raises
    ------
    ValueError
        If there is no row or no tile.
    """
    from shared.reports.charts import figure

    if not rows or not any(tiles for _, tiles in rows):
        raise ValueError("an image sheet needs at least one row with one image")
    cols = max(len(tiles) for _, tiles in rows)
    fig = figure((max(cols * TILE_W, 4.0), len(rows) * (TILE_H + ROW_TITLE_H) + (0.3 if title else 0)))
    if title:
        fig.suptitle(title, fontsize=11)
    for sub, (row_title, tiles) in zip(np.atleast_1d(fig.subfigures(len(rows), 1)), rows):
        sub.suptitle(row_title, x=0.005, ha="left", fontsize=9, fontweight="bold")
        for c, ax in enumerate(np.atleast_1d(sub.subplots(1, cols))):
            ax.set_axis_off()
            if c >= len(tiles):
                continue
            image, lines, wrong = tiles[c]
            ax.imshow(_pixels(image), interpolation="nearest", cmap="gray")
            ax.set_title("\n".join(lines), fontsize=CAPTION_PT, color=WRONG if wrong else RIGHT, pad=3)
    return fig


def prediction_tiles(images, truth, predictions, classes) -> list[tuple[np.ndarray, list[str], bool]]:
    """Tiles captioned ``true: cat`` / ``pred: dog``, red where the prediction is wrong."""
    return [(image, [f"true: {_name(classes, t)}", f"pred: {_name(classes, p)}"], int(t) != int(p))
            for image, t, p in zip(images, truth, predictions)]


def _name(classes, index) -> str:
    index = int(index)
    return classes[index] if 0 <= index < len(classes) else str(index)


def save(fig, path: str | Path) -> Path:
    """Write a sheet as PNG (:func:`shared.reports.charts.save`)."""
    from shared.reports.charts import save as save_png

    return save_png(fig, path)
