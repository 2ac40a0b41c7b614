"""Layers and units of a finished index: shapes, top-k JSON, patch grids, montages, filters."""

from __future__ import annotations

from flask import Blueprint, request

from service.api.context import api, db
from service.api.drawing import PatchPainter
from service.api.lookup import check_unit, layer_or_404, ready_index, ready_layers
from service.api.immutable import json_response, png_response
from service.api.problems import Problem
from service.api.serialize import layer_json, top_entry_json
from service.render import filters_image, to_png
from service.store import repository

bp = Blueprint("units", __name__)

UNIT = "/v1/indexes/<index_id>/layers/<layer>/units/<unit>"
MONTAGE_MAX_UNITS = 64


def _unit_target():
    """The (index, layer, unit) the URL names, each checked; 404/409 problems otherwise."""
    path = request.openapi.parameters.path
    index = ready_index(path["index_id"])
    layer = layer_or_404(index, path["layer"])
    check_unit(layer, path["unit"])
    return index, layer, path["unit"]


def _top(index, layer, unit: int, k: int | None):
    entries = repository.unit_top(db(), index.id, layer.id, unit, limit=k)
    if not entries:
        raise Problem(404, "unit-empty", f"unit {unit} of layer {layer.name} has no stored activations")
    return entries


@bp.get("/v1/indexes/<index_id>/layers")
def list_layers(index_id):
    index = ready_index(request.openapi.parameters.path["index_id"])
    return {"items": [layer_json(layer) for layer in ready_layers(index)]}


@bp.get("/v1/indexes/<index_id>/layers/<layer>")
def get_layer(index_id, layer):
    path = request.openapi.parameters.path
    return layer_json(layer_or_404(ready_index(path["index_id"]), path["layer"]))


@bp.get(UNIT)
def get_unit(index_id, layer, unit):
    index, layer_row, unit = _unit_target()

    def build() -> dict:
        entries = repository.unit_top(db(), index.id, layer_row.id, unit, limit=request.openapi.parameters.query.get("k"))
        return {"layer": layer_row.name, "unit": unit, "top": [top_entry_json(a, image) for a, image in entries]}

    return json_response(index, build)


@bp.get(UNIT + "/patches.png")
def unit_patches(index_id, layer, unit):
    index, layer_row, unit = _unit_target()
    query = request.openapi.parameters.query
    return png_response(index, lambda: to_png(PatchPainter(index).grid(_top(index, layer_row, unit, query["k"]),
                                                                         query["size"])))


@bp.get(UNIT + "/patches/<rank>.png")
def unit_patch(index_id, layer, unit, rank):
    index, layer_row, unit = _unit_target()
    rank = request.openapi.parameters.path["rank"]
    entries = _top(index, layer_row, unit, None)
    if rank >= len(entries):
        raise Problem(404, "rank-out-of-range", f"rank {rank} out of range: unit {unit} of layer {layer_row.name} "
                      f"has {len(entries)} top entries (0-{len(entries) - 1})")
    activation, image = entries[rank]
    size = request.openapi.parameters.query["size"]
    return png_response(index, lambda: to_png(PatchPainter(index).patch(activation, image, size)))


def _unit_range(text: str, channels: int, layer_name: str) -> range:
    first, _, last = text.partition("-")
    units = range(int(first), int(last or first) + 1)
    if not units:
        raise Problem(422, "invalid-units-range", f"units {text!r} is an empty range; write a-b with a <= b")
    if len(units) > MONTAGE_MAX_UNITS:
        raise Problem(422, "invalid-units-range", f"units {text!r} names {len(units)} units; "
                      f"a montage shows at most {MONTAGE_MAX_UNITS}")
    if units[-1] >= channels:
        raise Problem(404, "unit-out-of-range", f"units {text!r} out of range: layer {layer_name} has "
                      f"{channels} units (0-{channels - 1})")
    return units


@bp.get("/v1/indexes/<index_id>/layers/<layer>/montage.png")
def layer_montage(index_id, layer):
    path, query = request.openapi.parameters.path, request.openapi.parameters.query
    index = ready_index(path["index_id"])
    layer_row = layer_or_404(index, path["layer"])
    units = _unit_range(query["units"], layer_row.channels, layer_row.name)

    def render() -> bytes:
        tops = {u: repository.unit_top(db(), index.id, layer_row.id, u, limit=query["k"]) for u in units}
        if not any(tops.values()):
            raise Problem(404, "unit-empty", f"units {query['units']} of layer {layer_row.name} have no stored activations")
        return to_png(PatchPainter(index).montage(tops, query["size"]))

    return png_response(index, render)


def _rgb_conv(module, name: str):
    """The named Conv2d if it takes RGB input; otherwise a problem that names one that does."""
    import torch  # the model is loaded already, so torch is imported; this only names the type

    try:
        layer = module.get_submodule(name)
    except AttributeError:
        raise Problem(404, "layer-not-found", f"the index's model has no module named {name!r}") from None
    if isinstance(layer, torch.nn.Conv2d) and layer.in_channels == 3 and layer.groups == 1:
        return layer
    first = next((n for n, m in module.named_modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels == 3), None)
    hint = f"; this model's is {first}" if first else ""
    raise Problem(422, "not-rgb-conv", f"layer {name} is a {type(layer).__name__}; filters.png draws a Conv2d "
                  f"with 3 input channels (a first layer){hint}")


@bp.get("/v1/indexes/<index_id>/layers/<layer>/filters.png")
def layer_filters(index_id, layer):
    path = request.openapi.parameters.path
    index = ready_index(path["index_id"])
    conv = _rgb_conv(api().loaded_model(index.model_spec).module, path["layer"])
    scale = request.openapi.parameters.query["scale"]
    return png_response(index, lambda: to_png(filters_image(conv.weight.detach().cpu().numpy(), scale=scale)))
