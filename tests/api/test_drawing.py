"""Patch rendering cost follows the patches drawn, not the size of the originals they come from."""

from __future__ import annotations

import numpy as np
from PIL import Image

from service.api import drawing
from service.render import crop_patch

SIDE = 6000


def smooth_photo(path) -> None:
    ramp = np.linspace(0, 255, SIDE, dtype=np.float32)
    pixels = np.stack([np.tile(ramp, (SIDE, 1)), np.tile(ramp[:, None], (1, SIDE)),
                       np.full((SIDE, SIDE), 90, np.float32)], axis=-1).astype(np.uint8)
    Image.fromarray(pixels).save(path, quality=90)


def test_patches_of_a_huge_original_are_cut_from_a_reduced_decode(tmp_path, monkeypatch):
    path = tmp_path / "huge.jpg"
    smooth_photo(path)
    seen: list[tuple[int, int]] = []
    real_crop = drawing.crop_patch
    monkeypatch.setattr(drawing, "crop_patch", lambda image, box, size: seen.append(image.size) or real_crop(image, box, size))
    monkeypatch.setattr(drawing, "image_file", lambda index, image: path)
    painter = drawing.PatchPainter.__new__(drawing.PatchPainter)  # crops() needs no preprocessing
    painter.index = None
    image = type("Row", (), {"width": SIDE, "height": SIDE})()
    boxes = [(-500, -500, 4000, 4000), (1000, 2000, 5800, 6800)]
    patches = painter.crops(image, boxes, 96)
    assert len(seen) == 2 and max(max(size) for size in seen) <= SIDE // 8  # decoded reduced, once
    with Image.open(path) as full:
        full.load()
        for box, patch in zip(boxes, patches):
            expected = np.asarray(crop_patch(full, box, 96), dtype=np.int16)
            assert patch.size == (96, 96)
            assert np.abs(np.asarray(patch, dtype=np.int16) - expected).mean() < 2.0


def test_small_originals_are_cut_in_full_so_patches_stay_exact(tmp_path, monkeypatch):
    path = tmp_path / "small.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(path)
    monkeypatch.setattr(drawing, "image_file", lambda index, image: path)
    painter = drawing.PatchPainter.__new__(drawing.PatchPainter)
    painter.index = None
    image = type("Row", (), {"width": 400, "height": 300})()
    box = (-20, 10, 180, 210)
    with Image.open(path) as full:
        assert np.array_equal(np.asarray(painter.crops(image, [box], 64)[0]), np.asarray(crop_patch(full, box, 64)))
