"""Preprocess parameters and the model-input -> original-image box mapping."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import service.scan.geometry as geometry
from service.scan.data import read_image
from service.scan.errors import ModelSpecError
from service.scan.geometry import IMAGENET_CLASSIC, Preprocess, crop_origin, original_box, resized_size


def test_geometry_does_not_import_torch():
    tree = ast.parse(Path(geometry.__file__).read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not any(name.startswith(("torch", "numpy", "PIL")) for name in imported)


def test_resize_and_crop_follow_torchvision_rounding():
    assert resized_size(500, 375, IMAGENET_CLASSIC) == (341, 256)   # int(256 * 500 / 375)
    assert crop_origin(500, 375, IMAGENET_CLASSIC) == (58, 16)      # round(58.5) is 58 in Python
    assert resized_size(300, 300, IMAGENET_CLASSIC) == (256, 256)


def test_whole_input_maps_to_the_cropped_region_rounded_outward():
    # x: 58*500/341 = 85.04 -> 85, 282*500/341 = 413.5 -> 414; y: 16*375/256 = 23.4 -> 23, 240*375/256 = 351.6 -> 352
    assert original_box((0, 0, 224, 224), 500, 375, IMAGENET_CLASSIC) == (85, 23, 414, 352)


def test_padded_boxes_are_clipped_only_on_request():
    box = (-20, -20, 30, 30)
    assert original_box(box, 224, 224, Preprocess(None, 224, (0, 0, 0), (1, 1, 1), 224)) == (0, 0, 30, 30)
    assert original_box(box, 224, 224, Preprocess(None, 224, (0, 0, 0), (1, 1, 1), 224), clip=False) == (-20, -20, 30, 30)


def test_small_image_crop_padding_is_undone():
    pre = Preprocess(resize=None, crop=32, mean=(0, 0, 0), std=(1, 1, 1), input_size=32)
    assert crop_origin(20, 11, pre) == (-6, -10)
    assert original_box((6, 10, 26, 21), 20, 11, pre) == (0, 0, 20, 11)


@pytest.mark.parametrize("size", [(640, 427), (333, 500), (1000, 250)])
def test_a_marker_in_the_model_input_maps_back_onto_the_marker(tmp_path, size):
    """Paint a block in the original, find it in the model input, map that box back."""
    width, height = size
    arr = np.zeros((height, width, 3), dtype=np.uint8)
    x0, y0, x1, y1 = width // 2 - 30, height // 2 - 20, width // 2 + 10, height // 2 + 25
    arr[y0:y1, x0:x1] = 255
    Image.fromarray(arr).save(tmp_path / "m.png")
    pixels, _, _ = read_image(tmp_path / "m.png", IMAGENET_CLASSIC)
    ys, xs = np.nonzero(pixels.numpy()[0] > 0)
    found = original_box((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1), width, height, IMAGENET_CLASSIC)
    assert found[0] <= x0 and found[1] <= y0 and found[2] >= x1 and found[3] >= y1  # covers it
    assert all(abs(a - b) <= 3 for a, b in zip(found, (x0, y0, x1, y1)))  # and little more


def test_preprocess_round_trips_and_validates():
    assert Preprocess.from_dict(IMAGENET_CLASSIC.to_dict()) == IMAGENET_CLASSIC
    assert Preprocess.from_dict({"crop": 64}).input_size == 64
    for bad in ({"crop": 64, "input_size": 32}, {"resize": 0, "input_size": 4}, {"mean": [0, 0]}, {}, {"zoom": 2}):
        with pytest.raises(ModelSpecError):
            Preprocess.from_dict(bad)
