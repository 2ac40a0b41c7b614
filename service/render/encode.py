"""PNG bytes that depend only on pixels, so a rendered image's ETag is stable."""

from __future__ import annotations

import io

from PIL import Image


def to_png(image: Image.Image) -> bytes:
    """Encode ``image`` as PNG with no metadata: ``image.info`` (ICC profile, transparency, text
    carried over from a source file) is dropped and Pillow writes no timestamp, so equal pixels give
    equal bytes. The encoding sits on the request path, so it is tuned for speed: on a 3x3 grid of
    96 px photo patches, zlib level 1 takes ~5 ms for 115 kB where the default level 6 takes ~16 ms
    for 100 kB."""
    if image.info:
        image = image.copy()
        image.info.clear()
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=1)
    return buffer.getvalue()
