"""What the blueprints share: settings, database, queue, caches; built once by the app factory.

Kept on ``app.extensions`` rather than in module globals, so two apps (tests build many) never
share a database or a queue. A request gets one session, opened on first use and closed when the
request ends.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from pathlib import Path

from flask import current_app, g, request
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from service.api.cache import LoadingLRU, ReadyIndexes, RenderCache
from service.api.problems import Problem
from service.config import Settings
from service.jobs.queue import JobQueue
from service.paths import resolve_under_roots

EXTENSION = "unitscope"


@dataclass
class ApiContext:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    queue: JobQueue
    renders: RenderCache
    models: LoadingLRU  # model spec JSON -> service.scan.models.LoadedModel
    ready: ReadyIndexes  # index id -> ReadyIndex (service.api.lookup)

    def resolve(self, user_path: str) -> Path:
        """A path from a request or a stored spec, confined to the configured dataset roots."""
        return resolve_under_roots(user_path, self.settings.dataset_roots)

    def loaded_model(self, model_spec: dict):
        """The index's model, loaded on first use (torch is imported only then)."""
        return self.models.get(json.dumps(model_spec, sort_keys=True))


def api() -> ApiContext:
    return current_app.extensions[EXTENSION]


def db() -> Session:
    """The request's session; views that write commit it themselves."""
    if "db_session" not in g:
        g.db_session = api().sessions()
    return g.db_session


def close_db(_exc: BaseException | None = None) -> None:
    session = g.pop("db_session", None)
    if session is not None:
        session.close()


WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def require_write_access() -> None:
    """Writes need a configured key in ``X-API-Key``; with no keys configured, anyone may write
    (local use). Keys are compared in constant time."""
    keys = api().settings.api_keys
    if not keys or request.method not in WRITE_METHODS:
        return
    # Digests have one length, and every key is compared (no short cut at the first match), so
    # the time taken tells nothing about the keys' lengths, contents or which one matched.
    given = hashlib.sha256(request.headers.get("X-API-Key", "").encode()).digest()
    matches = [hmac.compare_digest(given, hashlib.sha256(key.encode()).digest()) for key in sorted(keys)]
    if not any(matches):
        raise Problem(401, "unauthorized", "this operation needs a valid API key in the X-API-Key header",
                      headers={"WWW-Authenticate": 'ApiKey header="X-API-Key"'})
