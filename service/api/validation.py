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

import json
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


class StrictJSONError(ValueError):
    """A body Python's ``json`` would take but JSON (RFC 8259) or this API does not."""


def _no_constant(name: str):
    raise StrictJSONError(f"{name} is not a JSON number")


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    seen = dict(pairs)
    if len(seen) != len(pairs):
        keys = [key for key, _ in pairs]
        duplicate = next(key for key in keys if keys.count(key) > 1)
        raise StrictJSONError(f"duplicate key {duplicate!r}: every member name must be unique")
    return seen


def strict_json_loads(value: bytes | str, **_parameters: str):
    """JSON as RFC 8259 defines it: no NaN/Infinity, no duplicate member names (which parsers
    resolve differently, so a proxy and this API could read different bodies), and nesting deep
    enough to exhaust the parser's stack is refused instead of crashing the request."""
    try:
        return json.loads(value, parse_constant=_no_constant, object_pairs_hook=_unique_keys)
    except RecursionError:
        raise StrictJSONError("nested too deeply") from None


def load_openapi(path: Path = SPEC_PATH) -> OpenAPI:
    """The spec, with JSON bodies read strictly and problem documents read as the JSON they are
    (openapi-core knows only ``application/json``), so the tests can validate error responses too."""
    config = Config(extra_media_type_deserializers={"application/json": strict_json_loads,
                                                    PROBLEM_MEDIA_TYPE: strict_json_loads})
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
    if isinstance(error, RepeatedParameter):
        return 400, "invalid-parameter", [{"location": f"query.{error.name}",
                                           "message": "given more than once; send each query parameter once"}]
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
            reason = cause.__context__  # what the JSON parser said, when it said something useful
            why = f": {reason}" if isinstance(reason, StrictJSONError) else ""
            return 400, "malformed-json", [{"location": "body", "message": f"the body is not valid JSON{why}"}]
        return 422, "invalid-body", _schema_messages(cause, "body")
    if isinstance(error, SecurityValidationError):
        return 401, "unauthorized", [{"location": "header.X-API-Key", "message": "missing or invalid API key"}]
    return 400, "bad-request", [{"location": "request", "message": _short(str(error))}]


class RepeatedParameter(Exception):
    """A query parameter given more than once: none of this API's parameters is a list, and
    picking the first or the last would silently disagree with some client or proxy."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


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
        repeated = sorted({name for name, values in request.args.lists() if len(values) > 1})
        if repeated:
            return RequestUnmarshalResult(errors=[RepeatedParameter(name) for name in repeated])
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
