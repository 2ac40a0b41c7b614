"""``/metrics`` under a real gunicorn with two workers: whichever worker answers a scrape, the
request counts are the whole server's (prometheus_client multiprocess files under the data dir)."""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from service.serve import METRICS_DIR

COUNT = "unitscope_http_request_duration_seconds_count"
HEALTH = {"endpoint": "/v1/health", "method": "GET", "status": "200"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(port: int, path: str) -> tuple[int, str]:
    """One request on its own connection, so the workers' accept loops share them out."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def health_count(samples) -> float:
    return sum(s.value for s in samples if s.name == COUNT and all(s.labels.get(k) == v for k, v in HEALTH.items()))


def scrape(port: int) -> float:
    status, text = get(port, "/metrics")
    assert status == 200
    return health_count([s for family in text_string_to_metric_families(text) for s in family.samples])


def per_worker_counts(metrics_dir: Path, tmp_path: Path) -> dict[str, float]:
    """Each worker's own health count, read from its file alone."""
    counts = {}
    for path in metrics_dir.glob("histogram_*.db"):
        alone = tmp_path / path.stem
        alone.mkdir(exist_ok=True)
        shutil.copy(path, alone / path.name)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(alone))
        counts[path.stem] = health_count([s for family in registry.collect() for s in family.samples])
    return counts


def test_metrics_under_two_gunicorn_workers_add_up_all_requests(redis_url, dataset_root, assets_dir, tmp_path):
    data_dir, port = tmp_path / "var", free_port()
    stale = data_dir / METRICS_DIR
    stale.mkdir(parents=True)
    (stale / "histogram_1.db").write_bytes(b"left over from an earlier run")
    env = {**os.environ, "UNITSCOPE_DATA_DIR": str(data_dir), "REDIS_URL": redis_url,
           "UNITSCOPE_ASSETS": str(assets_dir),
           "UNITSCOPE_DATASET_ROOTS": os.pathsep.join([str(dataset_root), str(assets_dir)])}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    server = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--port", str(port), "--workers", "2"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if get(port, "/v1/health")[0] == 200:
                    break
            except OSError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)
        sent = 1
        metrics_dir = data_dir / METRICS_DIR
        assert not (metrics_dir / "histogram_1.db").exists()  # emptied at start
        # Until both workers have answered some: on a loaded machine the second worker may still
        # be booting while the first takes every connection, so wait by time, not by rounds.
        deadline = time.monotonic() + 90
        with ThreadPoolExecutor(8) as pool:
            while time.monotonic() < deadline:
                statuses = list(pool.map(lambda _: get(port, "/v1/health")[0], range(40)))
                assert statuses == [200] * 40
                sent += 40
                workers = per_worker_counts(metrics_dir, tmp_path)
                if len(workers) == 2 and all(workers.values()):
                    break
        assert len(workers) == 2 and all(workers.values()), workers
        assert sum(workers.values()) == sent
        for _ in range(6):  # scrapes land on either worker; each sees every worker's requests
            assert scrape(port) == sent
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
