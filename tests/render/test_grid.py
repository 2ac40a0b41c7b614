from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from service.render import LABEL_HEIGHT, MONTAGE_GAP, cell_origin, crop_patch, grid, grid_columns, montage
from service.render.grid import BACKGROUND


def solid(index: int, size: tuple[int, int] = (20, 20)) -> Image.Image:
    """A cell whose colour says which cell it is."""
    return Image.new("RGB", size, (index * 20 % 256, 255 - index * 20 % 256, index * 7 % 256))


def region(image: Image.Image, x: int, y: int, width: int, height: int) -> np.ndarray:
    return np.asarray(image)[y:y + height, x:x + width]


def test_cell_origin_steps_by_cell_and_gap_row_major():
    assert [cell_origin(i, 3, 96, 2) for i in (0, 1, 2, 3, 8)] == [(0, 0), (98, 0), (196, 0), (0, 98), (196, 196)]


def test_cell_origin_leaves_a_label_band_above_every_row():
    assert cell_origin(0, 2, (30, 20), 4, label_height=14) == (0, 14)
    assert cell_origin(3, 2, (30, 20), 4, label_height=14) == (34, 14 + 20 + 4 + 14)


def test_grid_columns_default_to_ceil_sqrt_and_never_exceed_cell_count():
    assert [grid_columns(n) for n in (1, 4, 5, 9, 10)] == [1, 2, 3, 3, 4]
    assert grid_columns(3, cols=8) == 3


def test_grid_columns_refuse_zero():
    with pytest.raises(ValueError, match="cols"):
        grid_columns(4, cols=0)


def test_grid_of_nine_cells_is_three_by_three_with_gaps():
    assert grid([solid(i, (96, 96)) for i in range(9)]).size == (3 * 96 + 2 * 2, 3 * 96 + 2 * 2)


def test_grid_places_each_real_patch_at_its_cell_origin_in_rank_order(photo):
    cells = [crop_patch(photo, (x, y, x + 120, y + 120), 48) for x in (-20, 200, 420) for y in (-20, 150, 300)]

    image = grid(cells, cols=4)

    for index, cell in enumerate(cells):
        x, y = cell_origin(index, 4, 48, 2)
        assert np.array_equal(region(image, x, y, 48, 48), np.asarray(cell)), index


def test_grid_fills_gaps_and_missing_cells_of_last_row_with_background():
    image = grid([solid(i) for i in range(5)], gap=3)

    assert image.size == (3 * 20 + 2 * 3, 2 * 20 + 3)
    assert (region(image, 20, 0, 3, 43) == BACKGROUND).all()
    assert (region(image, 46, 23, 20, 20) == BACKGROUND).all()


def test_grid_pastes_smaller_cell_at_top_left_of_largest_cell_slot():
    image = grid([solid(0, (30, 30)), solid(1, (10, 20))], gap=0)

    assert np.array_equal(region(image, 30, 0, 10, 20), np.asarray(solid(1, (10, 20))))
    assert (region(image, 40, 0, 20, 30) == BACKGROUND).all()
    assert (region(image, 30, 20, 10, 10) == BACKGROUND).all()


def test_grid_converts_non_rgb_cells():
    image = grid([Image.new("L", (8, 8), 200), Image.new("RGBA", (8, 8), (1, 2, 3, 0))])

    assert image.mode == "RGB"
    assert (region(image, 0, 0, 8, 8) == 200).all()
    assert (region(image, 10, 0, 8, 8) == (1, 2, 3)).all()


def test_grid_with_labels_keeps_cells_intact_and_writes_text_above_them():
    cells = [solid(i, (40, 40)) for i in range(4)]

    image = grid(cells, labels=["#1", "#2", "#3", "#4"])

    assert image.size == (2 * 40 + 2, 2 * (40 + LABEL_HEIGHT) + 2)
    for index, cell in enumerate(cells):
        x, y = cell_origin(index, 2, 40, 2, label_height=LABEL_HEIGHT)
        assert np.array_equal(region(image, x, y, 40, 40), np.asarray(cell))
        assert (region(image, x, y - LABEL_HEIGHT, 40, LABEL_HEIGHT) != BACKGROUND).any()


def test_grid_truncates_a_long_label_to_its_own_cell():
    image = grid([solid(0, (30, 30)), solid(1, (30, 30))], gap=2, labels=["a label far wider than a cell", ""])

    assert (region(image, 30, 0, 32, LABEL_HEIGHT) == BACKGROUND).all()


def test_grid_refuses_no_cells():
    with pytest.raises(ValueError, match="at least one cell"):
        grid([])


def test_grid_refuses_label_count_different_from_cell_count():
    with pytest.raises(ValueError, match="2 labels for 3 cells"):
        grid([solid(i) for i in range(3)], labels=["a", "b"])


def test_montage_tiles_unit_grids_with_labels_and_wide_gaps():
    grids = [grid([solid(i + j) for j in range(4)]) for i in range(3)]

    image = montage(grids, ["unit 0", "unit 1", "unit 2"])

    side = grids[0].width
    assert image.size == (2 * side + MONTAGE_GAP, 2 * (side + LABEL_HEIGHT) + MONTAGE_GAP)
    for index, unit_grid in enumerate(grids):
        x, y = cell_origin(index, 2, side, MONTAGE_GAP, label_height=LABEL_HEIGHT)
        assert np.array_equal(region(image, x, y, side, side), np.asarray(unit_grid))
