from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from service.render import COLORMAP, heatmap, normalise


def test_heatmap_has_the_image_size_and_rgb_mode(photo):
    result = heatmap(photo, np.random.default_rng(0).random((7, 7)))

    assert result.mode == "RGB" and result.size == photo.size


def test_heatmap_with_alpha_zero_is_the_image(photo):
    assert np.array_equal(np.asarray(heatmap(photo, [[0.0, 1.0]], alpha=0.0)), np.asarray(photo))


def test_heatmap_places_the_peak_where_the_map_peaks():
    activation = np.zeros((4, 4))
    activation[0, 3] = 5.0

    colours = np.asarray(heatmap(Image.new("RGB", (80, 40)), activation, alpha=1.0))

    assert np.array_equal(colours[0, -1], COLORMAP[255])
    assert np.array_equal(colours[-1, 0], COLORMAP[0])


def test_heatmap_upsamples_smoothly_between_neurons():
    colours = np.asarray(heatmap(Image.new("RGB", (64, 1)), [[0.0, 1.0]], alpha=1.0))

    levels = [int(np.abs(COLORMAP.astype(int) - pixel).sum(axis=1).argmin()) for pixel in colours[0]]
    assert levels == sorted(levels) and len(set(levels)) > 16


def test_heatmap_blends_map_and_image_by_alpha():
    image = Image.new("RGB", (6, 6), (200, 100, 0))

    blended = np.asarray(heatmap(image, [[1.0, 1.0], [1.0, 1.0]], alpha=0.5)).astype(int)

    assert (np.abs(blended - (np.array([200, 100, 0]) + COLORMAP[0]) / 2) <= 1).all()


def test_heatmap_of_constant_map_is_uniform_without_dividing_by_zero():
    colours = np.asarray(heatmap(Image.new("RGB", (10, 10)), np.full((3, 3), 7.0), alpha=1.0))

    assert (colours == COLORMAP[0]).all()


def test_heatmap_takes_lists_like_arrays(photo):
    rows = [[0.0, 2.0, 1.0], [3.0, 0.5, 0.0]]

    assert np.array_equal(np.asarray(heatmap(photo, rows)), np.asarray(heatmap(photo, np.array(rows))))


def test_normalise_maps_minimum_to_zero_and_maximum_to_one():
    assert normalise([[-2.0, 0.0], [2.0, 6.0]]).tolist() == [[0.0, 0.25], [0.5, 1.0]]


def test_colormap_never_darkens_from_low_to_high():
    luminance = COLORMAP.astype(float) @ [0.2126, 0.7152, 0.0722]

    assert COLORMAP.shape == (256, 3) and (np.diff(luminance) >= 0).all() and luminance[-1] > 8 * luminance[0]


@pytest.mark.parametrize("activation", [[1.0, 2.0], [[]], [[1.0, float("nan")]], [[float("inf")]]],
                         ids=["one-dimensional", "empty", "nan", "infinite"])
def test_heatmap_refuses_maps_that_are_not_finite_and_two_dimensional(activation):
    with pytest.raises(ValueError, match="activation"):
        heatmap(Image.new("RGB", (4, 4)), activation)


@pytest.mark.parametrize("alpha", [-0.1, 1.5])
def test_heatmap_refuses_alpha_outside_zero_to_one(alpha):
    with pytest.raises(ValueError, match="alpha"):
        heatmap(Image.new("RGB", (4, 4)), [[0.0]], alpha=alpha)
