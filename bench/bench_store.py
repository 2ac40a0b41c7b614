"""Store benchmark: bulk-writing one index's top-k rows, and reading one unit's top-k.

Targets (issue 3): writing 250,000 activation rows <= 3 s on PostgreSQL and <= 5 s on SQLite;
one unit's top-k read p50 < 2 ms on both. The write goes through ``write_index_result`` (one
transaction: layers, images, activations, status flip), the read through ``unit_top`` in a fresh
session per read, as an API request does it.

    .venv/bin/python bench/bench_store.py [--postgres URL] [--reads N] [--gc-freeze]

PostgreSQL: a scratch database is created on the given server (trust auth) and dropped afterwards.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from service.store import repository
from service.store.db import make_engine, session_factory, session_scope
from service.store.migrate import upgrade

LAYERS, UNITS, K, IMAGES = 5, 500, 100, 10_000
WRITE_TARGET_S = {"postgresql": 3.0, "sqlite": 5.0}
READ_P50_TARGET_MS = 2.0


def synthetic_result(seed: int = 0) -> dict:
    """A result shaped like a real scan's: distinct images per unit, values descending by rank."""
    rng = random.Random(seed)
    layers = [dict(name=f"features.{i}", type="Conv2d", position=i, channels=UNITS, height=14, width=14,
                   rf_size=3 + 4 * i, rf_jump=2 ** i, rf_offset=-i) for i in range(LAYERS)]
    images = [dict(id=i, path=f"class_{i % 100}/img_{i:06d}.jpg", label=f"class_{i % 100}",
                   width=500, height=375, skipped_reason=None) for i in range(IMAGES)]
    activations = []
    for layer in layers:
        for unit in range(UNITS):
            values = sorted((rng.random() * 10 for _ in range(K)), reverse=True)
            for rank, (value, image_id) in enumerate(zip(values, rng.sample(range(IMAGES), K))):
                y, x = rng.randrange(14), rng.randrange(14)
                activations.append((layer["name"], unit, rank, value, image_id, y, x,
                                    x * 16 - 8, y * 16 - 8, x * 16 + 24, y * 16 + 24,
                                    max(0, x * 21 - 11), max(0, y * 21 - 11), x * 21 + 33, y * 21 + 33))
    return dict(layers=layers, images=images, activations=activations)


def timed_writes(engine, index_id: int) -> list[float]:
    """Write the result twice (the second also deletes the first's rows). The synthetic rows are
    dropped on return: kept alive, every full garbage collection during the reads would walk them."""
    result = synthetic_result()
    writes = []
    for _ in range(2):
        start = time.perf_counter()
        repository.write_index_result(engine, index_id, preprocess={}, pretrained=True, device="cpu",
                                      seconds=0.0, skipped_reasons={}, **result)
        writes.append(time.perf_counter() - start)
    return writes


def bench(url: str, reads: int, freeze_gc: bool) -> dict:
    engine = make_engine(url)
    upgrade(engine)
    factory = session_factory(engine)
    with session_scope(factory) as session:
        index_id = repository.create_index(session, name="bench", model_spec={"arch": "bench"},
                                           dataset_spec={"root": "bench"}, layers=None, k=K,
                                           score="max", neuron=None).id
    writes = timed_writes(engine, index_id)
    gc.collect()
    if freeze_gc:
        gc.freeze()
    with session_scope(factory) as session:
        layer_ids = [layer.id for layer in repository.list_layers(session, index_id)]
    rng = random.Random(1)
    timings = []
    for _ in range(reads):
        layer_id, unit = rng.choice(layer_ids), rng.randrange(UNITS)
        start = time.perf_counter()
        with session_scope(factory) as session:
            rows = repository.unit_top(session, index_id, layer_id, unit)
        timings.append((time.perf_counter() - start) * 1000)
        assert len(rows) == K
    start = time.perf_counter()
    with session_scope(factory) as session:
        repository.delete_index(session, index_id)
    delete_s = time.perf_counter() - start
    engine.dispose()
    timings.sort()
    return dict(write_s=writes[0], rewrite_s=writes[1], delete_s=delete_s,
                p50_ms=statistics.median(timings), p99_ms=timings[int(len(timings) * 0.99) - 1])


def report(name: str, numbers: dict) -> None:
    write_target = WRITE_TARGET_S[name]
    rows = LAYERS * UNITS * K
    print(f"{name}: write {rows:,} rows {numbers['write_s']:.2f} s (target <= {write_target:.0f} s) "
          f"{'OK' if numbers['write_s'] <= write_target else 'MISSED'}; "
          f"rewrite (delete + write) {numbers['rewrite_s']:.2f} s; delete index {numbers['delete_s']:.2f} s")
    print(f"{name}: unit top-{K} read p50 {numbers['p50_ms']:.2f} ms (target < {READ_P50_TARGET_MS:.0f} ms) "
          f"{'OK' if numbers['p50_ms'] < READ_P50_TARGET_MS else 'MISSED'}, p99 {numbers['p99_ms']:.2f} ms")


def with_scratch_postgres(admin_url: str):
    """Yield the URL of a new database on the server of ``admin_url``; drop it afterwards."""
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"unitscope_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/test",
                        help="server to create the scratch database on")
    parser.add_argument("--reads", type=int, default=2000)
    parser.add_argument("--gc-freeze", action="store_true",
                        help="gc.freeze() before the reads, as a server can after start-up: the p99 "
                             "otherwise shows full collections walking every long-lived object")
    args = parser.parse_args()
    print(f"{LAYERS} layers x {UNITS} units x k={K} = {LAYERS * UNITS * K:,} activation rows, "
          f"{IMAGES:,} images; {args.reads} reads of a random unit's top-{K}, a new session each")
    with tempfile.TemporaryDirectory() as folder:
        report("sqlite", bench(f"sqlite:///{Path(folder) / 'bench.db'}", args.reads, args.gc_freeze))
    for url in with_scratch_postgres(args.postgres):
        report("postgresql", bench(url, args.reads, args.gc_freeze))


if __name__ == "__main__":
    main()
