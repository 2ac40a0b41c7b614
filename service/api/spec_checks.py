"""The checks ``POST /v1/indexes`` makes before anything is queued.

A scan job that fails a minute later on a typo helps nobody: every mistake a client can make in
the model or dataset spec that can be detected without loading the model is answered here, as a
problem naming the field. Paths are confined to the dataset roots (403 outside, 422 when missing).
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from service.api.context import api
from service.api.problems import Problem


def _file(field: str, user_path: str) -> None:
    path = api().resolve(user_path)
    if not path.is_file():
        raise Problem(422, "invalid-model-spec", f"model.{field} {user_path!r} is a folder, not a file")


def checked_model(spec: dict, layers: list[str] | None) -> dict:
    """The normalised spec; unknown architecture, bad fields, unusable files, enum weights missing
    from the hub cache and layer names the architecture lacks are refused."""
    from service.scan.errors import LayerError
    from service.scan.models import STATE_DICT_SUFFIXES, ModelSpec, check_spec, list_architectures  # imports torch

    parsed = ModelSpec.from_dict(spec)  # ModelSpecError -> 422
    if parsed.arch is not None and parsed.arch not in list_architectures():
        raise Problem(422, "invalid-model-spec",
                      f"unknown architecture {parsed.arch!r}; GET /v1/models lists the ones that can be indexed")
    weights = parsed.weights
    if weights is not None and (weights.endswith(STATE_DICT_SUFFIXES) or "/" in weights):
        _file("weights", weights)
    if parsed.torchscript is not None:
        _file("torchscript", parsed.torchscript)
    try:
        check_spec(parsed, layers)
    except LayerError as exc:  # a missing layer is 404 in a URL, but here it is a bad body field
        raise Problem(422, exc.kind, f"layers: {exc}") from None
    return parsed.to_dict()


def checked_dataset(spec: dict) -> dict:
    """The spec as given, once its folder (and any listed files) exist inside a dataset root."""
    from service.scan.data import EXTENSIONS

    root = api().resolve(spec["path"])
    if not root.is_dir():
        raise Problem(422, "invalid-dataset", f"dataset.path {spec['path']!r} is a file, not a folder")
    files = spec.get("files")
    if files is None:
        if not _contains_image(root, EXTENSIONS):
            raise Problem(422, "invalid-dataset",
                          f"dataset.path {spec['path']!r} holds no images ({', '.join(sorted(EXTENSIONS))})")
        return spec
    for name in files:
        if PurePosixPath(name).is_absolute() or ".." in PurePosixPath(name).parts:
            raise Problem(403, "path-not-allowed", f"dataset.files entry {name!r} must be relative to dataset.path, without '..'")
        if not api().resolve(str(root / name)).is_file():
            raise Problem(422, "invalid-dataset", f"dataset.files entry {name!r} is not a file")
    return spec


def _contains_image(root: Path, extensions) -> bool:
    """Stop at the first image: a big dataset must not be listed in full inside a request."""
    for _dirpath, _dirs, names in os.walk(root):
        if any(os.path.splitext(n)[1].lower() in extensions for n in names):
            return True
    return False
