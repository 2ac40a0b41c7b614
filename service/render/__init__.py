"""Pillow-only rendering: receptive-field patches, Zeiler–Fergus grids, heatmaps, filter images, PNG.

Imports PIL and numpy only (no torch, no Flask), so the API can render from stored data alone.
"""

from service.render.encode import to_png
from service.render.filters import filter_tiles, filters_image
from service.render.grid import LABEL_HEIGHT, MONTAGE_GAP, cell_origin, grid, grid_columns, montage
from service.render.heatmap import COLORMAP, heatmap, normalise
from service.render.patches import PAD_COLOR, RESAMPLE, PatchLayout, crop_patch, patch_layout, to_rgb

__all__ = [
    "COLORMAP",
    "LABEL_HEIGHT",
    "MONTAGE_GAP",
    "PAD_COLOR",
    "RESAMPLE",
    "PatchLayout",
    "cell_origin",
    "crop_patch",
    "filter_tiles",
    "filters_image",
    "grid",
    "grid_columns",
    "heatmap",
    "montage",
    "normalise",
    "patch_layout",
    "to_png",
    "to_rgb",
]
