"""Service-level endpoints: health and the architectures that can be indexed."""

from __future__ import annotations

from functools import cache

from flask import Blueprint
from sqlalchemy import text

from service.api.context import api, db
from service.jobs.queue import QueueUnavailable

bp = Blueprint("service", __name__)


@bp.get("/v1/health")
def health():
    """200 while reads work (database up); the queue's state is reported, not required."""
    try:
        db().execute(text("SELECT 1"))
        database = {"ok": True}
    except Exception as exc:  # any driver error means the same thing here: the database is down
        database = {"ok": False, "detail": f"{exc.__class__.__name__}: {exc}"[:300]}
    ctx = api()
    queue = {"ok": ctx.queue.ping(), "backend": "redis" if ctx.settings.redis_url else "embedded", "depth": None}
    if queue["ok"]:
        try:
            queue["depth"] = ctx.queue.depth()
        except QueueUnavailable:
            queue["ok"] = False
    status = "down" if not database["ok"] else "ok" if queue["ok"] else "degraded"
    return {"status": status, "database": database, "queue": queue}, 200 if database["ok"] else 503


@cache
def _architectures() -> tuple[str, ...]:
    from service.scan.models import list_architectures  # imports torchvision: only when asked

    return tuple(list_architectures())


@bp.get("/v1/models")
def models():
    return {"architectures": list(_architectures())}
