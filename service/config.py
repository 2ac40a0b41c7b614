"""Settings from the environment, read once into one immutable object.

Every other room receives a ``Settings`` instead of reading ``os.environ`` itself, so tests can build
an app, a worker or a scan against their own database, Redis and folders without touching globals.
The names and defaults are the ones fixed in the design document.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping

# The checkout sits beside ``shared/``; the fallback keeps the demo and tests working without setup.
DEFAULT_ASSETS = Path(__file__).resolve().parents[1].parent / "shared" / "assets"


class SettingsError(ValueError):
    """An environment variable holds a value that cannot be used."""


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise SettingsError(f"{name}={value} must be at least {minimum}")
    return value


@dataclass(frozen=True)
class Settings:
    """Everything configurable; see the README's configuration table for the meaning of each."""

    data_dir: Path
    database_url: str
    redis_url: str | None
    dataset_roots: tuple[Path, ...]
    assets_dir: Path | None
    api_keys: frozenset[str] = field(default_factory=frozenset)
    job_timeout_s: int = 6 * 3600
    batch_size: int = 32
    loader_workers: int = 2
    device: str = "auto"
    redis_db_prefix: str = "unitscope"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        data_dir = Path(env.get("UNITSCOPE_DATA_DIR") or "./var").resolve()
        assets_raw = env.get("UNITSCOPE_ASSETS")
        if assets_raw:
            assets_dir: Path | None = Path(assets_raw).resolve()
        else:
            assets_dir = DEFAULT_ASSETS if DEFAULT_ASSETS.is_dir() else None
        roots_raw = env.get("UNITSCOPE_DATASET_ROOTS")
        if roots_raw:
            roots = tuple(Path(p).resolve() for p in roots_raw.split(os.pathsep) if p)
        else:
            roots = (data_dir / "datasets",) + ((assets_dir,) if assets_dir else ())
        keys = frozenset(k.strip() for k in (env.get("UNITSCOPE_API_KEYS") or "").split(",") if k.strip())
        device = env.get("UNITSCOPE_DEVICE") or "auto"
        return cls(
            data_dir=data_dir,
            database_url=env.get("DATABASE_URL") or f"sqlite:///{data_dir / 'unitscope.db'}",
            redis_url=env.get("REDIS_URL") or None,
            dataset_roots=roots,
            assets_dir=assets_dir,
            api_keys=keys,
            job_timeout_s=_int(env, "UNITSCOPE_JOB_TIMEOUT", 6 * 3600, minimum=1),
            batch_size=_int(env, "UNITSCOPE_BATCH_SIZE", 32, minimum=1),
            loader_workers=_int(env, "UNITSCOPE_LOADER_WORKERS", 2),
            device=device,
        )

    def with_overrides(self, **changes) -> "Settings":
        """A copy with some fields replaced; tests and the CLI use it instead of mutating env."""
        return replace(self, **changes)
