"""The README's first command, as a newcomer runs it: index the real model, serve, look at a unit."""

from __future__ import annotations

import io
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from PIL import Image

DEMO_TIMEOUT_S = 600


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def read_until(process: subprocess.Popen, pattern: str, deadline: float) -> list[str]:
    lines = []
    for line in process.stdout:
        lines.append(line)
        if re.search(pattern, line):
            return lines
        if time.monotonic() > deadline:
            break
    raise AssertionError(f"demo never printed {pattern!r}; it printed:\n{''.join(lines)[-3000:]}")


def get(url: str, deadline: float) -> bytes:
    while True:
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                assert response.status == 200
                return response.read()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_demo_indexes_the_sample_photos_and_serves_a_real_unit_grid(tmp_path: Path, assets_dir: Path):
    port = free_port()
    env = {**os.environ, "UNITSCOPE_DATA_DIR": str(tmp_path / "var"), "UNITSCOPE_ASSETS": str(assets_dir)}
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    unitscope = Path(sys.executable).parent / "unitscope"
    process = subprocess.Popen([str(unitscope), "demo", "--port", str(port)], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    deadline = time.monotonic() + DEMO_TIMEOUT_S
    try:
        printed = "".join(read_until(process, r"API docs: http", deadline))
        grids = re.findall(rf"http://127\.0\.0\.1:{port}/v1/indexes/\d+/layers/[\w.]+/units/\d+/patches\.png", printed)
        assert grids, printed
        assert re.search(r"(\d+) images scanned", printed).group(1) == str(
            len(list((assets_dir / "images" / "imagenet-samples").iterdir())))
        grid = Image.open(io.BytesIO(get(grids[0], deadline)))
        assert grid.format == "PNG" and grid.width >= 3 * 64 and grid.height >= 3 * 64
        unit = get(grids[0].rsplit("/patches.png", 1)[0], deadline)
        assert b'"top"' in unit
        assert b"swagger" in get(f"http://127.0.0.1:{port}/docs", deadline).lower()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
