"""Whatever a client sends, the answer is a 4xx problem that says what was wrong, never a 500.

Covers unknown ids, out-of-range units and ranks, k=0 and k=10**6, huge numbers, path traversal
(``..``, absolute paths, a symlink out of the root), wrong content types and truncated JSON, and
the model/dataset checks POST /v1/indexes makes before anything is queued.
"""

from __future__ import annotations

import pytest

from tests.api.conftest import LAYERS, MODEL, assert_problem

HUGE = 10**30


def index_url(ready, rest: str = "") -> str:
    return f"/v1/indexes/{ready.index['id']}{rest}"


@pytest.mark.parametrize("url, kind", [
    ("/v1/indexes/999999", "index-not-found"),
    ("/v1/indexes/999999/layers", "index-not-found"),
    ("/v1/jobs/0123456789abcdef0123456789abcdef", "job-not-found"),
])
def test_unknown_ids_are_404(ready, url, kind):
    assert_problem(ready.client.get(url), 404, kind)


def test_unknown_layer_is_404_naming_the_layers_there_are(ready):
    body = assert_problem(ready.client.get(index_url(ready, "/layers/features.99/units/0")), 404, "layer-not-found")
    assert all(name in body["detail"] for name in LAYERS)


def test_unit_out_of_range_says_how_many_units_the_layer_has(ready):
    body = assert_problem(ready.client.get(index_url(ready, "/layers/features.4/units/300")), 404, "unit-out-of-range")
    assert body["detail"] == "unit 300 out of range: layer features.4 has 32 units (0-31)"


@pytest.mark.parametrize("suffix", ["", "/patches.png", "/patches/0.png"])
def test_every_unit_endpoint_checks_the_range(ready, suffix):
    assert_problem(ready.client.get(index_url(ready, f"/layers/features.4/units/32{suffix}")), 404, "unit-out-of-range")


def test_rank_beyond_the_stored_top_k_is_404(ready):
    body = assert_problem(ready.client.get(index_url(ready, "/layers/features.4/units/0/patches/4.png")), 404,
                          "rank-out-of-range")
    assert "(0-3)" in body["detail"]


def test_unknown_image_is_404_with_the_valid_range(ready):
    body = assert_problem(ready.client.get(index_url(ready, "/images/6/units")), 404, "image-not-found")
    assert "(0-5)" in body["detail"]
    assert_problem(ready.client.get(index_url(ready, "/images/6/layers/features.4/units/0/activation.json")), 404,
                   "image-not-found")


@pytest.mark.parametrize("query", ["k=0", f"k={10**6}", "size=0", "size=100000", "k=abc", "k=1.5", f"k={HUGE}"])
def test_out_of_bounds_grid_parameters_are_400(ready, query):
    body = assert_problem(ready.client.get(index_url(ready, f"/layers/features.4/units/0/patches.png?{query}")), 400,
                          "invalid-parameter")
    assert body["errors"][0]["location"] in ("query.k", "query.size")


@pytest.mark.parametrize("url", [
    f"/v1/indexes/{HUGE}",
    "/v1/indexes/0",
    "/v1/indexes/-1",
    "/v1/indexes/1e3",
    f"/v1/indexes/1/layers/features.4/units/{HUGE}",
    f"/v1/indexes/1/images/{HUGE}/units",
    "/v1/indexes?limit=0",
    f"/v1/indexes?offset={HUGE}",
    "/v1/indexes/1/layers/bad%20name",
    "/v1/jobs/not%20an%20id",
])
def test_malformed_or_huge_path_and_query_values_are_400(ready, url):
    assert_problem(ready.client.get(url), 400, "invalid-parameter")


@pytest.mark.parametrize("units, status, kind", [
    ("0-64", 422, "invalid-units-range"),
    ("5-2", 422, "invalid-units-range"),
    ("30-40", 404, "unit-out-of-range"),
    ("a-b", 400, "invalid-parameter"),
    ("0,1", 400, "invalid-parameter"),
])
def test_montage_units_syntax_and_size_limit(ready, units, status, kind):
    assert_problem(ready.client.get(index_url(ready, f"/layers/features.4/montage.png?units={units}")), status, kind)


