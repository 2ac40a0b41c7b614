"""Find what a URL names or answer with the problem that says why not.

The same checks guard every endpoint below an index, so their wording is written once: a client
always learns which part of the URL was wrong and what would have been valid.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select

from service.api.context import api, db
from service.api.problems import Problem
from service.paths import PathNotAllowed, PathNotFound
from service.store import repository
from service.store.models import Image, Index, Layer, ScanJob

_LAYERS_SHOWN = 12


def index_or_404(index_id: int) -> Index:
    index = repository.get_index(db(), index_id)
    if index is None:
        raise Problem(404, "index-not-found", f"index {index_id} does not exist")
    return index


@dataclass(frozen=True)
class ReadyIndex:
    index: Index
    layers: dict[str, Layer]  # by name, in forward order


def _ready(index_id: int) -> ReadyIndex:
    cached = api().ready.get(index_id)
    if cached is not None:
        return cached
    index = index_or_404(index_id)
    if index.status != "succeeded":
        reason = f": {index.error}" if index.error else ""
        raise Problem(409, "index-not-ready",
                      f"index {index_id} is {index.status}{reason}; its layers and units can be read "
                      "once its status is succeeded", index_status=index.status)
    ready = ReadyIndex(index, {layer.name: layer for layer in repository.list_layers(db(), index_id)})
    api().ready.put(index_id, ready)
    return ready


def ready_index(index_id: int) -> Index:
    """An index whose results can be read; 409 while it is queued/running or after it failed."""
    return _ready(index_id).index


def ready_layers(index: Index) -> list[Layer]:
    return list(_ready(index.id).layers.values())


def job_or_404(job_id: str) -> ScanJob:
    job = repository.get_job(db(), job_id)
    if job is None:
        raise Problem(404, "job-not-found", f"job {job_id} does not exist")
    return job


def layer_or_404(index: Index, name: str) -> Layer:
    layers = _ready(index.id).layers
    if name not in layers:
        shown = ", ".join(list(layers)[:_LAYERS_SHOWN]) + (", ..." if len(layers) > _LAYERS_SHOWN else "")
        raise Problem(404, "layer-not-found",
                      f"layer {name!r} is not in index {index.id}; its layers are: {shown or 'none'}")
    return layers[name]


def check_unit(layer: Layer, unit: int) -> None:
    if unit >= layer.channels:
        raise Problem(404, "unit-out-of-range",
                      f"unit {unit} out of range: layer {layer.name} has {layer.channels} units "
                      f"(0-{layer.channels - 1})")


def image_or_404(index: Index, image_id: int) -> Image:
    image = repository.get_image(db(), index.id, image_id)
    if image is None:
        count = db().scalar(select(func.count()).select_from(Image).where(Image.index_id == index.id))
        raise Problem(404, "image-not-found",
                      f"image {image_id} is not in index {index.id}; it has {count} images (0-{count - 1})")
    return image


def image_file(index: Index, image: Image):
    """The original file of a scanned image, still confined to the dataset roots."""
    try:
        root = api().resolve(index.dataset_spec["path"])
        return api().resolve(str(root / image.path))
    except (PathNotFound, PathNotAllowed):  # moved away, or its root is no longer configured
        raise Problem(404, "source-image-missing",
                      f"the original of image {image.id} ({image.path}) is no longer in the dataset "
                      f"{index.dataset_spec['path']!r} under the configured roots; it cannot be rendered") from None
