from __future__ import annotations

import io
import struct

import numpy as np
from PIL import Image

from service.render import crop_patch, grid, to_png


def chunk_types(png: bytes) -> list[bytes]:
    types, offset = [], 8
    while offset < len(png):
        (length,) = struct.unpack(">I", png[offset:offset + 4])
        types.append(png[offset + 4:offset + 8])
        offset += 12 + length
    return types


def test_to_png_gives_identical_bytes_for_separately_rendered_equal_images(photo):
    boxes = [(-30, -30, 120, 120), (300, 200, 450, 350)]

    first = to_png(grid([crop_patch(photo, box, 64) for box in boxes]))
    second = to_png(grid([crop_patch(photo, box, 64) for box in boxes]))

    assert first == second


def test_to_png_round_trips_pixels_exactly(photo):
    patch = crop_patch(photo, (10, 20, 110, 120), 50)

    decoded = Image.open(io.BytesIO(to_png(patch)))

    assert decoded.format == "PNG" and decoded.mode == "RGB"
    assert np.array_equal(np.asarray(decoded), np.asarray(patch))


def test_to_png_writes_no_metadata_chunks_carried_over_from_the_source():
    image = Image.new("RGB", (8, 8), (10, 20, 30))
    image.info.update({"icc_profile": b"not a real profile", "dpi": (72, 72), "comment": "from a camera"})

    png = to_png(image)

    assert chunk_types(png) == [b"IHDR", b"IDAT", b"IEND"]
    assert png == to_png(Image.new("RGB", (8, 8), (10, 20, 30)))


def test_to_png_leaves_the_callers_image_info_alone():
    image = Image.new("RGB", (4, 4))
    image.info["comment"] = "keep me"

    to_png(image)

    assert image.info == {"comment": "keep me"}