def test_unknown_module_for_filters_is_404(ready):
    assert_problem(ready.client.get(index_url(ready, "/layers/features.0.9/filters.png")), 404, "layer-not-found")


def test_paths_outside_the_api_and_wrong_methods_are_problems(ready):
    assert_problem(ready.client.get("/v2/nothing"), 404, "not-found")
    response = ready.client.client.put("/v1/indexes")
    assert_problem(response, 405, "method-not-allowed")
    assert "POST" in response.headers["Allow"]


def create(ready, body=None, **kwargs):
    return ready.client.post("/v1/indexes", **({"json": body} if body is not None else {}), **kwargs)


def valid_body(**changes) -> dict:
    return {"model": dict(MODEL), "dataset": {"path": "photos"}, "layers": ["features.1"], "k": 1, **changes}


@pytest.mark.parametrize("body, location", [
    (valid_body(k=0), "body.k"),
    (valid_body(k=10**6), "body.k"),
    (valid_body(score="median"), "body.score"),
    (valid_body(layers=[]), "body.layers"),
    (valid_body(extra=1), "body"),
    ({"dataset": {"path": "photos"}}, "body"),
    (valid_body(model={"arch": "mobilenet_v2", "weights": 5}), "body.model.weights"),
    (valid_body(dataset={"path": ""}), "body.dataset.path"),
])
def test_create_rejects_bodies_that_break_the_schema_with_422(ready, body, location):
    problem = assert_problem(create(ready, body), 422, "invalid-body")
    assert location in [error["location"] for error in problem["errors"]]


def test_create_rejects_truncated_json_with_400(ready):
    response = create(ready, data='{"model": {"arch": "mobilenet_v2"}, "dataset": {"pa', content_type="application/json")
    assert_problem(response, 400, "malformed-json")


def test_create_rejects_a_missing_body_with_400(ready):
    assert_problem(create(ready, content_type="application/json"), 400, "missing-body")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"])
def test_create_rejects_other_content_types_with_415(ready, content_type):
    assert_problem(create(ready, data="model=x", content_type=content_type), 415, "unsupported-media-type")


@pytest.mark.parametrize("path", ["../../etc", "/etc", "escape", "escape/passwd", "photos/../../.."])
def test_create_refuses_dataset_paths_outside_the_roots_with_403(ready, path):
    body = assert_problem(create(ready, valid_body(dataset={"path": path})), 403, "path-not-allowed")
    assert "outside the allowed roots" in body["detail"]


def test_create_refuses_weights_outside_the_roots_with_403(ready):
    assert_problem(create(ready, valid_body(model={"arch": "mobilenet_v2", "weights": "/etc/passwd.pth"})), 403,
                   "path-not-allowed")


@pytest.mark.parametrize("dataset, kind", [
    ({"path": "no-such-folder"}, "path-not-found"),
    ({"path": "notes.txt"}, "invalid-dataset"),
    ({"path": "empty"}, "invalid-dataset"),
    ({"path": "photos", "files": ["missing.jpg"]}, "path-not-found"),
])
def test_create_refuses_missing_or_unusable_datasets_with_422(ready, dataset, kind):
    assert_problem(create(ready, valid_body(dataset=dataset)), 422, kind)


def test_create_refuses_file_lists_that_climb_out_of_the_dataset(ready):
    assert_problem(create(ready, valid_body(dataset={"path": "photos", "files": ["../notes.txt"]})), 403,
                   "path-not-allowed")


