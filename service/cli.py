"""The ``unitscope`` command: serve, worker, migrate, index, demo.

The sub-commands share one path through the code with the HTTP API: ``index`` and ``demo`` create
the index and job rows and run the same scan task a worker runs, only in this process and with a
progress bar, so a command-line index is indistinguishable from one made over HTTP.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from dataclasses import dataclass
from typing import Sequence

from service.config import Settings
from service.logs import use_json_logs

DEMO_NAME = "demo-mobilenet_v2-imagenet-samples"
DEMO_MODEL = {"arch": "mobilenet_v2", "weights": "weights/mobilenet_v2-imagenet-from-quantized.pth"}
DEMO_DATASET = {"path": "images/imagenet-samples"}
DEMO_LAYERS = ["features.1", "features.3", "features.6", "features.10", "features.14", "features.17"]


@dataclass(frozen=True)
class IndexRequest:
    """What ``POST /v1/indexes`` takes, as the command line spells it."""

    name: str | None
    model: dict
    dataset: dict
    layers: list[str] | None
    k: int = 9
    score: str = "max"


class _RunHere:
    """A queue that holds nothing: the CLI runs the job itself, right after submitting it."""

    def enqueue_scan(self, index_id: int, job_id: str) -> None:
        pass


class _ProgressBar:
    """A tqdm bar fed from the job's progress row, the same numbers ``GET /v1/jobs/{id}`` shows."""

    def __init__(self, sessions, job_id: str):
        self._sessions = sessions
        self._job_id = job_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        from tqdm import tqdm

        from service.store.db import session_scope
        from service.store.repository import get_job

        with tqdm(unit="img", desc="scanning", dynamic_ncols=True) as bar:
            while True:
                stopping = self._stop.wait(0.5)
                with session_scope(self._sessions) as session:
                    job = get_job(session, self._job_id)
                    done, total = (job.progress_done or 0, job.progress_total) if job else (0, None)
                if total:
                    bar.total = total
                bar.update(done - bar.n)
                if stopping:
                    return

    def __enter__(self) -> "_ProgressBar":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def index_now(settings: Settings, request: IndexRequest):
    """Create an index and scan it in this process, with a progress bar; returns the Index row."""
    from service.jobs.task import run_scan_job, submit_index
    from service.store.db import make_engine, session_factory, session_scope
    from service.store.repository import get_index

    engine = make_engine(settings.database_url)
    sessions = session_factory(engine)
    try:
        index, jobs = submit_index(
            sessions, _RunHere(), name=request.name, model_spec=request.model, dataset_spec=request.dataset,
            layers=request.layers, k=request.k, score=request.score, neuron=None)
        with _ProgressBar(sessions, jobs[0].id):
            run_scan_job(jobs[0].id, settings)
        with session_scope(sessions) as session:
            return get_index(session, index.id)
    finally:
        engine.dispose()


def find_or_index(settings: Settings, request: IndexRequest):
    """The newest succeeded index with this name and these specs, or a new one made now."""
    from sqlalchemy import select

    from service.store.db import make_engine, session_factory, session_scope
    from service.store.models import Index

    engine = make_engine(settings.database_url)
    try:
        with session_scope(session_factory(engine)) as session:
            found = session.scalars(
                select(Index).where(Index.name == request.name, Index.status == "succeeded")
                .order_by(Index.id.desc())).all()
            for index in found:
                if (index.model_spec, index.dataset_spec, index.layers_requested, index.k) == (
                        request.model, request.dataset, request.layers, request.k):
                    print(f"reusing index {index.id} ({index.name})")
                    return index
    finally:
        engine.dispose()
    return index_now(settings, request)


