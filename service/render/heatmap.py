"""A unit's activation map drawn over the image it was computed on."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from PIL import Image

from service.render.patches import to_rgb

# Anchors of matplotlib's viridis at 0, 1/8, ..., 1: perceptually uniform and readable in grey,
# so stronger activation always looks brighter. Interpolated into a 256-entry table once.
_VIRIDIS_ANCHORS = np.array([
    (68, 1, 84), (71, 44, 122), (59, 81, 139), (44, 113, 142), (33, 144, 141),
    (39, 173, 129), (92, 200, 99), (170, 220, 50), (253, 231, 37),
], dtype=np.float64)
_LEVELS = np.linspace(0.0, 1.0, 256)
COLORMAP = np.stack(
    [np.interp(_LEVELS, np.linspace(0.0, 1.0, len(_VIRIDIS_ANCHORS)), channel) for channel in _VIRIDIS_ANCHORS.T],
    axis=1,
).round().astype(np.uint8)
"""256 x 3 uint8 lookup table: normalised activation level -> RGB."""


def normalise(activation: ArrayLike) -> np.ndarray:
    """Scale a 2-D map to 0..1 (min -> 0, max -> 1); a constant map becomes all zeros."""
    values = np.asarray(activation, dtype=np.float64)
    if values.ndim != 2 or values.size == 0:
        raise ValueError(f"activation must be a non-empty 2-D map, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError("activation contains NaN or infinite values")
    low, high = values.min(), values.max()
    if high == low:
        return np.zeros_like(values)
    return (values - low) / (high - low)


def heatmap(image: Image.Image, activation: ArrayLike, alpha: float = 0.5) -> Image.Image:
    """Blend the coloured map over ``image``: ``alpha`` 0 shows only the image, 1 only the map.

    The map is upsampled bilinearly (pixel centres aligned) to cover the whole of ``image``, so
    pass the image as the model saw it (after its resize and crop) for neurons to line up.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be within 0..1, got {alpha}")
    levels = Image.fromarray(normalise(activation).astype(np.float32), mode="F")
    upsampled = np.asarray(levels.resize(image.size, Image.Resampling.BILINEAR))
    indices = np.rint(np.clip(upsampled, 0.0, 1.0) * 255).astype(np.uint8)
    return Image.blend(to_rgb(image), Image.fromarray(COLORMAP[indices]), alpha)
