"""Store fixtures: every test runs once on SQLite and once on the real PostgreSQL.

On PostgreSQL each test gets its own schema in the session's database (through ``search_path``),
so migrations start from nothing and tests cannot see each other's rows.
"""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from service.store import repository
from service.store.db import make_engine, session_factory, session_scope
from service.store.migrate import upgrade

from .rows import activation


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request):
    """An empty database: a fresh SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield request.getfixturevalue("sqlite_url")
        return
    base = request.getfixturevalue("postgres_url")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    yield make_url(base).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
        hide_password=False
    )
    with admin.connect() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture
def engine(database_url):
    """An engine on a database migrated to head."""
    engine = make_engine(database_url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine):
    return session_factory(engine)


@pytest.fixture
def index_id(sessions) -> int:
    """An index whose scan is running, as it is when the worker writes the result."""
    with session_scope(sessions) as session:
        index = repository.create_index(session, name="mobilenet on samples", model_spec={"arch": "mobilenet_v2"},
                                        dataset_spec={"root": "images/imagenet-samples"},
                                        layers=["features.3", "features.7"], k=3, score="max", neuron=None)
        repository.set_index_status(session, index.id, "running")
        return index.id


@pytest.fixture
def result() -> dict:
    """A small scan result: 2 layers x 2 units x k=3 over 4 images, one of them skipped."""
    layers = [
        dict(name="features.3", type="InvertedResidual", position=0, channels=2, height=56, width=56,
             rf_size=19, rf_jump=4, rf_offset=-7),
        dict(name="features.7", type="InvertedResidual", position=1, channels=2, height=14, width=14,
             rf_size=75, rf_jump=16, rf_offset=-31),
    ]
    images = [
        dict(id=0, path="cat/0001.jpg", label="cat", width=500, height=375, skipped_reason=None),
        dict(id=1, path="cat/0002.jpg", label="cat", width=640, height=480, skipped_reason=None),
        dict(id=2, path="dog/tab\tand\nnewline.jpg", label="dog", width=300, height=300, skipped_reason=None),
        dict(id=3, path="broken.jpg", label=None, width=None, height=None, skipped_reason="truncated"),
    ]
    activations = [
        activation("features.3", 0, 0, 9.5, 2), activation("features.3", 0, 1, 7.25, 0),
        activation("features.3", 0, 2, 1.0, 1),
        activation("features.3", 1, 0, 3.0, 0), activation("features.3", 1, 1, 2.0, 1),
        activation("features.3", 1, 2, 0.5, 2),
        activation("features.7", 0, 0, 12.0, 0), activation("features.7", 0, 1, 4.0, 2),
        activation("features.7", 0, 2, -1.5, 1),
        activation("features.7", 1, 0, 6.0, 1), activation("features.7", 1, 1, 5.0, 0),
        activation("features.7", 1, 2, 0.25, 2),
    ]
    return dict(layers=layers, images=images, activations=activations, skipped_reasons={"truncated": 1},
                preprocess={"resize": 256, "crop": 224, "mean": [0.485, 0.456, 0.406],
                            "std": [0.229, 0.224, 0.225], "input_size": 224},
                pretrained=True, device="cpu", seconds=2.5)
