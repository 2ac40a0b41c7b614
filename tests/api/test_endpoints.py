"""Every endpoint against the real index built in ``conftest.ready`` (MobileNetV2, six photos).

The PNG tests decode the image and compare pixels with what ``service.render`` makes from the
original photo at the stored box, so a wrong box, rank order or grid layout shows up as a pixel
difference, not only as a wrong size.
"""

from __future__ import annotations

import io
import json
import logging

import numpy as np
import pytest
import yaml
from PIL import Image

from service.logs import JsonFormatter
from service.render import cell_origin, crop_patch, grid_columns
from service.scan.geometry import Preprocess, original_box
from tests.api.conftest import K, LAYERS, MODEL, PHOTOS, assert_problem, wait_for_job

UNIT = 3


def png(response) -> Image.Image:
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "image/png"
    return Image.open(io.BytesIO(response.data))


def unit_url(ready, layer=LAYERS[1], unit=UNIT) -> str:
    return f"/v1/indexes/{ready.index['id']}/layers/{layer}/units/{unit}"


def expected_patch(ready, entry: dict, size: int) -> Image.Image:
    """The receptive-field crop the API should draw for one top entry, made here from scratch."""
    image = entry["image"]
    box = original_box(tuple(entry["input_box"][c] for c in ("x0", "y0", "x1", "y1")), image["width"],
                       image["height"], Preprocess.from_dict(ready.index["preprocess"]), clip=False)
    with Image.open(ready.dataset_root / "photos" / image["path"]) as original:
        return crop_patch(original, box, size)


def test_health_reports_database_and_embedded_queue(ready):
    body = ready.client.get("/v1/health").get_json()
    assert body == {"status": "ok", "database": {"ok": True},
                    "queue": {"ok": True, "backend": "embedded", "depth": 0}}


def test_models_lists_torchvision_architectures(ready):
    architectures = ready.client.get("/v1/models").get_json()["architectures"]
    assert "mobilenet_v2" in architectures and "resnet18" in architectures


def test_openapi_yaml_is_the_spec_file(ready):
    response = ready.client.get("/openapi.yaml")
    assert yaml.safe_load(response.data)["openapi"] == "3.0.3"


def test_docs_page_is_served_offline_from_swagger_ui_bundle(ready):
    page = ready.client.get("/docs").get_data(as_text=True)
    assert "/openapi.yaml" in page and "https://" not in page
    script = ready.client.client.get("/docs/swagger-ui-bundle.js")
    assert script.status_code == 200 and len(script.data) > 100_000


def test_index_states_everything_needed_to_reproduce_it(ready):
    index = ready.index
    assert index["status"] == "succeeded"
    assert index["model"] == MODEL and index["dataset"] == {"path": "photos"}
    assert index["layers_requested"] == LAYERS and index["k"] == K and index["score"] == "max"
    assert index["preprocess"] == {"resize": 256, "crop": 224, "mean": pytest.approx([0.485, 0.456, 0.406]),
                                   "std": pytest.approx([0.229, 0.224, 0.225]), "input_size": 224}
    assert index["images"] == {"total": PHOTOS, "scanned": PHOTOS, "skipped": 0, "skipped_reasons": {}}
    assert index["pretrained"] is True and index["job_ids"] == [ready.job["id"]]


def test_finished_job_reports_full_progress(ready):
    job = ready.job
    assert job["index_id"] == ready.index["id"] and job["error"] is None
    assert job["progress"]["done"] == job["progress"]["total"] == PHOTOS
    assert job["progress"]["eta_seconds"] is None


def test_list_indexes_is_paginated_with_total(ready):
    page = ready.client.get("/v1/indexes?limit=1&offset=0").get_json()
    assert page["limit"] == 1 and page["offset"] == 0 and page["total"] >= 1 and len(page["items"]) == 1
    beyond = ready.client.get(f"/v1/indexes?limit=5&offset={page['total']}").get_json()
    assert beyond["items"] == [] and beyond["total"] == page["total"]


def test_layers_report_activation_shape_and_receptive_field(ready):
    layers = ready.client.get(f"/v1/indexes/{ready.index['id']}/layers").get_json()["items"]
    assert [layer["name"] for layer in layers] == LAYERS
    by_name = {layer["name"]: layer for layer in layers}
    assert by_name["features.1"]["shape"] == {"channels": 16, "height": 112, "width": 112}
    assert by_name["features.4"]["shape"] == {"channels": 32, "height": 28, "width": 28}
    assert by_name["features.14"]["shape"] == {"channels": 160, "height": 7, "width": 7}
    assert by_name["features.4"]["receptive_field"]["jump"] == 8


