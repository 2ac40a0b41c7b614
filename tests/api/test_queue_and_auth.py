"""Production wiring (PostgreSQL + Redis/RQ): queued indexes, not-ready answers, cancel, delete,
and a Redis outage that turns writes into 503 while stored indexes stay readable. Plus API keys
on write endpoints and the shared render cache's behaviour when Redis is gone."""

from __future__ import annotations

import uuid

import pytest

from service.api.cache import RedisRenderCache
from service.app import create_app
from service.jobs import state
from service.jobs.queue import redis_client
from service.store.db import make_engine, session_factory
from service.store.migrate import upgrade
from tests.api.conftest import MODEL, CheckedClient, assert_problem, build_settings

CLOSED_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1
BODY = {"model": MODEL, "dataset": {"path": "photos"}, "layers": ["features.1"], "k": 1}


@pytest.fixture
def rq_settings(postgres_url, redis_url, dataset_root, assets_dir, tmp_path):
    upgrade(postgres_url)
    return build_settings(tmp_path / "var", dataset_root, assets_dir, database_url=postgres_url,
                          redis_url=redis_url, redis_db_prefix=f"apitest-{uuid.uuid4().hex[:8]}")


def test_rq_queue_holds_jobs_until_a_worker_runs_them_and_cancel_or_delete_stops_them(rq_settings, openapi):
    client = CheckedClient(create_app(rq_settings), openapi)
    created = client.post("/v1/indexes", json=BODY).get_json()
    index_id, job_id = created["index"]["id"], created["job"]["id"]
    health = client.get("/v1/health").get_json()
    assert health["status"] == "ok" and health["queue"] == {"ok": True, "backend": "redis", "depth": 1}

    body = assert_problem(client.get(f"/v1/indexes/{index_id}/layers/features.1/units/0"), 409, "index-not-ready")
    assert body["index_status"] == "queued"

    cancelled = client.post(f"/v1/jobs/{job_id}/cancel")
    assert cancelled.status_code == 202 and cancelled.get_json()["status"] == "cancelled"
    assert_problem(client.post(f"/v1/jobs/{job_id}/cancel"), 409, "job-finished")

    second = client.post("/v1/indexes", json=BODY).get_json()["index"]["id"]
    assert client.delete(f"/v1/indexes/{second}").status_code == 204
    assert_problem(client.get(f"/v1/indexes/{second}"), 404, "index-not-found")


def test_redis_outage_is_503_for_writes_while_stored_indexes_stay_readable(rq_settings, openapi):
    up = CheckedClient(create_app(rq_settings), openapi)
    stored = up.post("/v1/indexes", json=BODY).get_json()["index"]["id"]

    down = CheckedClient(create_app(rq_settings.with_overrides(redis_url=CLOSED_REDIS)), openapi)
    before = down.get("/v1/indexes").get_json()["total"]
    response = down.post("/v1/indexes", json=BODY)
    body = assert_problem(response, 503, "queue-unavailable")
    assert "127.0.0.1:1" in body["detail"] and response.headers["Retry-After"]
    assert_problem(down.delete(f"/v1/indexes/{stored}"), 503, "queue-unavailable")  # its job must be stopped first

    assert down.get(f"/v1/indexes/{stored}").get_json()["status"] == "queued"
    assert down.get("/v1/indexes").get_json()["total"] == before  # the refused POST left no index behind
    health = down.get("/v1/health")
    assert health.status_code == 200
    assert health.get_json()["status"] == "degraded" and health.get_json()["queue"]["ok"] is False


def test_redis_render_cache_shares_pngs_and_treats_an_outage_as_a_miss(redis_url):
    cache = RedisRenderCache(redis_client(redis_url), f"apitest-{uuid.uuid4().hex[:8]}")
    cache.set("k", b"png")
    assert cache.get("k") == b"png"
    gone = RedisRenderCache(redis_client(CLOSED_REDIS), "apitest")
    gone.set("k", b"png")
    assert gone.get("k") is None


def test_write_endpoints_need_an_api_key_when_keys_are_configured(make_client):
    client = make_client(api_keys=frozenset({"s3cret"}))
    response = client.post("/v1/indexes", json=BODY)
    assert_problem(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"] == 'ApiKey header="X-API-Key"'
    # Auth comes first: an unauthorised client learns nothing about its body.
    assert_problem(client.post("/v1/indexes", data="{", content_type="application/json"), 401, "unauthorized")
    assert_problem(client.post("/v1/indexes", json=BODY, headers={"X-API-Key": "wrong"}), 401, "unauthorized")
    assert_problem(client.delete("/v1/indexes/1"), 401, "unauthorized")
    assert_problem(client.post("/v1/jobs/abc/cancel"), 401, "unauthorized")
    # The right key passes auth and reaches the checks behind it.
    key = {"X-API-Key": "s3cret"}
    bad_path = {**BODY, "dataset": {"path": "no-such-folder"}}
    assert_problem(client.post("/v1/indexes", json=bad_path, headers=key), 422, "path-not-found")
    assert_problem(client.delete("/v1/indexes/1", headers=key), 404, "index-not-found")
    # Reads never need a key.
    assert client.get("/v1/indexes").status_code == 200


def test_api_key_check_compares_every_key_and_not_the_raw_lengths(make_client, monkeypatch):
    import hmac

    client = make_client(api_keys=frozenset({"first-key", "k2", "a-much-longer-third-key"}))
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: compared.append((a, b)) or real(a, b))
    for key in ("first-key", "k2", "a-much-longer-third-key"):
        compared.clear()
        assert_problem(client.delete("/v1/indexes/1", headers={"X-API-Key": key}), 404, "index-not-found")
        # No short cut at the matching key, and equal-length operands: time says nothing about the keys.
        assert len(compared) == 3 and {len(a) for pair in compared for a in pair} == {32}


def test_reading_a_job_whose_worker_died_answers_failed_even_with_no_worker_alive(rq_settings, openapi):
    client = CheckedClient(create_app(rq_settings), openapi)
    created = client.post("/v1/indexes", json=BODY).get_json()
    index_id, job_id = created["index"]["id"], created["job"]["id"]
    # A worker took the job and died before its first heartbeat; no worker is left to reap it.
    engine = make_engine(rq_settings.database_url)
    state.claim(session_factory(engine), job_id)
    engine.dispose()

    job = client.get(f"/v1/jobs/{job_id}").get_json()
    assert job["status"] == "failed" and job["error"]
    assert client.get(f"/v1/indexes/{index_id}").get_json()["status"] == "failed"
