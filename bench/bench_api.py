"""HTTP benchmark of the API under gunicorn on loopback; prints measured numbers.

    .venv/bin/python bench/bench_api.py [--seconds 10] [--clients 16] [--workers 2] [--threads 8]

Prepares a small real index (MobileNetV2 over a dozen sample photos, k=9) in a temporary folder,
starts gunicorn on a free 127.0.0.1 port with that index, and loads it with 16 concurrent
keep-alive clients: wrk when installed, else a bounded Python thread pool with http.client.

Printed: unit JSON req/s and latency percentiles (targets >= 500 req/s, p99 < 50 ms, 0 errors);
a cached 3x3 patch grid vs. a static file of the same size served by the same gunicorn and Flask
app (target >= 0.5x); cold 3x3 grid latency, each grid rendered for the first time (< 100 ms).
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from flask import send_file

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from service.app import create_app  # noqa: E402
from service.config import Settings  # noqa: E402
from service.store.migrate import upgrade  # noqa: E402

PHOTOS = 12
LAYER = "features.4"
STATIC_PATH = "/bench/static.png"
UNIT_URLS = [f"/v1/indexes/1/layers/{LAYER}/units/{unit}" for unit in range(32)]
GRID_URL = f"/v1/indexes/1/layers/{LAYER}/units/0/patches.png?k=9&size=96"


def bench_app():
    """The service's app plus one static-file route, so the comparison runs in the same server
    and the same Flask app; gunicorn loads it as ``bench_api:bench_app()``."""
    app = create_app()
    static_file = os.environ["BENCH_STATIC_FILE"]
    app.add_url_rule(STATIC_PATH, "bench_static", lambda: send_file(static_file, mimetype="image/png"))
    return app


def environment(workdir: Path, assets: Path) -> dict[str, str]:
    return {
        "UNITSCOPE_DATA_DIR": str(workdir / "var"),
        "UNITSCOPE_ASSETS": str(assets),
        "UNITSCOPE_DATASET_ROOTS": os.pathsep.join([str(workdir / "datasets"), str(assets)]),
        "UNITSCOPE_LOADER_WORKERS": "0",
        "UNITSCOPE_DEVICE": "cpu",
    }


def prepare_index(workdir: Path, env: dict[str, str]) -> None:
    """Index 1: created through the API in-process, scanned by the embedded worker."""
    settings = Settings.from_env(env)
    photos = workdir / "datasets" / "photos"
    photos.mkdir(parents=True)
    for source in sorted((settings.assets_dir / "images" / "imagenet-samples").iterdir())[:PHOTOS]:
        shutil.copy(source, photos / source.name)
    upgrade(settings.database_url)
    app = create_app(settings)
    body = {"model": {"arch": "mobilenet_v2", "weights": "weights/mobilenet_v2-imagenet-from-quantized.pth"},
            "dataset": {"path": "photos"}, "layers": [LAYER], "k": 9}
    response = app.test_client().post("/v1/indexes", json=body)
    assert response.status_code == 202, response.get_data(as_text=True)
    app.extensions["unitscope"].queue.wait()
    index = app.test_client().get("/v1/indexes/1").get_json()
    assert index["status"] == "succeeded", index
    app.extensions["unitscope"].engine.dispose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, env: dict[str, str], port: int, workers: int, threads: int, log: Path,
                 worker_class: str = "gthread"):
        self.port = port
        self._log = open(log, "wb")
        command = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", str(workers),
                   "--worker-class", worker_class, "--threads", str(threads), "--pythonpath", str(REPO / "bench"),
                   "--chdir", str(REPO), "bench_api:bench_app()"]
        self.process = subprocess.Popen(command, env={**os.environ, **env}, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if get(port, "/v1/health")[0] == 200:
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"gunicorn did not answer on port {port}; see {log}")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)
        self._log.close()


def get(port: int, path: str, connection: http.client.HTTPConnection | None = None) -> tuple[int, bytes]:
    conn = connection or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path)
    response = conn.getresponse()
    body = response.read()
    if connection is None:
        conn.close()
    return response.status, body


def python_load(port: int, paths: list[str], clients: int, seconds: float) -> dict:
    """``clients`` threads, each on one keep-alive connection, cycling through ``paths``."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    stop_at = time.perf_counter() + seconds

    def client(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        n = i
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            try:
                status, _ = get(port, paths[n % len(paths)], conn)
            except (OSError, http.client.HTTPException):
                status = 0
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            latencies[i].append(time.perf_counter() - started)
            errors[i] += status != 200
            n += 1
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    every = sorted(x for per in latencies for x in per)
    return {"rps": len(every) / elapsed, "p50_ms": every[len(every) // 2] * 1000,
            "p99_ms": every[min(len(every) - 1, int(len(every) * 0.99))] * 1000, "errors": sum(errors),
            "requests": len(every), "tool": "python"}


_WRK_SCRIPT = """
paths = {%s}
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", paths[(counter %% #paths) + 1])
end
"""


def _wrk_ms(text: str, label: str) -> float:
    value, unit = re.search(rf"{label}\s+([\d.]+)(us|ms|s)\b", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk_load(port: int, paths: list[str], clients: int, seconds: float, workdir: Path) -> dict:
    script = workdir / "paths.lua"
    script.write_text(_WRK_SCRIPT % ", ".join(f'"{p}"' for p in paths))
    out = subprocess.run(["wrk", "-t", "2", "-c", str(clients), "-d", f"{max(1, round(seconds))}s", "--latency", "-s", str(script),
                          f"http://127.0.0.1:{port}"], capture_output=True, text=True, check=True).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50_ms": _wrk_ms(out, "50%"), "p99_ms": _wrk_ms(out, "99%"),
            "errors": (int(errors.group(1)) if errors else 0) + (sum(map(int, socket_errors.groups())) if socket_errors else 0),
            "requests": int(re.search(r"(\d+) requests in", out).group(1)), "tool": "wrk"}


WARMUP_S = 3


def load(port: int, paths: list[str], clients: int, seconds: float, workdir: Path, tool: str) -> dict:
    """A discarded warm-up run first: each worker process validates a URL with openapi-core once
    (then memoised) and opens its database connections; steady state is what is measured."""
    if tool == "wrk":
        wrk_load(port, paths, clients, WARMUP_S, workdir)
        return wrk_load(port, paths, clients, seconds, workdir)
    python_load(port, paths, clients, WARMUP_S)
    return python_load(port, paths, clients, seconds)


def report(name: str, result: dict, target: str) -> None:
    print(f"{name:<34} {result['rps']:8.0f} req/s  p50 {result['p50_ms']:6.1f} ms  p99 {result['p99_ms']:6.1f} ms  "
          f"errors {result['errors']}/{result['requests']}  ({result['tool']})  target: {target}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--worker-class", default="gthread", help="gthread keeps connections alive; sync does not")
    parser.add_argument("--tool", choices=["wrk", "python"], default="wrk" if shutil.which("wrk") else "python")
    args = parser.parse_args()

    assets = Settings.from_env().assets_dir
    if assets is None:
        sys.exit("no assets folder: set UNITSCOPE_ASSETS")
    with tempfile.TemporaryDirectory(prefix="unitscope-bench-") as tmp:
        workdir = Path(tmp)
        env = environment(workdir, assets)
        print(f"preparing index: MobileNetV2, {PHOTOS} photos, layer {LAYER}, k=9 ...", flush=True)
        prepare_index(workdir, env)
        port = free_port()
        server = Server({**env, "BENCH_STATIC_FILE": str(workdir / "static.png")}, port, args.workers, args.threads,
                        workdir / "gunicorn.log", args.worker_class)
        try:
            status, grid = get(port, GRID_URL)
            assert status == 200, grid
            (workdir / "static.png").write_bytes(grid)
            for path in UNIT_URLS + [STATIC_PATH]:
                assert get(port, path)[0] == 200, path
            print(f"gunicorn 127.0.0.1:{port}, {args.workers} {args.worker_class} workers x {args.threads} threads, "
                  f"{args.clients} clients, {args.seconds:.0f} s per run after {WARMUP_S} s warm-up, "
                  f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (other processes share the CPUs)")

            unit = load(port, UNIT_URLS, args.clients, args.seconds, workdir, args.tool)
            report("unit JSON (32 units, rotating)", unit, ">= 500 req/s, p99 < 50 ms, 0 errors")
            cached = load(port, [GRID_URL], args.clients, args.seconds, workdir, args.tool)
            static = load(port, [STATIC_PATH], args.clients, args.seconds, workdir, args.tool)
            report(f"cached 3x3 grid ({len(grid)} B)", cached, ">= 0.5x static")
            report(f"static file ({len(grid)} B)", static, "baseline")
            print(f"{'cached grid / static':<34} {cached['rps'] / static['rps']:8.2f}x")

            cold = []
            for unit_id in range(1, 31):
                started = time.perf_counter()
                status, _ = get(port, f"/v1/indexes/1/layers/{LAYER}/units/{unit_id}/patches.png?k=9&size=96")
                cold.append((time.perf_counter() - started) * 1000)
                assert status == 200
            print(f"{'cold 3x3 grid (30 units, serial)':<34} median {statistics.median(cold):6.1f} ms  "
                  f"max {max(cold):6.1f} ms  target: < 100 ms")
            print(f"load average at the end: {os.getloadavg()[0]:.1f}")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