def test_layer_name_with_dots_is_one_path_segment(ready):
    layer = ready.client.get(f"/v1/indexes/{ready.index['id']}/layers/features.14").get_json()
    assert layer["name"] == "features.14" and layer["type"] == "InvertedResidual"


def test_unit_lists_top_k_with_clipped_boxes_in_original_pixels(ready):
    body = ready.client.get(unit_url(ready)).get_json()
    assert body["layer"] == LAYERS[1] and body["unit"] == UNIT
    top = body["top"]
    assert [entry["rank"] for entry in top] == list(range(K))
    assert [entry["value"] for entry in top] == sorted((entry["value"] for entry in top), reverse=True)
    assert len({entry["image"]["id"] for entry in top}) == K  # at most one entry per image
    preprocess = Preprocess.from_dict(ready.index["preprocess"])
    for entry in top:
        image, box = entry["image"], entry["box"]
        assert 0 <= box["x0"] < box["x1"] <= image["width"] and 0 <= box["y0"] < box["y1"] <= image["height"]
        in_box = tuple(entry["input_box"][c] for c in ("x0", "y0", "x1", "y1"))
        assert tuple(box.values()) == original_box(in_box, image["width"], image["height"], preprocess)
        assert 0 <= entry["position"]["y"] < 28 and 0 <= entry["position"]["x"] < 28


def test_unit_k_limits_the_entries(ready):
    assert len(ready.client.get(unit_url(ready) + "?k=2").get_json()["top"]) == 2


def test_patches_grid_cells_equal_crops_of_the_originals_at_the_stored_boxes(ready):
    size = 64
    top = ready.client.get(unit_url(ready)).get_json()["top"]
    picture = png(ready.client.get(unit_url(ready) + f"/patches.png?k={K}&size={size}"))
    cols = grid_columns(K)
    for i, entry in enumerate(top):
        x, y = cell_origin(i, cols, size, gap=2)
        cell = picture.crop((x, y, x + size, y + size))
        assert np.array_equal(np.asarray(cell), np.asarray(expected_patch(ready, entry, size))), f"cell {i}"


def test_single_patch_by_rank_equals_the_crop(ready):
    entry = ready.client.get(unit_url(ready)).get_json()["top"][2]
    picture = png(ready.client.get(unit_url(ready) + "/patches/2.png?size=80"))
    assert picture.size == (80, 80)
    assert np.array_equal(np.asarray(picture.convert("RGB")), np.asarray(expected_patch(ready, entry, 80)))


def test_montage_shows_one_grid_per_unit(ready):
    one = png(ready.client.get(unit_url(ready, unit=0) + "/patches.png?k=4&size=16"))
    montage = png(ready.client.get(f"/v1/indexes/{ready.index['id']}/layers/{LAYERS[1]}/montage.png"
                                   "?units=0-3&k=4&size=16"))
    assert montage.width > 2 * one.width and montage.height > 2 * one.height


def test_activation_json_is_the_layers_map_for_that_image(ready):
    entry = ready.client.get(unit_url(ready)).get_json()["top"][0]
    url = f"/v1/indexes/{ready.index['id']}/images/{entry['image']['id']}/layers/{LAYERS[1]}/units/{UNIT}/activation"
    body = ready.client.get(url + ".json").get_json()
    assert (body["height"], body["width"]) == (28, 28) and len(body["values"]) == 28
    peak = np.asarray(body["values"])
    # The stored top-1 value is this image's max of the map, at the stored position.
    assert body["max"] == pytest.approx(entry["value"], rel=1e-4)
    assert peak[entry["position"]["y"], entry["position"]["x"]] == pytest.approx(entry["value"], rel=1e-4)
    heat = png(ready.client.get(url + ".png?alpha=0.6"))
    image = entry["image"]
    view = original_box((0, 0, 224, 224), image["width"], image["height"], Preprocess.from_dict(ready.index["preprocess"]))
    assert heat.size == (view[2] - view[0], view[3] - view[1])  # the centre crop the model saw


def test_filters_png_tiles_the_first_convs_filters(ready):
    picture = png(ready.client.get(f"/v1/indexes/{ready.index['id']}/layers/features.0.0/filters.png?scale=4"))
    # 32 filters of 3x3, scale 4 -> 12 px tiles in a 6-column grid with 2 px gaps.
    assert picture.size == (6 * 12 + 5 * 2, 6 * 12 + 5 * 2)


