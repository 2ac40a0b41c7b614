"""One image of an index: a unit's activation map on it (computed on demand) and the reverse
lookup of the units whose top-k it is in."""

from __future__ import annotations

from flask import Blueprint, request

from service.api.context import api, db
from service.api.drawing import PatchPainter
from service.api.lookup import check_unit, image_file, image_or_404, layer_or_404, ready_index
from service.api.immutable import png_response
from service.api.problems import Problem
from service.api.serialize import entry_json, image_json
from service.render import to_png
from service.store import repository

bp = Blueprint("images", __name__)

ACTIVATION = "/v1/indexes/<index_id>/images/<image_id>/layers/<layer>/units/<unit>/activation"


def _activation_target():
    path = request.openapi.parameters.path
    index = ready_index(path["index_id"])
    image = image_or_404(index, path["image_id"])
    layer = layer_or_404(index, path["layer"])
    check_unit(layer, path["unit"])
    if image.skipped_reason:
        raise Problem(422, "image-skipped", f"image {image.id} ({image.path}) was skipped by the scan "
                      f"({image.skipped_reason}); it has no activations")
    return index, image, layer, path["unit"]


def _activation_values(index, image, layer, unit: int) -> list[list[float]]:
    """The H x W map from the index's model (loaded once per process, kept in an LRU)."""
    from service.scan.scanner import activation_map  # torch: only for on-demand maps

    loaded = api().loaded_model(index.model_spec)
    return activation_map(loaded, image_file(index, image), layer.name, unit).tolist()


@bp.get(ACTIVATION + ".png")
def activation_png(index_id, image_id, layer, unit):
    index, image, layer_row, unit = _activation_target()
    alpha = request.openapi.parameters.query["alpha"]

    def render() -> bytes:
        values = _activation_values(index, image, layer_row, unit)
        return to_png(PatchPainter(index).activation_overlay(image, values, alpha))

    return png_response(index, render)


@bp.get(ACTIVATION + ".json")
def activation_json(index_id, image_id, layer, unit):
    index, image, layer_row, unit = _activation_target()
    values = _activation_values(index, image, layer_row, unit)
    flat = [v for row in values for v in row]
    return {"layer": layer_row.name, "unit": unit, "image": image_json(image), "height": len(values),
            "width": len(values[0]), "min": min(flat), "max": max(flat), "values": values}


@bp.get("/v1/indexes/<index_id>/images/<image_id>/units")
def image_units(index_id, image_id):
    path, query = request.openapi.parameters.path, request.openapi.parameters.query
    index = ready_index(path["index_id"])
    image = image_or_404(index, path["image_id"])
    layer = layer_or_404(index, query["layer"]) if "layer" in query else None
    rows = repository.image_units(db(), index.id, image.id, layer.id if layer else None, limit=query["limit"])
    return {"image": image_json(image),
            "items": [{"layer": layer_row.name, "unit": a.unit, **entry_json(a)} for a, layer_row in rows]}
