from __future__ import annotations

import numpy as np
import pytest

from service.render import cell_origin, filter_tiles, filters_image


def test_filters_image_tiles_filters_in_a_square_grid_with_gaps():
    image = filters_image(np.random.default_rng(0).normal(size=(10, 3, 3, 3)), scale=8)

    assert image.mode == "RGB" and image.size == (4 * 24 + 3 * 2, 3 * 24 + 2 * 2)


def test_filters_image_enlarges_each_weight_to_a_uniform_block():
    weights = np.random.default_rng(1).normal(size=(2, 3, 5, 3))
    tiles = filter_tiles(weights)

    pixels = np.asarray(filters_image(weights, scale=4))

    x, y = cell_origin(1, 2, (3 * 4, 5 * 4), 2)
    second = pixels[y:y + 20, x:x + 12]
    assert np.array_equal(second, tiles[1].repeat(4, axis=0).repeat(4, axis=1))


def test_filter_tiles_scale_each_filter_symmetrically_so_zero_is_mid_grey():
    weights = np.zeros((2, 3, 1, 3))
    weights[0, :, 0] = [-2.0, 0.0, 1.0]
    weights[1, :, 0] = [0.01, 0.0, 0.005]

    tiles = filter_tiles(weights)

    assert tiles[0, 0, :, 0].tolist() == [0, 128, 191]
    assert tiles[1, 0, :, 0].tolist() == [255, 128, 191]


def test_filter_tiles_of_all_zero_filter_are_mid_grey():
    assert (filter_tiles(np.zeros((1, 3, 3, 3))) == 128).all()


def test_filter_tiles_keep_input_channels_as_red_green_blue():
    weights = np.zeros((1, 3, 1, 1))
    weights[0, :, 0, 0] = [1.0, -1.0, 0.0]

    assert filter_tiles(weights)[0, 0, 0].tolist() == [255, 0, 128]


def test_filter_tiles_of_single_input_channel_are_grey():
    tiles = filter_tiles(np.random.default_rng(2).normal(size=(4, 1, 3, 3)))

    assert tiles.shape == (4, 3, 3, 3)
    assert (tiles[..., 0] == tiles[..., 1]).all() and (tiles[..., 1] == tiles[..., 2]).all()


@pytest.mark.parametrize("shape", [(4, 2, 3, 3), (4, 64, 3, 3)])
def test_filters_image_refuses_input_channels_other_than_one_or_three(shape):
    with pytest.raises(ValueError, match="1 or 3 input channels"):
        filters_image(np.ones(shape))


@pytest.mark.parametrize("shape", [(3, 3, 3), (0, 3, 3, 3)])
def test_filters_image_refuses_weights_not_shaped_c_cin_kh_kw(shape):
    with pytest.raises(ValueError, match=r"\[C, Cin, kh, kw\]"):
        filters_image(np.ones(shape))


def test_filters_image_refuses_non_finite_weights():
    with pytest.raises(ValueError, match="NaN"):
        filters_image(np.full((1, 3, 3, 3), np.nan))


def test_filters_image_refuses_scale_below_one():
    with pytest.raises(ValueError, match="scale"):
        filters_image(np.ones((1, 3, 3, 3)), scale=0)
