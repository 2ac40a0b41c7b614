"""Real photos for the render tests, decoded once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image


def _open(path: Path) -> Image.Image:
    image = Image.open(path)
    image.load()
    return image


@pytest.fixture(scope="session")
def photo(imagenet_dir: Path) -> Image.Image:
    """A 500x375 ImageNet JPEG, the typical size the service crops from."""
    return _open(imagenet_dir / "n01440764_tench.JPEG")


@pytest.fixture(scope="session")
def square_photo(assets_dir: Path) -> Image.Image:
    """A 512x512 PNG, so boxes can reach past every edge of a second real image."""
    return _open(assets_dir / "images" / "skimage" / "astronaut.png")
