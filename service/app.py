"""The Flask app factory: wires settings, database, queue, caches and blueprints into one app.

``create_app`` does not migrate the database (the CLI and the container entrypoint do, once, before
any worker process starts); tests migrate with ``service.store.migrate.upgrade``.
"""

from __future__ import annotations

import functools
import json

from flask import Flask

from service.api import observability
from service.api.cache import LoadingLRU, LocalRenderCache, ReadyIndexes, RedisRenderCache, RenderCache
from service.api.context import EXTENSION, ApiContext, close_db
from service.api.problems import register_error_handlers
from service.api.routes import docs, images, indexes, service, units
from service.api.validation import SpecValidator, load_openapi
from service.config import Settings
from service.jobs.queue import make_queue, redis_client
from service.paths import resolve_under_roots
from service.store.db import make_engine, session_factory

# Blueprints whose views openapi-core validates (docs and /metrics are not part of the JSON API).
VALIDATED_BLUEPRINTS = (service.bp, indexes.bp, units.bp, images.bp)
MAX_BODY_BYTES = 16 * 1024 * 1024
MODELS_KEPT = 2


def _render_cache(settings: Settings) -> RenderCache:
    if settings.redis_url:
        return RedisRenderCache(redis_client(settings.redis_url), settings.redis_db_prefix)
    return LocalRenderCache()


def _load_model(settings: Settings, spec_json: str):
    """Load an index's model for on-demand maps and filters; torch is imported on first call."""
    from service.scan.models import ModelSpec, load_model

    resolve = functools.partial(resolve_under_roots, roots=settings.dataset_roots)
    return load_model(ModelSpec.from_dict(json.loads(spec_json)), resolve_path=resolve)


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    engine = make_engine(settings.database_url)
    sessions = session_factory(engine)
    ctx = ApiContext(
        settings=settings,
        engine=engine,
        sessions=sessions,
        queue=make_queue(settings, sessions),
        renders=_render_cache(settings),
        models=LoadingLRU(functools.partial(_load_model, settings), size=MODELS_KEPT),
        ready=ReadyIndexes(),
    )
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.json.sort_keys = False
    app.extensions[EXTENSION] = ctx
    register_error_handlers(app)
    observability.install(app, ctx)
    app.teardown_appcontext(close_db)
    for blueprint in (*VALIDATED_BLUEPRINTS, docs.bp):
        app.register_blueprint(blueprint)
    validator = SpecValidator(load_openapi())
    validated = {blueprint.name for blueprint in VALIDATED_BLUEPRINTS}
    for endpoint, view in list(app.view_functions.items()):
        if endpoint.partition(".")[0] in validated:
            app.view_functions[endpoint] = validator(view)
    return app
