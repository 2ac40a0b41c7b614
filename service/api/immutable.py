"""Responses computed from a finished index, which never changes: rendered (or serialised) once.

The identity of such a response hashes what determines its bytes: the index and the moment its
result was written (a re-run or re-created index gets new identities), the path, and the
validated query values with defaults filled in (so ``?k=9`` and no ``k`` share one entry). It is
the cache key and, for PNGs, the strong ETag.
"""

from __future__ import annotations

import hashlib
import json
from typing import Callable

from flask import Response, request

from service.api.context import api
from service.store.models import Index

CACHE_CONTROL = "public, max-age=31536000, immutable"


def _identity(index: Index) -> str:
    query = sorted((k, v) for k, v in request.openapi.parameters.query.items())
    identity = json.dumps([index.id, index.finished_at.isoformat(), request.path, query], default=str)
    return hashlib.sha256(identity.encode()).hexdigest()[:40]


def _cached(key: str, make: Callable[[], bytes]) -> bytes:
    body = api().renders.get(key)
    if body is None:
        body = make()
        api().renders.set(key, body)
    return body


def png_response(index: Index, render: Callable[[], bytes]) -> Response:
    """Strong ETag, one-year immutable Cache-Control, 304 on a matching If-None-Match (compared
    weakly, as RFC 9110 requires, so ``W/"<etag>"`` from a cache that weakened it matches too)."""
    etag = _identity(index)
    if request.if_none_match.contains_weak(etag):  # RFC 9110 13.1.2: weak comparison
        response = Response(status=304)
    else:
        response = Response(_cached(etag, render), mimetype="image/png")
    response.set_etag(etag)
    response.headers["Cache-Control"] = CACHE_CONTROL
    return response


def json_response(index: Index, build: Callable[[], dict]) -> Response:
    """A JSON body serialised once per process or Redis (unit top-k lists are read far more often
    than anything else and never change for a finished index)."""
    body = _cached("json:" + _identity(index), lambda: json.dumps(build()).encode())
    return Response(body, mimetype="application/json")