def test_filters_png_refuses_a_layer_without_rgb_input(ready):
    response = ready.client.get(f"/v1/indexes/{ready.index['id']}/layers/features.4/filters.png")
    body = assert_problem(response, 422, "not-rgb-conv")
    assert "features.0.0" in body["detail"]


def test_reverse_lookup_lists_the_units_whose_top_k_holds_the_image(ready):
    top = ready.client.get(unit_url(ready)).get_json()["top"]
    image_id = top[1]["image"]["id"]
    body = ready.client.get(f"/v1/indexes/{ready.index['id']}/images/{image_id}/units?layer={LAYERS[1]}&limit=1000").get_json()
    assert body["image"]["id"] == image_id
    values = [item["value"] for item in body["items"]]
    assert values == sorted(values, reverse=True) and {item["layer"] for item in body["items"]} == {LAYERS[1]}
    assert {"layer": LAYERS[1], "unit": UNIT, "rank": 1, "value": top[1]["value"], "position": top[1]["position"],
            "box": top[1]["box"]} in body["items"]


def test_png_has_strong_etag_long_cache_and_answers_304(ready):
    url = unit_url(ready) + "/patches.png?size=32"
    first = ready.client.get(url)
    assert first.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    etag = first.headers["ETag"]
    assert etag.startswith('"') and not etag.startswith("W/")
    again = ready.client.get(url, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.data == b"" and again.headers["ETag"] == etag
    assert ready.client.get(unit_url(ready) + "/patches.png?size=33").headers["ETag"] != etag
    # Defaults are part of the identity: no k and k=9 are the same picture.
    assert ready.client.get(url + "&k=9").headers["ETag"] == etag


@pytest.mark.parametrize("header", ['W/{etag}', '"other", {etag}', "*"])
def test_if_none_match_compares_weakly_as_rfc_9110_says(ready, header):
    url = unit_url(ready) + "/patches.png?size=32"
    etag = ready.client.get(url).headers["ETag"]
    assert ready.client.get(url, headers={"If-None-Match": header.format(etag=etag)}).status_code == 304


def test_created_index_answers_202_with_location_then_can_be_deleted(ready):
    files = sorted(p.name for p in (ready.dataset_root / "photos").iterdir())[:2]
    created = ready.client.post("/v1/indexes", json={"model": MODEL, "dataset": {"path": "photos", "files": files},
                                                     "layers": ["features.14"], "k": 1, "score": "mean"})
    assert created.status_code == 202
    body = created.get_json()
    assert created.headers["Location"] == f"/v1/indexes/{body['index']['id']}"
    assert body["index"]["status"] == "queued" and body["job"]["id"] in body["index"]["job_ids"]
    assert body["index"]["name"] == "mobilenet_v2 on photos"
    assert wait_for_job(ready.client, body["job"]["id"])["status"] == "succeeded"
    assert ready.client.get(created.headers["Location"]).get_json()["images"]["total"] == 2
    assert ready.client.delete(created.headers["Location"]).status_code == 204
    assert_problem(ready.client.get(created.headers["Location"]), 404, "index-not-found")
    assert_problem(ready.client.get(f"/v1/jobs/{body['job']['id']}"), 404, "job-not-found")


def test_finished_job_cannot_be_cancelled(ready):
    assert_problem(ready.client.post(f"/v1/jobs/{ready.job['id']}/cancel"), 409, "job-finished")


def test_metrics_expose_latency_queue_depth_and_scan_throughput(ready):
    ready.client.get(unit_url(ready))
    text = ready.client.get("/metrics").get_data(as_text=True)
    assert 'unitscope_http_request_duration_seconds_bucket{endpoint="/v1/indexes/<index_id>/layers/<layer>/units/<unit>"' in text
    assert "unitscope_queue_depth 0.0" in text
    assert "unitscope_scan_images_per_second 0.0" in text


def test_each_request_logs_one_json_line_with_its_ids(ready):
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(JsonFormatter().format(record))
    logger = logging.getLogger("unitscope.access")
    logger.addHandler(handler)
    try:
        ready.client.get(unit_url(ready))
    finally:
        logger.removeHandler(handler)
    line = json.loads(lines[-1])
    assert line["method"] == "GET" and line["status"] == 200 and line["path"] == unit_url(ready)
    assert line["index_id"] == ready.index["id"] and line["duration_ms"] >= 0
