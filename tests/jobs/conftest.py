"""Fixtures for the queue tests: a small photo dataset, migrated databases, real worker processes.

Scans use the real MobileNetV2 weights on a dozen real photos copied to a temporary dataset root
(the full 102-photo folder only where a scan must last long enough to be interrupted).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select

from service.config import Settings
from service.jobs.task import result_rows
from service.paths import resolve_under_roots
from service.scan.data import list_images
from service.scan.models import ModelSpec, load_model
from service.scan.scanner import scan
from service.store.db import make_engine, session_factory
from service.store.migrate import upgrade
from service.store.models import Activation, Image, Layer

REPO = Path(__file__).resolve().parents[2]
PHOTOS = 12
BATCH = 4
MODEL_SPEC = {"arch": "mobilenet_v2", "weights": "weights/mobilenet_v2-imagenet-from-quantized.pth"}
LAYERS = ["features.2", "features.9", "features.17"]
INDEX_FIELDS = {"name": "jobs-test", "model_spec": MODEL_SPEC, "dataset_spec": {"path": "photos"},
                "layers": LAYERS, "k": 5, "score": "max", "neuron": None}
# 102 photos at batch size 1: a scan long enough to be cancelled or killed half-way.
SLOW_FIELDS = {**INDEX_FIELDS, "dataset_spec": {"path": "images/imagenet-samples"}}


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture(scope="session")
def photo_root(tmp_path_factory, imagenet_dir: Path) -> Path:
    """A dataset root holding ``photos/`` with the first dozen ImageNet sample photos."""
    root = tmp_path_factory.mktemp("datasets")
    (root / "photos").mkdir()
    for source in sorted(imagenet_dir.iterdir())[:PHOTOS]:
        shutil.copy(source, root / "photos" / source.name)
    return root


@pytest.fixture(scope="session")
def migrated_postgres(postgres_url: str) -> str:
    upgrade(postgres_url)
    return postgres_url


@pytest.fixture
def migrated_sqlite(sqlite_url: str) -> str:
    upgrade(sqlite_url)
    return sqlite_url


@pytest.fixture
def job_settings(make_settings, photo_root: Path, assets_dir: Path):
    """Settings for a scan over ``photo_root`` (and the assets for the weights), on the CPU."""

    def build(database_url: str, redis_url: str | None, **overrides) -> Settings:
        defaults = {"dataset_roots": (photo_root, assets_dir), "batch_size": BATCH, "device": "cpu",
                    "redis_db_prefix": f"ustest-{uuid.uuid4().hex[:8]}"}
        return make_settings(database_url=database_url, redis_url=redis_url, **{**defaults, **overrides})

    return build


@pytest.fixture
def rq_settings(job_settings, migrated_postgres: str, redis_url: str) -> Settings:
    return job_settings(migrated_postgres, redis_url)


@pytest.fixture
def sessions_for():
    """A session factory per settings, engines disposed after the test."""
    engines = []

    def build(settings: Settings):
        engine = make_engine(settings.database_url)
        engines.append(engine)
        return session_factory(engine)

    yield build
    for engine in engines:
        engine.dispose()


class WorkerProcess:
    """``python -m service.jobs.worker`` in its own session, configured through the environment
    exactly as a deployment would be."""

    def __init__(self, settings: Settings, log_path: Path, burst: bool):
        env = {**os.environ,
               "DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url,
               "UNITSCOPE_DATA_DIR": str(settings.data_dir),
               "UNITSCOPE_DATASET_ROOTS": os.pathsep.join(map(str, settings.dataset_roots)),
               "UNITSCOPE_BATCH_SIZE": str(settings.batch_size), "UNITSCOPE_LOADER_WORKERS": "0",
               "UNITSCOPE_DEVICE": settings.device}
        command = [sys.executable, "-m", "service.jobs.worker", "--prefix", settings.redis_db_prefix]
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(command + (["--burst"] if burst else []), cwd=REPO, env=env,
                                        stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def horse_pid(self) -> int | None:
        """The work horse RQ forked for the current job (it moves to its own process group)."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        pids = children.read_text().split() if children.exists() else []
        return int(pids[0]) if pids else None

    def kill_horse(self) -> None:
        os.killpg(self.horse_pid(), signal.SIGKILL)

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """SIGKILL the worker's group and its horse's group, whatever state they are in."""
        if self.process.poll() is None:
            horse = self.horse_pid()
            for group in filter(None, (horse, self.process.pid)):
                try:
                    os.killpg(group, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.process.wait(10)
        self._log.close()


@pytest.fixture
def spawn_worker(tmp_path: Path):
    workers: list[WorkerProcess] = []

    def spawn(settings: Settings, burst: bool = False) -> WorkerProcess:
        worker = WorkerProcess(settings, tmp_path / f"worker-{len(workers)}.log", burst)
        workers.append(worker)
        return worker

    yield spawn
    for worker in workers:
        worker.stop()


def stored_rows(sessions, index_id: int) -> dict[str, list[tuple]]:
    """An index's result rows as plain tuples, in the order ``task.result_rows`` produces them."""
    with sessions() as session:
        layers = session.execute(
            select(Layer.name, Layer.type, Layer.position, Layer.channels, Layer.height, Layer.width,
                   Layer.rf_size, Layer.rf_jump, Layer.rf_offset)
            .where(Layer.index_id == index_id).order_by(Layer.position)).all()
        images = session.execute(
            select(Image.id, Image.path, Image.label, Image.width, Image.height, Image.skipped_reason)
            .where(Image.index_id == index_id).order_by(Image.id)).all()
        activations = session.execute(
            select(Layer.name, Activation.unit, Activation.rank, Activation.value, Activation.image_id,
                   Activation.y, Activation.x, Activation.in_x0, Activation.in_y0, Activation.in_x1,
                   Activation.in_y1, Activation.x0, Activation.y0, Activation.x1, Activation.y1)
            .join(Layer, Layer.id == Activation.layer_id)
            .where(Activation.index_id == index_id)
            .order_by(Layer.position, Activation.unit, Activation.rank)).all()
    return {"layers": [tuple(r) for r in layers], "images": [tuple(r) for r in images],
            "activations": [tuple(r) for r in activations]}


def expected_rows(result) -> dict[str, list[tuple]]:
    """The same tuples for a ScanResult that never went through a queue or a database."""
    rows = result_rows(result)
    return {"layers": [tuple(layer.values()) for layer in rows["layers"]],
            "images": [tuple(image.values()) for image in rows["images"]],
            "activations": list(rows["activations"])}


@pytest.fixture(scope="session")
def direct_result(photo_root: Path, assets_dir: Path):
    """The scan engine run directly (no queue, no database) over the test photos."""
    loaded = load_model(ModelSpec.from_dict(MODEL_SPEC),
                        resolve_path=lambda path: resolve_under_roots(path, [assets_dir]))
    folder = photo_root / "photos"
    return scan(loaded, folder, list_images(folder), LAYERS, k=INDEX_FIELDS["k"], score="max",
                batch_size=BATCH, device="cpu", num_workers=0)


@pytest.fixture(scope="session")
def direct_rows(direct_result) -> dict[str, list[tuple]]:
    return expected_rows(direct_result)


def result_row_count(sessions, index_id: int) -> int:
    with sessions() as session:
        return sum(session.scalar(select(func.count()).select_from(model).where(model.index_id == index_id))
                   for model in (Activation, Image, Layer))