@pytest.mark.parametrize("model, kind, phrase", [
    ({"arch": "no_such_net"}, "invalid-model-spec", "GET /v1/models"),
    ({"arch": "mobilenet_v2", "torchscript": "x.pt"}, "invalid-model-spec", "exactly one of"),
    ({}, "invalid-model-spec", "exactly one of"),
    ({"arch": "mobilenet_v2", "weights": "weights/missing.pth"}, "path-not-found", "does not exist"),
    ({"arch": "mobilenet_v2", "weights": "weights/"}, "invalid-model-spec", "model.weights 'weights/' is a folder"),
    ({"torchscript": "photos"}, "invalid-model-spec", "model.torchscript 'photos' is a folder"),
    ({"arch": "resnet18", "weights": "IMAGENET1K_V9"}, "invalid-model-spec", "known: ['IMAGENET1K_V1']"),
])
def test_create_checks_the_model_spec_before_queueing(ready, model, kind, phrase):
    before = ready.client.get("/v1/indexes").get_json()["total"]
    body = assert_problem(create(ready, valid_body(model=model)), 422, kind)
    assert phrase in body["detail"]
    assert ready.client.get("/v1/indexes").get_json()["total"] == before  # nothing was queued


def test_create_refuses_enum_weights_missing_from_the_hub_cache(ready, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    body = assert_problem(create(ready, valid_body(model={"arch": "resnet18", "weights": "IMAGENET1K_V1"},
                                                   layers=["layer1"])), 422, "weights-not-found")
    assert "not in the torch hub cache" in body["detail"]


def test_create_refuses_layers_the_architecture_lacks_before_queueing(ready):
    before = ready.client.get("/v1/indexes").get_json()["total"]
    body = assert_problem(create(ready, valid_body(layers=["features.3", "features.99"])), 422, "unknown-layer")
    assert "'features.99'" in body["detail"] and "features.3'" not in body["detail"]
    assert ready.client.get("/v1/indexes").get_json()["total"] == before


def test_an_unexpected_failure_is_a_500_problem_without_a_traceback(ready, monkeypatch):
    def broken(*_args):
        raise RuntimeError("secret internals")

    monkeypatch.setattr("service.api.lookup.repository.get_index", broken)
    response = ready.client.client.get(index_url(ready))  # 500 is not in the spec: nothing to validate against
    body = assert_problem(response, 500, "internal-error")
    assert "secret internals" not in response.get_data(as_text=True)
    assert body["instance"] == index_url(ready)


@pytest.mark.parametrize("text, reason", [
    ('{"model": {"arch": "mobilenet_v2"}, "dataset": {"path": "photos"}, "k": 1, "k": 1000}', "duplicate key 'k'"),
    ('{"model": {"arch": "mobilenet_v2"}, "dataset": {"path": "photos"}, "k": NaN}', "NaN is not a JSON number"),
    ('{"model": {"arch": "mobilenet_v2"}, "dataset": {"path": "photos"}, "k": -Infinity}', "-Infinity"),
    ('{"model": {"arch": "mobilenet_v2"}, "dataset": {"path": "photos"}, "name": ' + "[" * 5000 + "]" * 5000 + "}",
     "nested too deeply"),
])
def test_create_rejects_json_that_python_reads_but_json_does_not_with_400(ready, text, reason):
    body = assert_problem(create(ready, data=text, content_type="application/json"), 400, "malformed-json")
    assert reason in body["detail"]


@pytest.mark.parametrize("query", ["k=1&k=2", "size=8&size=8", "k=1&size=8&k=1"])
def test_repeated_query_parameters_are_400(ready, query):
    body = assert_problem(ready.client.get(index_url(ready, f"/layers/features.4/units/0/patches.png?{query}")), 400,
                          "invalid-parameter")
    assert "more than once" in body["detail"] and body["errors"][0]["location"] in ("query.k", "query.size")


@pytest.mark.parametrize("files, location", [
    (["a.jpg", "a.jpg"], "body.dataset.files"),
    ([f"{i}.jpg" for i in range(10_001)], "body.dataset.files"),
])
def test_create_refuses_repeated_or_too_many_dataset_files_with_422(ready, files, location):
    problem = assert_problem(create(ready, valid_body(dataset={"path": "photos", "files": files})), 422, "invalid-body")
    assert location in [error["location"] for error in problem["errors"]]
