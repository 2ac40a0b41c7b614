"""Row builders shared by the store tests."""

from __future__ import annotations


def activation(layer: str, unit: int, rank: int, value: float, image_id: int) -> tuple:
    """A contract-shaped activation tuple; boxes derived from the position so rows are distinct."""
    y, x = rank, unit
    return (layer, unit, rank, value, image_id, y, x,
            x * 8 - 4, y * 8 - 4, x * 8 + 12, y * 8 + 12, max(0, x * 10 - 5), max(0, y * 10 - 5),
            x * 10 + 15, y * 10 + 15)
