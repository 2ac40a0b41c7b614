"""Run the API under gunicorn from Python, with the settings already read by the CLI.

The app is built inside each gunicorn worker (no preload): the embedded scan thread and database
connections must belong to the process that serves, not to a master that forks them away.
Without Redis there is exactly one worker process, because the embedded queue lives in a process
and a second process would neither see its jobs nor be allowed to recover them.

``/metrics`` must describe the server, not whichever worker answered the scrape, so the workers
keep their request metrics in prometheus_client's multiprocess files: the master points
``PROMETHEUS_MULTIPROC_DIR`` at a folder under the data dir, emptied at every start, before any
worker (or prometheus_client) is loaded, and tells prometheus_client when a worker has exited.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from gunicorn.app.base import BaseApplication

from service.config import Settings


def default_workers(settings: Settings) -> int:
    if not settings.redis_url:
        return 1
    return min(2 * (os.cpu_count() or 1) + 1, 9)


METRICS_DIR = "prometheus-multiproc"


def prepare_metrics_dir(settings: Settings) -> Path:
    """An empty folder for the workers' metric files, named in the environment the workers inherit
    (files left by an earlier run would add its counts to this one's)."""
    path = settings.data_dir / METRICS_DIR
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    return path


def _child_exit(_server, worker) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


class _Server(BaseApplication):
    def __init__(self, settings: Settings, options: dict):
        self._settings = settings
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self):
        from service.app import create_app

        return create_app(self._settings)


def serve(settings: Settings, *, host: str, port: int, workers: int | None = None) -> None:
    count = workers or default_workers(settings)
    if not settings.redis_url and count != 1:
        raise SystemExit("without REDIS_URL the embedded worker needs exactly one server process (--workers 1)")
    prepare_metrics_dir(settings)
    _Server(settings, {
        "bind": f"{host}:{port}",
        "workers": count,
        "worker_class": "gthread",
        "threads": 8,
        # On-demand activation maps load a model on first use; give them time before gunicorn kills.
        "timeout": 120,
        "accesslog": None,
        "keepalive": 5,
        "child_exit": _child_exit,
    }).run()
