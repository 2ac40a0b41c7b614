"""Stored top-k entries -> pictures: the glue between store rows, geometry and ``service.render``.

Boxes come from the stored unclipped model-input box mapped through the index's preprocessing
with ``clip=False``, so a receptive field that hangs over the image edge is drawn padded, exactly
as the model saw it, instead of squeezed into the visible part.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from PIL import Image as PILImage

from service.api.lookup import image_file
from service.render import crop_patch, grid, heatmap, montage
from service.scan.geometry import Preprocess, original_box
from service.store.models import Activation, Image, Index

# Distinct originals one montage keeps decoded (a 16-unit montage may show ~140 crops of far
# fewer photos); bounded so a montage over a huge-image dataset stays within memory.
_ORIGINALS_KEPT = 16
MAX_VIEW_SIDE = 512


def unclipped_box(a: Activation, image: Image, preprocess: Preprocess) -> tuple[int, int, int, int]:
    return original_box((a.in_x0, a.in_y0, a.in_x1, a.in_y1), image.width, image.height, preprocess, clip=False)


class PatchPainter:
    """Crops receptive fields out of one index's originals, decoding each photo once per render."""

    def __init__(self, index: Index):
        self.index = index
        self.preprocess = Preprocess.from_dict(index.preprocess)
        self._open = lru_cache(maxsize=_ORIGINALS_KEPT)(self._decode)

    @staticmethod
    def _decode(path: Path) -> PILImage.Image:
        with PILImage.open(path) as original:
            original.load()
            return original

    def original(self, image: Image) -> PILImage.Image:
        return self._open(image_file(self.index, image))

    def patch(self, a: Activation, image: Image, size: int) -> PILImage.Image:
        return crop_patch(self.original(image), unclipped_box(a, image, self.preprocess), size)

    def grid(self, entries: list[tuple[Activation, Image]], size: int) -> PILImage.Image:
        return grid([self.patch(a, image, size) for a, image in entries])

    def montage(self, grids_by_unit: dict[int, list[tuple[Activation, Image]]], size: int) -> PILImage.Image:
        units = [unit for unit, entries in grids_by_unit.items() if entries]
        return montage([self.grid(grids_by_unit[u], size) for u in units], [f"unit {u}" for u in units])

    def model_view(self, image: Image) -> PILImage.Image:
        """The image as the model saw it (resized and centre-cropped, padded where the crop
        leaves a small image), at up to original resolution: what an activation map lines up with."""
        side = self.preprocess.input_size
        box = original_box((0, 0, side, side), image.width, image.height, self.preprocess, clip=False)
        return crop_patch(self.original(image), box, min(max(box[2] - box[0], box[3] - box[1]), MAX_VIEW_SIDE))

    def activation_overlay(self, image: Image, values, alpha: float) -> PILImage.Image:
        return heatmap(self.model_view(image), values, alpha=alpha)
