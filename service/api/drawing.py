"""Stored top-k entries -> pictures: the glue between store rows, geometry and ``service.render``.

Boxes come from the stored unclipped model-input box mapped through the index's preprocessing
with ``clip=False``, so a receptive field that hangs over the image edge is drawn padded, exactly
as the model saw it, instead of squeezed into the visible part.

Cost is bounded by what is drawn, not by how large the originals are. Patches are cut image by
image (each original decoded once per render, then dropped, so at most one is held at a time),
and an original is decoded only as finely as its largest-scale patch needs: when every box cut
from it spans at least ``REDUCE_MARGIN`` source pixels per patch pixel at a reduced scale, it is
decoded reduced (JPEG DCT scaling, then ``Image.reduce``). Measured on sixteen 8000x8000 photos:
a 64-unit montage took 188 s and 5.5 GB peak before; small photos are decoded in full as before,
so their patches are pixel-for-pixel ``crop_patch`` of the original.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

from PIL import Image as PILImage

from service.api.lookup import image_file
from service.render import crop_patch, grid, heatmap, montage
from service.render.patches import Box
from service.scan.geometry import Preprocess, original_box
from service.store.models import Activation, Image, Index

MAX_VIEW_SIDE = 512
REDUCE_MARGIN = 3  # source pixels per patch pixel kept when an original is decoded reduced
_JPEG_DRAFT_MAX = 8  # libjpeg scales by 1/2, 1/4 or 1/8 while decoding


def unclipped_box(a: Activation, image: Image, preprocess: Preprocess) -> Box:
    return original_box((a.in_x0, a.in_y0, a.in_x1, a.in_y1), image.width, image.height, preprocess, clip=False)


def reduction(boxes: list[Box], size: int) -> int:
    """The largest integer factor an original can be shrunk by while every box keeps at least
    ``REDUCE_MARGIN`` source pixels per pixel of its ``size``-pixel patch (1: decode in full)."""
    side = min(max(x1 - x0, y1 - y0) for x0, y0, x1, y1 in boxes)
    return max(1, side // (REDUCE_MARGIN * size))


def decode(path: Path, factor: int) -> tuple[PILImage.Image, tuple[int, int]]:
    """The image at ``path`` shrunk by about ``factor`` (exactly as stored when 1), and the size
    it has in full."""
    with PILImage.open(path) as original:
        width, height = original.size
        if factor > 1 and original.format == "JPEG":
            scale = min(factor, _JPEG_DRAFT_MAX)
            original.draft(original.mode if original.mode in ("RGB", "L") else "RGB",
                           (math.ceil(width / scale), math.ceil(height / scale)))
        original.load()
        image = original
    rest = max(1, (image.width * factor) // width)  # what DCT scaling left to do
    return (image.reduce(rest) if rest > 1 else image), (width, height)


def scaled_box(box: Box, sx: float, sy: float) -> Box:
    """``box`` in a reduced image's pixels, rounded outward."""
    x0, y0, x1, y1 = box
    return math.floor(x0 * sx), math.floor(y0 * sy), math.ceil(x1 * sx), math.ceil(y1 * sy)


class PatchPainter:
    """Crops receptive fields out of one index's originals, decoding each photo once per render."""

    def __init__(self, index: Index):
        self.index = index
        self.preprocess = Preprocess.from_dict(index.preprocess)

    def crops(self, image: Image, boxes: list[Box], size: int) -> list[PILImage.Image]:
        """``crop_patch`` of each box (original-image pixels) from one decoded original."""
        decoded, (width, height) = decode(image_file(self.index, image), reduction(boxes, size))
        sx, sy = decoded.width / width, decoded.height / height
        if (sx, sy) == (1, 1):
            return [crop_patch(decoded, box, size) for box in boxes]
        return [crop_patch(decoded, scaled_box(box, sx, sy), size) for box in boxes]

    def patches(self, entries: list[tuple[Activation, Image]], size: int) -> list[PILImage.Image]:
        """One patch per entry, in entry order, cut image by image."""
        by_image: dict[int, list[int]] = defaultdict(list)
        for position, (_, image) in enumerate(entries):
            by_image[image.id].append(position)
        out: list[PILImage.Image | None] = [None] * len(entries)
        for positions in by_image.values():
            image = entries[positions[0]][1]
            boxes = [unclipped_box(entries[p][0], image, self.preprocess) for p in positions]
            for position, patch in zip(positions, self.crops(image, boxes, size)):
                out[position] = patch
        return out

    def patch(self, a: Activation, image: Image, size: int) -> PILImage.Image:
        return self.patches([(a, image)], size)[0]

    def grid(self, entries: list[tuple[Activation, Image]], size: int) -> PILImage.Image:
        return grid(self.patches(entries, size))

    def montage(self, grids_by_unit: dict[int, list[tuple[Activation, Image]]], size: int) -> PILImage.Image:
        units = [unit for unit, entries in grids_by_unit.items() if entries]
        flat = [entry for unit in units for entry in grids_by_unit[unit]]
        cells = iter(self.patches(flat, size))
        grids = [grid([next(cells) for _ in grids_by_unit[unit]]) for unit in units]
        return montage(grids, [f"unit {u}" for u in units])

    def model_view(self, image: Image) -> PILImage.Image:
        """The image as the model saw it (resized and centre-cropped, padded where the crop
        leaves a small image), at up to original resolution: what an activation map lines up with."""
        side = self.preprocess.input_size
        box = original_box((0, 0, side, side), image.width, image.height, self.preprocess, clip=False)
        size = min(max(box[2] - box[0], box[3] - box[1]), MAX_VIEW_SIDE)
        return self.crops(image, [box], size)[0]

    def activation_overlay(self, image: Image, values, alpha: float) -> PILImage.Image:
        return heatmap(self.model_view(image), values, alpha=alpha)
