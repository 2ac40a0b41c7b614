"""Fixtures for the API tests: a client that validates every response against ``openapi.yaml``,
and one real index (MobileNetV2 over six real photos) built once per session through the API.

The index is created exactly as a user would: POST /v1/indexes on an app with the embedded queue,
then polling its job. Every other test reads it, so the suite pays for one small scan.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from flask import Flask
from openapi_core import OpenAPI
from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest, WerkzeugOpenAPIResponse
from openapi_core.templating.paths.exceptions import PathNotFound
from werkzeug.test import TestResponse

from service.api.validation import load_openapi
from service.app import create_app
from service.config import Settings
from service.store.migrate import upgrade

PHOTOS = 6
WEIGHTS = "weights/mobilenet_v2-imagenet-from-quantized.pth"
MODEL = {"arch": "mobilenet_v2", "weights": WEIGHTS}
LAYERS = ["features.1", "features.4", "features.14"]
K = 4
PROBLEM = "application/problem+json"


@pytest.fixture(scope="session")
def openapi() -> OpenAPI:
    return load_openapi()


class _SentRequest(WerkzeugOpenAPIRequest):
    """The request a test response answered; its body stream is spent and responses do not need it."""

    @property
    def body(self) -> bytes | None:
        return None


class CheckedClient:
    """Flask's test client, plus: every response must match ``openapi.yaml`` (status documented,
    headers and body valid), and every error must be a problem document with a stable type."""

    def __init__(self, app: Flask, openapi: OpenAPI):
        self.app = app
        self.openapi = openapi
        self.client = app.test_client()

    def open(self, *args, **kwargs) -> TestResponse:
        response = self.client.open(*args, **kwargs)
        self.check(response)
        return response

    def get(self, *args, **kwargs) -> TestResponse:
        return self.open(*args, method="GET", **kwargs)

    def post(self, *args, **kwargs) -> TestResponse:
        return self.open(*args, method="POST", **kwargs)

    def delete(self, *args, **kwargs) -> TestResponse:
        return self.open(*args, method="DELETE", **kwargs)

    def check(self, response: TestResponse) -> None:
        if response.status_code >= 400:
            assert_problem(response, response.status_code)
        try:
            self.openapi.validate_response(_SentRequest(response.request),
                                           WerkzeugOpenAPIResponse(response))
        except PathNotFound:
            assert response.status_code == 404, "a path outside the spec must be a 404"


def assert_problem(response: TestResponse, status: int, kind: str | None = None) -> dict:
    """The response is an RFC 9457 problem with this status (and type, when given)."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM, response.get_data(as_text=True)
    body = response.get_json(force=True)
    assert body["status"] == status
    assert body["type"].startswith("https://unitscope.dev/problems/")
    assert body["title"] and body["detail"]
    assert "Traceback" not in response.get_data(as_text=True)
    if kind is not None:
        assert body["type"] == f"https://unitscope.dev/problems/{kind}", body
    return body


def wait_for_job(client: CheckedClient, job_id: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").get_json()
        if job["status"] not in ("queued", "running"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s")


@pytest.fixture(scope="session")
def dataset_root(tmp_path_factory, imagenet_dir: Path) -> Path:
    """A dataset root with ``photos/`` (six real photos), plus the traps the bad-input tests use:
    a symlink pointing out of the root, an empty folder, a plain file."""
    root = tmp_path_factory.mktemp("datasets")
    (root / "photos").mkdir()
    for source in sorted(imagenet_dir.iterdir())[:PHOTOS]:
        shutil.copy(source, root / "photos" / source.name)
    (root / "escape").symlink_to("/etc")
    (root / "empty").mkdir()
    (root / "notes.txt").write_text("not a dataset")
    return root


def build_settings(data_dir: Path, dataset_root: Path, assets_dir: Path, **overrides) -> Settings:
    """Settings for an app over ``dataset_root`` (photos) and the assets (weights), on the CPU."""
    data_dir.mkdir(parents=True, exist_ok=True)
    settings = Settings.from_env({
        "UNITSCOPE_DATA_DIR": str(data_dir),
        "UNITSCOPE_ASSETS": str(assets_dir),
        "UNITSCOPE_DATASET_ROOTS": os.pathsep.join([str(dataset_root), str(assets_dir)]),
        "UNITSCOPE_LOADER_WORKERS": "0",
        "UNITSCOPE_BATCH_SIZE": "8",
        "UNITSCOPE_DEVICE": "cpu",
    })
    return settings.with_overrides(**overrides)


@pytest.fixture
def make_client(tmp_path: Path, dataset_root: Path, assets_dir: Path, openapi: OpenAPI):
    """A checked client on a fresh, migrated SQLite database with the given settings overrides."""

    def build(**overrides) -> CheckedClient:
        settings = build_settings(tmp_path / "var", dataset_root, assets_dir, **overrides)
        upgrade(settings.database_url)
        return CheckedClient(create_app(settings), openapi)

    return build


@dataclass(frozen=True)
class Ready:
    client: CheckedClient
    settings: Settings
    index: dict
    job: dict
    dataset_root: Path


@pytest.fixture(scope="session")
def ready(tmp_path_factory, dataset_root: Path, assets_dir: Path, openapi: OpenAPI) -> Ready:
    """One index created through the API and scanned by the embedded worker, shared read-only."""
    settings = build_settings(tmp_path_factory.mktemp("ready") / "var", dataset_root, assets_dir)
    upgrade(settings.database_url)
    client = CheckedClient(create_app(settings), openapi)
    created = client.post("/v1/indexes", json={"name": "api-tests", "model": MODEL, "dataset": {"path": "photos"},
                                               "layers": LAYERS, "k": K})
    assert created.status_code == 202, created.get_data(as_text=True)
    job = wait_for_job(client, created.get_json()["job"]["id"])
    assert job["status"] == "succeeded", job
    index = client.get(created.headers["Location"]).get_json()
    return Ready(client=client, settings=settings, index=index, job=job, dataset_root=dataset_root)
