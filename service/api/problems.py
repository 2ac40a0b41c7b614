"""RFC 9457 problem responses: every error the API gives is one of these.

Clients branch on ``type`` (a stable URI per kind of error, never reworded) and show ``detail`` (what
was wrong and what is allowed). The error handlers registered here turn the exceptions other rooms
raise (path confinement, scan spec errors, queue outages) and Flask's own HTTP errors into problems,
so no view has to, and an unexpected exception becomes a 500 problem without a traceback.
"""

from __future__ import annotations

import json
import logging
from http import HTTPStatus
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from service.jobs.queue import QueueUnavailable
from service.paths import PathNotAllowed, PathNotFound
from service.scan.errors import ScanError  # pure Python, no torch

log = logging.getLogger("unitscope.api")

PROBLEM_BASE = "https://unitscope.dev/problems/"
PROBLEM_MEDIA_TYPE = "application/problem+json"

# Flask/werkzeug errors raised before or outside a view (no route, wrong method, ...).
_HTTP_KINDS = {
    400: "bad-request",
    404: "not-found",
    405: "method-not-allowed",
    406: "not-acceptable",
    413: "payload-too-large",
    415: "unsupported-media-type",
}

# Scan errors carry their own kind slug (used as the problem type); the status each answers with.
_SCAN_STATUS = {
    "invalid-model-spec": 422,
    "weights-not-found": 422,
    "weights-mismatch": 422,
    "unsafe-weights": 422,
    "unknown-layer": 404,
    "invalid-dataset": 422,
    "cancelled": 409,
}


class Problem(Exception):
    """Raise from a view to answer with a problem; ``extra`` becomes extension members."""

    def __init__(self, status: int, kind: str, detail: str, headers: dict[str, str] | None = None,
                 **extra: Any):
        super().__init__(detail)
        self.status = status
        self.kind = kind
        self.detail = detail
        self.headers = headers
        self.extra = extra


def problem_response(status: int, kind: str, detail: str, headers: dict[str, str] | None = None,
                     **extra: Any) -> Response:
    body = {
        "type": PROBLEM_BASE + kind,
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "instance": request.path,
        **extra,
    }
    response = Response(json.dumps(body), status=status, mimetype=PROBLEM_MEDIA_TYPE)
    response.headers.update(headers or {})
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(Problem)
    def _problem(exc: Problem) -> Response:
        return problem_response(exc.status, exc.kind, exc.detail, exc.headers, **exc.extra)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        status = exc.code or 500
        # Keep headers werkzeug sets on purpose (``Allow`` on 405) but not its HTML content type.
        headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
        kind = _HTTP_KINDS.get(status, f"http-{status}")
        return problem_response(status, kind, exc.description or HTTPStatus(status).phrase, headers)

    @app.errorhandler(PathNotAllowed)
    def _not_allowed(exc: PathNotAllowed) -> Response:
        return problem_response(403, "path-not-allowed", str(exc))

    @app.errorhandler(PathNotFound)
    def _missing(exc: PathNotFound) -> Response:
        return problem_response(422, "path-not-found", str(exc))

    @app.errorhandler(QueueUnavailable)
    def _queue_down(exc: QueueUnavailable) -> Response:
        return problem_response(503, "queue-unavailable", str(exc), {"Retry-After": "30"})

    @app.errorhandler(ScanError)
    def _scan(exc: ScanError) -> Response:
        return problem_response(_SCAN_STATUS.get(exc.kind, 422), exc.kind, str(exc))

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return problem_response(500, "internal-error", "the server failed to answer this request; it has been logged")
