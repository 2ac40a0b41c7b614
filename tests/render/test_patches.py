from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image

from service.render import PAD_COLOR, RESAMPLE, crop_patch, patch_layout, to_rgb


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def assert_padded_outside(patch: Image.Image, target: tuple[int, int, int, int]) -> None:
    outside = np.ones((patch.height, patch.width), dtype=bool)
    x0, y0, x1, y1 = target
    outside[y0:y1, x0:x1] = False
    assert (pixels(patch)[outside] == PAD_COLOR).all()


def test_crop_patch_of_box_inside_image_equals_plain_crop_and_resize(photo):
    box = (120, 80, 270, 230)

    patch = crop_patch(photo, box, 96)

    assert patch.mode == "RGB" and patch.size == (96, 96)
    assert np.array_equal(pixels(patch), pixels(photo.crop(box).resize((96, 96))))


# Boxes of side 150 at scale 1 (size 150): the visible part must be the raw pixels, unresampled.
EDGE_BOXES = {
    "left": ((-40, 100, 110, 250), (40, 0, 150, 150)),
    "top": ((100, -60, 250, 90), (0, 60, 150, 150)),
    "right": ((400, 100, 550, 250), (0, 0, 100, 150)),
    "bottom": ((100, 300, 250, 450), (0, 0, 150, 75)),
    "top-left": ((-10, -20, 140, 130), (10, 20, 150, 150)),
    "bottom-right": ((450, 325, 600, 475), (0, 0, 50, 50)),
}


@pytest.mark.parametrize("box, target", EDGE_BOXES.values(), ids=EDGE_BOXES.keys())
def test_crop_patch_pads_with_grey_where_box_leaves_image_at_each_edge(photo, box, target):
    patch = crop_patch(photo, box, 150)

    layout = patch_layout(box, photo.width, photo.height, 150)
    assert layout.target == target
    x0, y0, x1, y1 = target
    assert np.array_equal(pixels(patch)[y0:y1, x0:x1], pixels(photo.crop(layout.source)))
    assert_padded_outside(patch, target)


@pytest.mark.parametrize("box", [(-60, 400, 140, 600), (-30, -50, 150, 130), (440, 100, 620, 290)],
                         ids=["bottom-left", "top-left", "right-tall"])
def test_crop_patch_visible_part_equals_clipped_crop_resized_the_same_way(square_photo, box):
    patch = crop_patch(square_photo, box, 96)

    layout = patch_layout(box, square_photo.width, square_photo.height, 96)
    x0, y0, x1, y1 = layout.target
    expected = square_photo.crop(layout.source).resize((x1 - x0, y1 - y0), RESAMPLE)
    assert np.array_equal(pixels(patch)[y0:y1, x0:x1], pixels(expected))
    assert_padded_outside(patch, layout.target)


@pytest.mark.parametrize("box", [(-200, 0, -1, 200), (500, 0, 700, 200), (0, -300, 200, 0), (0, 375, 200, 575)],
                         ids=["left", "right", "above", "below"])
def test_crop_patch_of_box_fully_outside_image_is_all_grey(photo, box):
    patch = crop_patch(photo, box, 64)

    assert patch_layout(box, photo.width, photo.height, 64) is None
    assert_padded_outside(patch, (0, 0, 0, 0))


def test_crop_patch_of_box_larger_than_image_pads_all_four_sides():
    image = Image.new("RGB", (10, 10), (255, 0, 0))

    patch = crop_patch(image, (-5, -5, 15, 15), 20)

    assert_padded_outside(patch, (5, 5, 15, 15))
    assert (pixels(patch)[5:15, 5:15] == (255, 0, 0)).all()


def test_crop_patch_keeps_aspect_of_wide_box_by_centring_it():
    image = Image.new("RGB", (200, 100), (0, 0, 255))

    patch = crop_patch(image, (0, 0, 200, 100), 100)

    assert patch_layout((0, 0, 200, 100), 200, 100, 100).target == (0, 25, 100, 75)
    assert_padded_outside(patch, (0, 25, 100, 75))
    assert (pixels(patch)[25:75] == (0, 0, 255)).all()


def test_patch_layout_rounds_half_pixels_up():
    # side 4 onto 2 pixels: the image starts 1 input pixel (half an output pixel) into the frame
    assert patch_layout((-1, 0, 3, 4), 10, 10, 2).target == (1, 0, 2, 2)


def test_patch_layout_drops_visible_sliver_thinner_than_half_an_output_pixel():
    assert patch_layout((-499, 0, 1, 500), 10, 500, 96) is None


def _sixteen_bit() -> Image.Image:
    image = Image.new("I;16", (4, 4))
    image.frombytes(np.linspace(0, 65535, 16).astype("<u2").tobytes())
    return image


MODES = {
    "L": lambda rgb: rgb.convert("L"),
    "P": lambda rgb: rgb.convert("P"),
    "RGBA": lambda rgb: rgb.convert("RGBA"),
    "CMYK": lambda rgb: rgb.convert("CMYK"),
    "LA": lambda rgb: rgb.convert("LA"),
    "1": lambda rgb: rgb.convert("1"),
    "I;16": lambda rgb: _sixteen_bit(),
}


@pytest.mark.parametrize("make", MODES.values(), ids=MODES.keys())
def test_crop_patch_converts_any_mode_to_rgb_like_converting_first(photo, make):
    image = make(photo.crop((0, 0, 64, 64)))
    box = (-2, 1, 5, 8)

    patch = crop_patch(image, box, 14)

    layout = patch_layout(box, image.width, image.height, 14)
    x0, y0, x1, y1 = layout.target
    expected = to_rgb(image).crop(layout.source).resize((x1 - x0, y1 - y0), RESAMPLE)
    assert patch.mode == "RGB"
    assert np.array_equal(pixels(patch)[y0:y1, x0:x1], pixels(expected))


def test_to_rgb_scales_sixteen_bit_grey_to_full_range_instead_of_clipping():
    image = Image.new("I;16", (4, 1))
    image.frombytes(np.array([0, 257, 32896, 65535], dtype="<u2").tobytes())

    assert pixels(to_rgb(image))[0, :, 0].tolist() == [0, 1, 128, 255]


@pytest.mark.parametrize("box", [(10, 10, 10, 20), (10, 20, 30, 5)])
def test_crop_patch_refuses_empty_box(photo, box):
    with pytest.raises(ValueError, match="empty box"):
        crop_patch(photo, box, 32)


def test_crop_patch_refuses_size_below_one(photo):
    with pytest.raises(ValueError, match="size"):
        crop_patch(photo, (0, 0, 10, 10), 0)


def test_crop_patch_cuts_nine_cells_from_a_photo_in_a_few_milliseconds(photo):
    boxes = [(x, y, x + 160, y + 160) for x in (-40, 170, 380) for y in (-40, 110, 260)]
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for box in boxes:
            crop_patch(photo, box, 96)
        best = min(best, time.perf_counter() - start)
    assert best < 0.03, f"9 patches took {best * 1000:.1f} ms"
