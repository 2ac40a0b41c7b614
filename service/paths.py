"""Confine user-supplied paths to the configured roots.

Requests name datasets and weight files by path; without this a client could make the worker read
any file on the host (``../../etc/passwd``, an absolute path, or a symlink pointing out of a root).
Every path from a request goes through ``resolve_under_roots`` before anything opens it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable


class PathNotAllowed(ValueError):
    """The path leaves every configured root (``..``, absolute elsewhere, symlink out)."""


class PathNotFound(FileNotFoundError):
    """The path is allowed but nothing exists there."""


def resolve_under_roots(user_path: str, roots: Iterable[Path]) -> Path:
    """Return the real path of ``user_path`` if it lies inside one of ``roots``.

    A relative path is tried against each root in order and the first that exists wins; symlinks
    are resolved before the containment check, so a link that points outside is refused.
    """
    if not isinstance(user_path, str) or not user_path or "\x00" in user_path:
        raise PathNotAllowed("path must be a non-empty string")
    roots = [Path(r).resolve() for r in roots]
    if not roots:
        raise PathNotAllowed("no dataset roots are configured")
    given = Path(user_path)
    candidates = [given] if given.is_absolute() else [root / given for root in roots]
    escaped = False  # the path, or what it points at, lies outside every root
    for candidate in candidates:
        real = candidate.resolve()
        inside = any(real.is_relative_to(root) for root in roots)
        if inside and real.exists():
            return real
        if not inside and (real.exists() or given.is_absolute() or ".." in given.parts):
            escaped = True
    shown = ", ".join(str(r) for r in roots)
    if escaped:
        raise PathNotAllowed(f"path {user_path!r} is outside the allowed roots ({shown})")
    raise PathNotFound(f"path {user_path!r} does not exist under the allowed roots ({shown})")
