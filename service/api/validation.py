"""Request validation against ``openapi.yaml`` with openapi-core, answering problems on failure.

Every API view is wrapped by :class:`SpecValidator` (a ``FlaskOpenAPIViewDecorator``) in the app
factory, so the YAML is the single source of truth for what a request may contain; views read the
typed, defaulted values from ``request.openapi``. Responses are not validated here (the tests do it
for every response they receive) because it would double the per-request cost in production.

Measured reason for the memo: openapi-core re-resolves the spec on every call and spends about
2 ms per request on four parameters (Flask alone: 0.12 ms). For a request without a body the result
depends only on the method, the URL and the headers the spec declares, so it is kept in a small
per-process LRU; the same patch-grid or unit URL is then validated once, not once per request.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Iterable

from flask import Response
from openapi_core import Config, OpenAPI
from openapi_core.contrib.flask.decorators import FlaskOpenAPIViewDecorator
from openapi_core.contrib.flask.handlers import FlaskOpenAPIErrorsHandler
from openapi_core.contrib.flask.requests import FlaskOpenAPIRequest
from openapi_core.deserializing.media_types.exceptions import MediaTypeDeserializeError
from openapi_core.deserializing.media_types.util import json_loads
from openapi_core.templating.media_types.exceptions import MediaTypeNotFound
from openapi_core.templating.paths.exceptions import OperationNotFound, PathNotFound
from openapi_core.unmarshalling.request.datatypes import RequestUnmarshalResult
from openapi_core.validation.request.exceptions import (
    MissingRequestBodyError,
    ParameterValidationError,
    RequestBodyValidationError,
    SecurityValidationError,
)

from service.api.problems import PROBLEM_MEDIA_TYPE, problem_response

SPEC_PATH = Path(__file__).resolve().parents[2] / "openapi.yaml"

MEMO_ENTRIES = 4096
_MEMO_HEADERS = ("If-None-Match", "X-API-Key")
_MESSAGE_CHARS = 300


def load_openapi(path: Path = SPEC_PATH) -> OpenAPI:
    """The spec, with problem documents read as the JSON they are (openapi-core knows only
    ``application/json``), so the tests can validate error responses too."""
    config = Config(extra_media_type_deserializers={PROBLEM_MEDIA_TYPE: json_loads})
    return OpenAPI.from_file_path(str(path), config=config)


def _short(text: str) -> str:
    return text if len(text) <= _MESSAGE_CHARS else text[: _MESSAGE_CHARS - 3] + "..."


def _schema_messages(cause: BaseException | None, prefix: str) -> list[dict[str, str]]:
    """One ``{location, message}`` per jsonschema error, located by its path inside the value."""
    schema_errors = list(getattr(cause, "schema_errors", None) or [])
    if not schema_errors:
        return [{"location": prefix, "message": _short(str(cause) if cause else "invalid value")}]
    return [
        {
            "location": ".".join([prefix, *(str(p) for p in err.absolute_path)]),
            "message": _short(err.message),
        }
        for err in schema_errors
    ]


def _describe(error: Exception) -> tuple[int, str, list[dict[str, str]]]:
    """Status, problem kind and per-field messages for one openapi-core error."""
    cause = error.__cause__
    if isinstance(error, PathNotFound):
        return 404, "not-found", [{"location": "path", "message": str(error)}]
    if isinstance(error, OperationNotFound):
        return 405, "method-not-allowed", [{"location": "method", "message": str(error)}]
    if isinstance(error, ParameterValidationError):
        return 400, "invalid-parameter", _schema_messages(cause, f"{error.location}.{error.name}")
    if isinstance(error, MissingRequestBodyError):
        return 400, "missing-body", [{"location": "body", "message": "a JSON request body is required"}]
    if isinstance(error, RequestBodyValidationError):
        if isinstance(cause, MediaTypeNotFound):
            return 415, "unsupported-media-type", [{"location": "header.Content-Type", "message": _short(str(cause))}]
        if isinstance(cause, MediaTypeDeserializeError):
            return 400, "malformed-json", [{"location": "body", "message": "the body is not valid JSON"}]
        return 422, "invalid-body", _schema_messages(cause, "body")
    if isinstance(error, SecurityValidationError):
        return 401, "unauthorized", [{"location": "header.X-API-Key", "message": "missing or invalid API key"}]
    return 400, "bad-request", [{"location": "request", "message": _short(str(error))}]


class ProblemErrorsHandler(FlaskOpenAPIErrorsHandler):
    """Turn openapi-core's errors into one problem: the most severe status, every message."""

    def __call__(self, errors: Iterable[Exception]) -> Response:
        described = [_describe(e) for e in errors]
        status, kind, _ = max(described, key=lambda d: d[0])
        messages = [m for _, _, ms in described for m in ms]
        detail = "; ".join(f"{m['location']}: {m['message']}" for m in messages)
        return problem_response(status, kind, detail, errors=messages)


class _Request(FlaskOpenAPIRequest):
    """HEAD is answered by the GET view (Flask does so), so it is validated as that GET."""

    @property
    def method(self) -> str:
        method = self.request.method.lower()
        return "get" if method == "head" else method


class SpecValidator(FlaskOpenAPIViewDecorator):
    """openapi-core's Flask decorator with problem errors, no response validation, and a memo."""

    def __init__(self, openapi: OpenAPI):
        super().__init__(openapi, request_cls=_Request, response_cls=None, errors_handler_cls=ProblemErrorsHandler)
        self._memo: OrderedDict[tuple, RequestUnmarshalResult] = OrderedDict()
        self._lock = threading.Lock()

    def unmarshal_request(self, request) -> RequestUnmarshalResult:
        if request.method not in ("GET", "HEAD", "DELETE") or request.content_length:
            return super().unmarshal_request(request)
        key = (request.method, request.full_path,
               *(request.headers.get(h) for h in _MEMO_HEADERS))
        with self._lock:
            hit = self._memo.get(key)
            if hit is not None:
                self._memo.move_to_end(key)
                return hit
        result = super().unmarshal_request(request)
        with self._lock:
            self._memo[key] = result
            if len(self._memo) > MEMO_ENTRIES:
                self._memo.popitem(last=False)
        return result
