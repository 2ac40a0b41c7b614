"""Zeiler–Fergus style grids: cells in rank order, row-major, with an optional label above each.

The layout is a pure function (:func:`cell_origin`) so callers can find any cell in a rendered
grid without re-deriving the geometry.
"""

from __future__ import annotations

import math
from functools import cache

from PIL import Image, ImageDraw, ImageFont

from service.render.patches import to_rgb

BACKGROUND = (255, 255, 255)
TEXT_COLOR = (0, 0, 0)
LABEL_HEIGHT = 14
"""Height of the band above each labelled cell: room for one line of Pillow's default font
(about 10 px tall) with a pixel of margin."""
MONTAGE_GAP = 8

CellSize = int | tuple[int, int]


def cell_origin(index: int, cols: int, cell_size: CellSize, gap: int, label_height: int = 0) -> tuple[int, int]:
    """Top-left pixel of cell ``index`` in a grid of ``cols`` columns.

    ``cell_size`` is the side of square cells or ``(width, height)``; ``label_height`` is the band
    above each cell when the grid is labelled. There is no outer margin: an unlabelled grid's first
    cell sits at (0, 0).
    """
    width, height = (cell_size, cell_size) if isinstance(cell_size, int) else cell_size
    row, col = divmod(index, cols)
    return col * (width + gap), row * (height + label_height + gap) + label_height


def grid_columns(count: int, cols: int | None = None) -> int:
    """The number of columns :func:`grid` uses for ``count`` cells: ``cols`` (default
    ceil(sqrt(count))), never more than ``count``, so a grid of one short row has no empty columns."""
    if cols is not None and cols < 1:
        raise ValueError(f"cols must be at least 1, got {cols}")
    return min(cols or math.ceil(math.sqrt(count)), count)


@cache
def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's bundled font, loaded once per process: it needs no font files on the server."""
    return ImageFont.load_default()


def _fit(text: str, width: int) -> str:
    """Drop trailing characters until ``text`` fits in ``width`` pixels, so a long label never
    runs into its neighbour."""
    font = _font()
    while text and font.getlength(text) > width:
        text = text[:-1]
    return text


def grid(cells: list[Image.Image], cols: int | None = None, gap: int = 2,
         labels: list[str] | None = None) -> Image.Image:
    """Tile ``cells`` row-major on a white background, ``cols`` wide (default ceil(sqrt(n))).

    Every cell gets a slot of the largest cell's size and is pasted unchanged at the slot's top-left,
    so a cell's pixels in the grid equal the cell. Labels go in a band above each cell, where they
    stay next to their cell even when cells differ in height.
    """
    if not cells:
        raise ValueError("a grid needs at least one cell")
    if labels is not None and len(labels) != len(cells):
        raise ValueError(f"{len(labels)} labels for {len(cells)} cells")
    if gap < 0:
        raise ValueError(f"gap must not be negative, got {gap}")
    count = len(cells)
    cols = grid_columns(count, cols)
    rows = math.ceil(count / cols)
    slot = (max(cell.width for cell in cells), max(cell.height for cell in cells))
    label_height = LABEL_HEIGHT if labels is not None else 0
    canvas = Image.new(
        "RGB",
        (cols * slot[0] + (cols - 1) * gap, rows * (slot[1] + label_height) + (rows - 1) * gap),
        BACKGROUND,
    )
    draw = ImageDraw.Draw(canvas) if labels is not None else None
    for index, cell in enumerate(cells):
        x, y = cell_origin(index, cols, slot, gap, label_height)
        canvas.paste(to_rgb(cell), (x, y))
        if draw is not None:
            draw.text((x + 1, y - label_height + 1), _fit(labels[index], slot[0] - 2), fill=TEXT_COLOR, font=_font())
    return canvas


def montage(grids: list[Image.Image], labels: list[str]) -> Image.Image:
    """Many units' grids at a glance: a grid of grids, each labelled (e.g. "unit 7") above,
    with wider gaps than inside a grid so units read as separate blocks."""
    return grid(grids, gap=MONTAGE_GAP, labels=labels)