def _migrate(settings: Settings) -> None:
    from service.store.migrate import upgrade

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.database_url)


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    _migrate(settings)
    print(f"database at head: {settings.database_url}")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from service.jobs.worker import run_worker

    settings = Settings.from_env()
    if not settings.redis_url:
        print("unitscope worker needs REDIS_URL; without it the API runs scans in-process", file=sys.stderr)
        return 2
    run_worker(settings, burst=args.burst)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from service.serve import serve

    settings = Settings.from_env()
    _migrate(settings)
    serve(settings, host=args.host, port=args.port, workers=args.workers)
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    _migrate(settings)
    model: dict = {"torchscript": args.torchscript} if args.torchscript else {"arch": args.arch}
    if args.weights:
        model["weights"] = args.weights
    request = IndexRequest(
        name=args.name, model=model, dataset={"path": args.dataset}, layers=args.layers or None,
        k=args.k, score=args.score,
    )
    index = index_now(settings, request)
    print(f"index {index.id}: {index.status}, {index.images_scanned} images scanned, "
          f"{index.images_skipped} skipped")
    return 0 if index.status == "succeeded" else 1


def cmd_demo(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    if settings.assets_dir is None:
        print("the demo needs the assets folder: set UNITSCOPE_ASSETS or place ../shared/assets", file=sys.stderr)
        return 2
    _migrate(settings)
    request = IndexRequest(name=DEMO_NAME, model=DEMO_MODEL, dataset=DEMO_DATASET, layers=DEMO_LAYERS, k=9)
    index = find_or_index(settings, request)
    if index.status != "succeeded":
        print(f"demo index {index.id} ended {index.status}: {index.error}", file=sys.stderr)
        return 1
    base = f"http://{args.host}:{args.port}"
    print(f"\nindex {index.id}: {index.images_scanned} images scanned, {index.images_skipped} skipped")
    print("what a few units learned (Zeiler-Fergus patch grids):")
    # Shallow to deep: edges and colours, then textures, then object parts. (The last layers'
    # receptive fields cover the whole photo, so their grids are thumbnails; they are indexed too.)
    for layer in DEMO_LAYERS[1:4]:
        for unit in (0, 1, 2):
            print(f"  {base}/v1/indexes/{index.id}/layers/{layer}/units/{unit}/patches.png")
    print(f"  {base}/v1/indexes/{index.id}/layers/{DEMO_LAYERS[3]}/montage.png?units=0-15")
    print(f"API docs: {base}/docs\n", flush=True)
    from service.serve import serve

    serve(settings, host=args.host, port=args.port, workers=args.workers)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unitscope", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def add_server_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--host", default=os.environ.get("UNITSCOPE_HOST", "127.0.0.1"))
        p.add_argument("--port", type=int, default=int(os.environ.get("UNITSCOPE_PORT", "8000")))
        p.add_argument("--workers", type=int, default=None,
                       help="gunicorn worker processes (default: 1 embedded, 2*cores+1 with Redis)")

    serve = sub.add_parser("serve", help="serve the HTTP API with gunicorn")
    add_server_options(serve)
    serve.set_defaults(func=cmd_serve)

    worker = sub.add_parser("worker", help="run an RQ scan worker (needs REDIS_URL)")
    worker.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    worker.set_defaults(func=cmd_worker)

    migrate = sub.add_parser("migrate", help="bring the database schema to head")
    migrate.set_defaults(func=cmd_migrate)

    index = sub.add_parser("index", help="scan a model over a dataset now, with a progress bar")
    source = index.add_mutually_exclusive_group(required=True)
    source.add_argument("--arch", help="torchvision architecture name (see `GET /v1/models`)")
    source.add_argument("--torchscript", help="TorchScript file under a dataset root")
    index.add_argument("--weights", help="state_dict file under a dataset root, or a weights enum name")
    index.add_argument("--dataset", required=True, help="image folder under a dataset root")
    index.add_argument("--layers", nargs="*", help="layer names (default: the model's main blocks)")
    index.add_argument("--k", type=int, default=9, help="images kept per unit (1-100)")
    index.add_argument("--score", choices=("max", "mean"), default="max")
    index.add_argument("--name", default=None)
    index.set_defaults(func=cmd_index)

    demo = sub.add_parser("demo", help="index MobileNetV2 over the sample photos, then serve")
    add_server_options(demo)
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = os.environ.get("UNITSCOPE_LOG_LEVEL", "INFO")
    if args.command in ("serve", "worker"):  # long-running services: machine-readable lines
        use_json_logs(level=level)
    else:
        logging.basicConfig(level=level, format="%(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)  # its INFO lines narrate every plugin
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
