"""Session fixtures for real resources: assets, PostgreSQL, SQLite, Redis.

Service-backed fixtures skip with a loud reason when the service is not reachable, so a laptop
without PostgreSQL still runs the rest; CI sets ``REQUIRE_SERVICES=1`` and then a missing service
fails the run instead of silently shrinking it.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from service.config import Settings

REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES") == "1"
POSTGRES_ADMIN_URL = os.environ.get("UNITSCOPE_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_TEST_URL = os.environ.get("UNITSCOPE_TEST_REDIS", "redis://127.0.0.1:6379/13")


def unavailable(what: str) -> None:
    """Skip loudly, or fail when the run promised that every service is there."""
    message = f"UNAVAILABLE: {what}"
    if REQUIRE_SERVICES:
        pytest.fail(message + " (REQUIRE_SERVICES=1)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def assets_dir() -> Path:
    settings = Settings.from_env()
    if settings.assets_dir is None or not settings.assets_dir.is_dir():
        unavailable("assets folder (set UNITSCOPE_ASSETS or place ../shared/assets)")
    return settings.assets_dir


@pytest.fixture(scope="session")
def mobilenet_weights(assets_dir: Path) -> Path:
    return assets_dir / "weights" / "mobilenet_v2-imagenet-from-quantized.pth"


@pytest.fixture(scope="session")
def imagenet_dir(assets_dir: Path) -> Path:
    return assets_dir / "images" / "imagenet-samples"


@pytest.fixture(scope="session")
def postgres_url():
    """A fresh database on the real server for this test session, dropped afterwards."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"unitscope_test_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # connection refused, auth, missing driver: all mean "no PostgreSQL"
        admin.dispose()
        unavailable(f"PostgreSQL at {POSTGRES_ADMIN_URL}: {exc.__class__.__name__}: {exc}")
    url = make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'unitscope.db'}"


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A Redis database number reserved for tests, flushed before use."""
    import redis

    client = redis.Redis.from_url(REDIS_TEST_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        unavailable(f"Redis at {REDIS_TEST_URL}: {exc}")
    client.flushdb()
    client.close()
    return REDIS_TEST_URL


@pytest.fixture
def make_settings(tmp_path: Path, assets_dir: Path):
    """Settings rooted in a temporary data dir, with the assets as a dataset root."""

    def build(**overrides) -> Settings:
        data_dir = tmp_path / "var"
        data_dir.mkdir(exist_ok=True)
        base = Settings.from_env(
            {
                "UNITSCOPE_DATA_DIR": str(data_dir),
                "UNITSCOPE_ASSETS": str(assets_dir),
                "UNITSCOPE_LOADER_WORKERS": "0",
                "UNITSCOPE_BATCH_SIZE": "16",
            }
        )
        return base.with_overrides(**overrides)

    return build
