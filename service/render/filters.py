"""A convolution's filters as small images: what a first-layer unit responds to, in pixel space."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from PIL import Image

from service.render.grid import grid


def filter_tiles(weights: ArrayLike) -> np.ndarray:
    """``[C, Cin, kh, kw]`` weights -> ``[C, kh, kw, 3]`` uint8 tiles.

    Each filter is scaled by its own largest magnitude, symmetrically, so zero is mid-grey (128)
    and the sign of every weight stays visible. Three input channels read as RGB; one input
    channel (greyscale models, depthwise convs) as grey. Other channel counts are refused with
    ValueError: averaging many feature channels into one grey would picture nothing real.
    """
    array = np.asarray(weights, dtype=np.float64)
    if array.ndim != 4 or 0 in array.shape:
        raise ValueError(f"weights must have shape [C, Cin, kh, kw], got {array.shape}")
    if array.shape[1] not in (1, 3):
        raise ValueError(f"filters can be drawn for 1 or 3 input channels (first-layer convs), got {array.shape[1]}")
    if not np.isfinite(array).all():
        raise ValueError("weights contain NaN or infinite values")
    peak = np.abs(array).max(axis=(1, 2, 3), keepdims=True)
    scaled = array / np.where(peak == 0, 1.0, peak)
    tiles = np.rint(127.5 + 127.5 * scaled).astype(np.uint8)
    return np.broadcast_to(tiles, (array.shape[0], 3, *array.shape[2:])).transpose(0, 2, 3, 1)


def filters_image(weights: ArrayLike, scale: int = 8) -> Image.Image:
    """All filters, each enlarged ``scale`` times with NEAREST (so every weight is a crisp block),
    tiled with :func:`service.render.grid.grid` in channel order."""
    if scale < 1:
        raise ValueError(f"scale must be at least 1, got {scale}")
    tiles = filter_tiles(weights)
    kernel_height, kernel_width = tiles.shape[1:3]
    size = (kernel_width * scale, kernel_height * scale)
    return grid([Image.fromarray(tile).resize(size, Image.Resampling.NEAREST) for tile in tiles])
