"""Request paths stay inside the configured roots, whatever a client spells."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.paths import PathNotAllowed, PathNotFound, resolve_under_roots


@pytest.fixture
def roots(tmp_path: Path) -> list[Path]:
    first, second = tmp_path / "a", tmp_path / "b"
    (first / "photos").mkdir(parents=True)
    (second / "weights").mkdir(parents=True)
    (second / "weights" / "net.pth").write_bytes(b"x")
    (tmp_path / "secret.txt").write_text("no")
    return [first, second]


def test_relative_path_resolves_against_the_root_that_has_it(roots):
    assert resolve_under_roots("weights/net.pth", roots) == roots[1] / "weights" / "net.pth"


def test_absolute_path_inside_a_root_is_allowed(roots):
    path = roots[0] / "photos"
    assert resolve_under_roots(str(path), roots) == path


@pytest.mark.parametrize("spelling", ["../secret.txt", "photos/../../secret.txt", "/etc/passwd", "/"])
def test_paths_leaving_every_root_are_refused(roots, spelling):
    with pytest.raises(PathNotAllowed):
        resolve_under_roots(spelling, roots)


def test_symlink_pointing_out_of_a_root_is_refused(roots, tmp_path):
    (roots[0] / "escape").symlink_to(tmp_path / "secret.txt")
    with pytest.raises(PathNotAllowed):
        resolve_under_roots("escape", roots)


def test_missing_path_inside_a_root_is_not_found_not_forbidden(roots):
    with pytest.raises(PathNotFound):
        resolve_under_roots("photos/nothing-here", roots)


@pytest.mark.parametrize("bad", ["", "a\x00b", None])
def test_empty_or_nul_paths_are_refused(roots, bad):
    with pytest.raises(PathNotAllowed):
        resolve_under_roots(bad, roots)

