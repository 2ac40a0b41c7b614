"""Writing a scan's result and reading it back: all or nothing, in the orders the API promises."""

from __future__ import annotations

from datetime import timezone

import pytest
from sqlalchemy import exc, func, select

from service.store import repository
from service.store.db import make_engine, session_scope
from service.store.models import Activation, Image, Layer

from .rows import activation


def write(engine, index_id: int, result: dict) -> None:
    repository.write_index_result(engine, index_id, **result)


def count_rows(session, index_id: int) -> dict[str, int]:
    return {model.__tablename__: session.scalar(select(func.count()).select_from(model)
                                                .where(model.index_id == index_id))
            for model in (Layer, Image, Activation)}


def test_write_then_read_round_trip(engine, sessions, index_id, result):
    write(engine, index_id, result)
    with session_scope(sessions) as session:
        index = repository.get_index(session, index_id)
        assert (index.status, index.error) == ("succeeded", None)
        assert (index.images_total, index.images_scanned, index.images_skipped) == (4, 3, 1)
        assert index.skipped_reasons == {"truncated": 1}
        assert index.preprocess == result["preprocess"]
        assert (index.pretrained, index.device, index.scan_seconds) == (True, "cpu", 2.5)
        assert index.finished_at.tzinfo == timezone.utc and index.finished_at >= index.started_at

        layers = repository.list_layers(session, index_id)
        assert [layer.name for layer in layers] == ["features.3", "features.7"]
        assert (layers[1].channels, layers[1].rf_size, layers[1].rf_jump, layers[1].rf_offset) == (2, 75, 16, -31)
        assert repository.get_layer(session, index_id, "features.7").id == layers[1].id
        assert repository.get_layer(session, index_id, "classifier") is None

        top = repository.unit_top(session, index_id, layers[0].id, 0)
        assert [(a.rank, a.value, a.image_id, image.path) for a, image in top] == [
            (0, 9.5, 2, "dog/tab\tand\nnewline.jpg"), (1, 7.25, 0, "cat/0001.jpg"), (2, 1.0, 1, "cat/0002.jpg")]
        assert tuple(getattr(top[1][0], f) for f in repository.ACTIVATION_FIELDS) == activation(
            "features.3", 0, 1, 7.25, 0)[1:]
        assert len(repository.unit_top(session, index_id, layers[0].id, 0, limit=2)) == 2
        assert repository.unit_top(session, index_id, layers[0].id, 99) == []

        skipped = repository.get_image(session, index_id, 3)
        assert (skipped.path, skipped.label, skipped.width, skipped.skipped_reason) == (
            "broken.jpg", None, None, "truncated")
        assert repository.get_image(session, index_id, 4) is None


def test_image_units_are_strongest_first_across_layers(engine, sessions, index_id, result):
    write(engine, index_id, result)
    with session_scope(sessions) as session:
        units = repository.image_units(session, index_id, 0)
        assert [(layer.name, a.unit, a.value) for a, layer in units] == [
            ("features.7", 0, 12.0), ("features.3", 0, 7.25), ("features.7", 1, 5.0), ("features.3", 1, 3.0)]
        deep = repository.get_layer(session, index_id, "features.7")
        only_deep = repository.image_units(session, index_id, 0, layer_id=deep.id)
        assert [(a.unit, a.value) for a, _ in only_deep] == [(0, 12.0), (1, 5.0)]
        assert len(repository.image_units(session, index_id, 0, limit=1)) == 1
        assert repository.image_units(session, index_id, 3) == []


def test_rewrite_replaces_the_previous_result(engine, sessions, index_id, result):
    write(engine, index_id, result)
    result["layers"] = result["layers"][:1]
    result["activations"] = [row for row in result["activations"] if row[0] == "features.3"][:2]
    write(engine, index_id, result)
    with session_scope(sessions) as session:
        assert count_rows(session, index_id) == {"layers": 1, "images": 4, "activations": 2}


def raise_after(rows, n: int):
    """The activations stream breaks after ``n`` rows: layers and images are written by then."""
    for i, row in enumerate(rows):
        if i == n:
            raise RuntimeError("worker lost its GPU mid-write")
        yield row


FAULTS = {
    "stream-raises": lambda rows: raise_after(rows, 5),
    "unknown-layer": lambda rows: rows[:5] + [activation("features.99", 0, 0, 1.0, 0)],
    "unknown-image": lambda rows: rows[:5] + [activation("features.3", 5, 0, 1.0, 42)],
    "nan-value": lambda rows: rows[:5] + [activation("features.3", 5, 0, float("nan"), 0)],
    "duplicate-row": lambda rows: rows + [rows[0]],  # the database refuses it at the primary key
}


@pytest.mark.parametrize("fault", FAULTS)
def test_failed_write_leaves_no_rows_and_the_status_unchanged(engine, sessions, index_id, result, fault):
    result["activations"] = FAULTS[fault](result["activations"])
    with pytest.raises((RuntimeError, ValueError, exc.IntegrityError)):
        write(engine, index_id, result)
    with session_scope(sessions) as session:
        index = repository.get_index(session, index_id)
        assert (index.status, index.finished_at, index.images_total) == ("running", None, 0)
        assert count_rows(session, index_id) == {"layers": 0, "images": 0, "activations": 0}


def test_failed_rewrite_keeps_the_previous_result(engine, sessions, index_id, result):
    write(engine, index_id, result)
    complete = list(result["activations"])
    result["activations"] = raise_after(complete, 3)
    with pytest.raises(RuntimeError):
        write(engine, index_id, result)
    with session_scope(sessions) as session:
        assert repository.get_index(session, index_id).status == "succeeded"
        assert count_rows(session, index_id) == {"layers": 2, "images": 4, "activations": len(complete)}


def test_readers_see_nothing_of_a_result_being_written(engine, database_url, index_id, result):
    """A second connection looks at the index while the activations are streaming in."""
    reader = make_engine(database_url)
    seen = []

    def watched(rows):
        for i, row in enumerate(rows):
            if i == 6:
                with reader.connect() as conn:
                    seen.append(count_rows(conn, index_id))
                    seen.append(conn.execute(select(repository.Index.status)
                                             .where(repository.Index.id == index_id)).scalar_one())
            yield row

    result["activations"] = watched(result["activations"])
    try:
        write(engine, index_id, result)
    finally:
        reader.dispose()
    assert seen == [{"layers": 0, "images": 0, "activations": 0}, "running"]


def test_write_for_a_deleted_index_raises(engine, sessions, index_id, result):
    with session_scope(sessions) as session:
        repository.delete_index(session, index_id)
    with pytest.raises(repository.IndexNotWritable):
        write(engine, index_id, result)


def test_write_expecting_running_refuses_a_cancelled_index(engine, sessions, index_id, result):
    with session_scope(sessions) as session:
        repository.set_index_status(session, index_id, "cancelled", error="cancelled by the user")
    with pytest.raises(repository.IndexNotWritable):
        repository.write_index_result(engine, index_id, expected=("running",), **result)
    with session_scope(sessions) as session:
        assert repository.get_index(session, index_id).status == "cancelled"
        assert count_rows(session, index_id)["activations"] == 0
