"""Bring a database to the newest schema, from code: `unitscope migrate`, the app, the worker.

Several processes may start at once (gunicorn workers, RQ workers, the container entrypoint), so
each migration run holds a database-wide lock: a PostgreSQL advisory lock, or SQLite's write lock
(BEGIN IMMEDIATE). The later ones wait, then find the schema already at head and do nothing.
Within one process a thread lock comes first: Alembic keeps its running context in module globals,
so two threads migrating at once (the app and its embedded worker) would trip over each other.
"""

from __future__ import annotations

import threading
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import URL

from service.store.db import make_engine

# Any constant that all Unitscope processes share: "unitscope" in ASCII, cut to a signed 64-bit key.
ADVISORY_LOCK_KEY = 0x756E697473636F7065 & 0x7FFFFFFFFFFFFFFF
_THIS_PROCESS = threading.Lock()


def script_location() -> Path:
    """The ``migrations`` folder: beside the package in a checkout, or in the working directory
    (the container keeps it in /app while the package is installed into the virtualenv)."""
    candidates = (Path(__file__).resolve().parents[2] / "migrations", Path.cwd() / "migrations")
    for candidate in candidates:
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError(f"no Alembic migrations folder in {', '.join(map(str, candidates))}")


def lock_for_migration(conn: Connection) -> None:
    """Serialise migration runs across processes for the rest of ``conn``'s transaction."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
    elif conn.dialect.name == "sqlite" and not conn.connection.driver_connection.in_transaction:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def alembic_config(conn: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(script_location()))
    config.attributes["connection"] = conn
    return config


def upgrade(engine_or_url: Engine | str | URL, revision: str = "head") -> None:
    """Run ``alembic upgrade`` on the given database in one transaction."""
    engine = engine_or_url if isinstance(engine_or_url, Engine) else make_engine(engine_or_url)
    try:
        with _THIS_PROCESS, engine.begin() as conn:
            command.upgrade(alembic_config(conn), revision)
    finally:
        if engine is not engine_or_url:
            engine.dispose()
