"""Immutable PNG responses: strong ETag, one-year cache lifetime, 304s, rendered at most once.

The ETag hashes what determines the pixels: the index and the moment its result was written (a
re-run index gets new tags), the path, and the validated query values with defaults filled in (so
``?k=9`` and no ``k`` share one entry). It doubles as the render-cache key.
"""

from __future__ import annotations

import hashlib
import json
from typing import Callable

from flask import Response, request

from service.api.context import api
from service.store.models import Index

CACHE_CONTROL = "public, max-age=31536000, immutable"


def png_response(index: Index, render: Callable[[], bytes]) -> Response:
    query = sorted((k, v) for k, v in request.openapi.parameters.query.items())
    identity = json.dumps([index.id, index.finished_at.isoformat(), request.path, query], default=str)
    etag = hashlib.sha256(identity.encode()).hexdigest()[:40]
    if request.if_none_match.contains(etag):
        response = Response(status=304)
    else:
        body = api().renders.get(etag)
        if body is None:
            body = render()
            api().renders.set(etag, body)
        response = Response(body, mimetype="image/png")
    response.set_etag(etag)
    response.headers["Cache-Control"] = CACHE_CONTROL
    return response
