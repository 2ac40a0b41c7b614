"""Receptive-field patches: the box's content, padded with grey where the box leaves the image.

The placement arithmetic lives in :func:`patch_layout` so that callers and tests can say exactly
which part of a patch came from which part of the image, and check it pixel for pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

Box = tuple[int, int, int, int]

PAD_COLOR = (128, 128, 128)
"""Neutral grey for the part of a receptive field that lies outside the image (the model saw
zero padding there, which after mean subtraction is about mid-grey)."""

RESAMPLE = Image.Resampling.BICUBIC
"""Pillow's default filter for ``Image.resize``, so ``image.crop(box).resize((s, s))`` reproduces a
patch whose box lies inside the image."""

_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})


def to_rgb(image: Image.Image) -> Image.Image:
    """Return ``image`` as RGB.

    Pillow's own conversion clips 16-bit greyscale at 255 (a 16-bit PNG turns white), so those modes
    are scaled from 0..65535 to 0..255 instead. Alpha is dropped rather than composited, because the
    model is fed the RGB channels as they are.
    """
    if image.mode == "RGB":
        return image
    if image.mode in _SIXTEEN_BIT_MODES:
        wide = np.asarray(image).astype(np.uint32)
        return Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8)).convert("RGB")
    return image.convert("RGB")


@dataclass(frozen=True)
class PatchLayout:
    """Where the visible part of a box goes: ``source`` (image pixels) is resized onto ``target``
    (patch pixels); everything else in the patch is :data:`PAD_COLOR`."""

    source: Box
    target: Box


def _scaled(value: int, size: int, side: int) -> int:
    """``round(value * size / side)`` with halves rounded up, in exact integer arithmetic."""
    return (2 * value * size + side) // (2 * side)


def patch_layout(box: Box, width: int, height: int, size: int) -> PatchLayout | None:
    """Place ``box`` (unclipped, original-image pixels) in a ``size`` x ``size`` patch.

    A non-square box is centred in a square frame of its longer side, so its aspect is kept; the
    frame maps linearly onto the patch. Returns None when no pixel of the box is in the image.
    """
    x0, y0, x1, y1 = box
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"empty box {box}: need x0 < x1 and y0 < y1")
    if size < 1:
        raise ValueError(f"patch size must be at least 1, got {size}")
    side = max(x1 - x0, y1 - y0)
    frame_x = x0 - (side - (x1 - x0)) // 2
    frame_y = y0 - (side - (y1 - y0)) // 2
    source = (max(x0, 0), max(y0, 0), min(x1, width), min(y1, height))
    target = (
        _scaled(source[0] - frame_x, size, side),
        _scaled(source[1] - frame_y, size, side),
        _scaled(source[2] - frame_x, size, side),
        _scaled(source[3] - frame_y, size, side),
    )
    if target[2] <= target[0] or target[3] <= target[1]:
        return None
    return PatchLayout(source, target)


def crop_patch(image: Image.Image, box: Box, size: int) -> Image.Image:
    """The content of ``box`` as an RGB ``size`` x ``size`` patch, grey where it leaves the image.

    Only the visible part is cropped, converted and resized, so a large image costs no more than
    its patch.
    """
    layout = patch_layout(box, image.width, image.height, size)
    patch = Image.new("RGB", (size, size), PAD_COLOR)
    if layout is not None:
        tx0, ty0, tx1, ty1 = layout.target
        visible = to_rgb(image.crop(layout.source)).resize((tx1 - tx0, ty1 - ty0), RESAMPLE)
        patch.paste(visible, (tx0, ty0))
    return patch
