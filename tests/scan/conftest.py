"""Session fixtures for the scan tests: the real MobileNetV2 loaded once, a fixed set of real photos,
and a brute-force reference (every activation kept, then sorted) computed once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from service.scan.data import list_images, load_model_input
from service.scan.models import ModelSpec, load_model

PHOTO_COUNT = 20
REFERENCE_LAYERS = ["features.1", "features.3.conv.0", "features.6", "features.14.conv.1"]


@pytest.fixture(scope="session")
def mobilenet(mobilenet_weights: Path):
    return load_model(ModelSpec(arch="mobilenet_v2", weights=str(mobilenet_weights)))


@pytest.fixture(scope="session")
def photos(imagenet_dir: Path):
    """Every fifth ImageNet sample: 20 real photos of different classes."""
    names = [p.name for p in sorted(imagenet_dir.glob("*.JPEG"))][::5][:PHOTO_COUNT]
    return list_images(imagenet_dir, names)


@pytest.fixture(scope="session")
def reference_maps(mobilenet, imagenet_dir, photos):
    """Every feature map of the reference layers for every photo, cloned inside the hook."""
    maps = {name: [] for name in REFERENCE_LAYERS}
    modules = dict(mobilenet.module.named_modules())
    handles = [
        modules[name].register_forward_hook(lambda _m, _i, out, name=name: maps[name].append(out.clone()))
        for name in REFERENCE_LAYERS
    ]
    try:
        with torch.no_grad():
            for record in photos:
                pixels, _, _ = load_model_input(imagenet_dir / record.path, mobilenet.preprocess)
                mobilenet.module(pixels.unsqueeze(0))
    finally:
        for h in handles:
            h.remove()
    return {name: torch.cat(found).numpy() for name, found in maps.items()}


@pytest.fixture(scope="session")
def brute_force_topk():
    return _brute_force_topk


def _brute_force_topk(fmaps: np.ndarray, ids: list[int], k: int, score: str):
    """Per unit: score every image, sort all of them (value desc, id asc), keep k.
    Returns values [C,k], ids [C,k], ys [C,k], xs [C,k] as numpy arrays."""
    n, c, h, w = fmaps.shape
    flat = fmaps.reshape(n, c, h * w)
    where = flat.argmax(axis=2)
    values = flat.max(axis=2) if score == "max" else flat.mean(axis=2, dtype=np.float64)
    out = [np.zeros((c, k)) for _ in range(4)]
    for unit in range(c):
        order = sorted(range(n), key=lambda i: (-values[i, unit], ids[i]))[:k]
        out[0][unit] = values[order, unit]
        out[1][unit] = [ids[i] for i in order]
        out[2][unit] = where[order, unit] // w
        out[3][unit] = where[order, unit] % w
    return out
