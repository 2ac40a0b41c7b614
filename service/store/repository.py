"""Every query the service makes, as functions of a Session (or an Engine for the bulk write).

Callers own the transaction (``session_scope``); these functions only flush when they need a
generated id. ``write_index_result`` is the exception: it opens its own transaction so the whole
result of a scan becomes visible at once or not at all.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Collection, Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy import Engine, and_, bindparam, delete, func, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key
from sqlalchemy.sql.expression import ClauseElement

from service.store.bulk import bulk_insert
from service.store.models import (
    STATUSES,
    TERMINAL_STATUSES,
    Activation,
    Image,
    Index,
    Layer,
    ScanJob,
    ShardState,
)
from service.store.types import utcnow

LAYER_COLUMNS = ("name", "type", "position", "channels", "height", "width", "rf_size", "rf_jump", "rf_offset")
IMAGE_COLUMNS = ("id", "path", "label", "width", "height", "skipped_reason")
# The activation tuples' order after the layer name, as the contract fixes it.
ACTIVATION_FIELDS = ("unit", "rank", "value", "image_id", "y", "x",
                     "in_x0", "in_y0", "in_x1", "in_y1", "x0", "y0", "x1", "y1")


class IndexNotWritable(LookupError):
    """The index a result was meant for is gone (deleted while scanning) or, when the writer said
    which states it expected, has left them (e.g. cancelled meanwhile)."""


# --- indexes -----------------------------------------------------------------------------------

def create_index(session: Session, *, name: str, model_spec: dict, dataset_spec: dict,
                 layers: list[str] | None, k: int, score: str,
                 neuron: Sequence[int] | None) -> Index:
    index = Index(name=name, model_spec=model_spec, dataset_spec=dataset_spec,
                  layers_requested=layers, k=k, score=score,
                  neuron=list(neuron) if neuron is not None else None, status="queued")
    session.add(index)
    session.flush()
    return index


def get_index(session: Session, index_id: int) -> Index | None:
    return session.get(Index, index_id)


def list_indexes(session: Session, *, limit: int, offset: int) -> tuple[list[Index], int]:
    """Newest first, with the total count for the page links."""
    total = session.scalar(select(func.count()).select_from(Index))
    page = session.scalars(select(Index).order_by(Index.id.desc()).limit(limit).offset(offset))
    return list(page), total or 0


def delete_index(session: Session, index_id: int) -> bool:
    """Delete an index and, by ON DELETE CASCADE, all it owns; False when there was none."""
    deleted = session.execute(delete(Index).where(Index.id == index_id))
    return deleted.rowcount > 0


def set_index_status(session: Session, index_id: int, status: str, *, error: str | None = None,
                     expected: Collection[str] | None = None) -> bool:
    """Move an index to ``status``; with ``expected``, only from one of those states.

    ``running`` stamps started_at; terminal states stamp finished_at. Returns whether a row changed,
    so a caller can tell a lost race (e.g. cancelled meanwhile) from success.
    """
    return _set_status(session, Index, index_id, status, error=error, expected=expected)


# --- jobs --------------------------------------------------------------------------------------

def create_job(session: Session, index_id: int, *, shard: int | None = None, shard_count: int = 1,
               image_start: int | None = None, image_stop: int | None = None) -> ScanJob:
    """A queued job whose id (uuid4 hex) is also used as the RQ job id."""
    job = ScanJob(id=uuid.uuid4().hex, index_id=index_id, shard=shard, shard_count=shard_count,
                  image_start=image_start, image_stop=image_stop, status="queued")
    session.add(job)
    session.flush()
    return job


def get_job(session: Session, job_id: str) -> ScanJob | None:
    return session.get(ScanJob, job_id)


def jobs_of_index(session: Session, index_id: int) -> list[ScanJob]:
    return list(session.scalars(
        select(ScanJob).where(ScanJob.index_id == index_id)
        .order_by(ScanJob.shard.asc().nulls_first(), ScanJob.created_at, ScanJob.id)
    ))


def jobs_with_status(session: Session, statuses: Collection[str], *,
                     index_id: int | None = None) -> list[ScanJob]:
    """Jobs in any of ``statuses`` (of one index, given ``index_id``), oldest first."""
    statement = select(ScanJob).where(ScanJob.status.in_(list(statuses)))
    if index_id is not None:
        statement = statement.where(ScanJob.index_id == index_id)
    return list(session.scalars(statement.order_by(ScanJob.created_at, ScanJob.id)))


def set_job_status(session: Session, job_id: str, status: str, *, error: str | None = None,
                   expected: Collection[str] | None = None) -> bool:
    """Like ``set_index_status``; moving to ``running`` also counts one more attempt."""
    return _set_status(session, ScanJob, job_id, status, error=error, expected=expected)


def record_progress(session: Session, job_id: str, done: int, total: int, rate: float | None) -> None:
    _update_one(session, ScanJob, job_id, {"progress_done": done, "progress_total": total, "rate": rate})


def _set_status(session: Session, model: type[Index] | type[ScanJob], key, status: str, *,
                error: str | None, expected: Collection[str] | None) -> bool:
    if status not in STATUSES:
        raise ValueError(f"unknown status {status!r}")
    values: dict[str, Any] = {"status": status, "error": error}
    if status == "running":
        values.update(started_at=utcnow(), finished_at=None)
        if model is ScanJob:
            values["attempt"] = ScanJob.attempt + 1
    elif status in TERMINAL_STATUSES:
        values["finished_at"] = utcnow()
    return _update_one(session, model, key, values, expected=expected)


def _update_one(session: Session, model: type[Index] | type[ScanJob], key, values: dict[str, Any], *,
                expected: Collection[str] | None = None) -> bool:
    """One conditional UPDATE (race-free, unlike read-modify-write), mirrored onto the loaded object.

    A loaded object gets the written values (computed ones, like ``attempt + 1``, are reloaded on
    next access), so it stays usable after the session closes. When nothing changed, the object no
    longer matches what the caller expected: it is expired, to be read afresh.
    """
    statement = update(model).where(model.id == key).values(**values)
    if expected is not None:
        statement = statement.where(model.status.in_(list(expected)))
    changed = session.execute(statement, execution_options={"synchronize_session": False}).rowcount > 0
    instance = session.identity_map.get(identity_key(model, key))
    if instance is not None and not changed:
        session.expire(instance)
    elif instance is not None:
        for name, value in values.items():
            if isinstance(value, ClauseElement):
                session.expire(instance, [name])
            else:
                set_committed_value(instance, name, value)
    return changed


# --- results -----------------------------------------------------------------------------------

def write_index_result(engine: Engine, index_id: int, *, preprocess: dict, pretrained: bool,
                       device: str, seconds: float, layers: list[dict], images: list[dict],
                       activations: Iterable[tuple], skipped_reasons: dict[str, int],
                       expected: Collection[str] | None = None) -> None:
    """Replace the index's result rows and mark it succeeded, all in ONE transaction.

    Readers see either the previous state or the complete new result, never a part; any error
    (a bad row, a lost connection, an exception raised by the ``activations`` iterable) rolls
    everything back and leaves the index's status as it was. Raises IndexNotWritable when the index
    is gone or, given ``expected``, not in one of those states. ``activations`` tuples:
    (layer_name, *ACTIVATION_FIELDS), plain Python numbers.
    """
    indexes = Index.__table__
    with engine.begin() as conn:
        # A write first, not a read: it takes the row lock on PostgreSQL and the database write
        # lock on SQLite (waiting for it), so the state checked here holds until the commit.
        lock = update(indexes).where(indexes.c.id == index_id).values(status=indexes.c.status)
        if expected is not None:
            lock = lock.where(indexes.c.status.in_(list(expected)))
        if conn.execute(lock).rowcount == 0:
            raise IndexNotWritable(f"index {index_id} is gone" if expected is None else
                                   f"index {index_id} is gone or not {'/'.join(expected)}")
        for model in (Activation, Image, Layer):
            conn.execute(delete(model.__table__).where(model.index_id == index_id))
        bulk_insert(conn, Layer.__table__, ("index_id", *LAYER_COLUMNS),
                    ((index_id, *(layer[c] for c in LAYER_COLUMNS)) for layer in layers))
        bulk_insert(conn, Image.__table__, ("index_id", *IMAGE_COLUMNS),
                    ((index_id, *(image.get(c) for c in IMAGE_COLUMNS)) for image in images))
        layer_ids = dict(conn.execute(select(Layer.name, Layer.id).where(Layer.index_id == index_id)).all())
        bulk_insert(conn, Activation.__table__, ("index_id", "layer_id", *ACTIVATION_FIELDS),
                    _activation_rows(index_id, layer_ids, {image["id"] for image in images}, activations))
        skipped = sum(1 for image in images if image.get("skipped_reason"))
        conn.execute(update(indexes).where(indexes.c.id == index_id).values(
            status="succeeded", error=None, finished_at=utcnow(), preprocess=preprocess,
            pretrained=pretrained, device=device, scan_seconds=seconds,
            images_total=len(images), images_skipped=skipped, images_scanned=len(images) - skipped,
            skipped_reasons=dict(skipped_reasons),
        ))


def _activation_rows(index_id: int, layer_ids: dict[str, int], image_ids: set[int],
                     activations: Iterable[tuple]) -> Iterator[tuple]:
    """Database rows for the activation tuples, refusing what the schema does not check: unknown
    layers or images, and non-finite values (SQLite would store NaN as NULL, JSON cannot carry it)."""
    for row in activations:
        layer_id = layer_ids.get(row[0])
        if layer_id is None:
            raise ValueError(f"activation row for unknown layer {row[0]!r}")
        if row[4] not in image_ids:
            raise ValueError(f"activation row for unknown image id {row[4]!r}")
        if not math.isfinite(row[3]):
            raise ValueError(f"activation value {row[3]!r} of {row[0]} unit {row[1]} is not finite")
        yield (index_id, layer_id, *row[1:])


def list_layers(session: Session, index_id: int) -> list[Layer]:
    return list(session.scalars(select(Layer).where(Layer.index_id == index_id).order_by(Layer.position)))


def get_layer(session: Session, index_id: int, name: str) -> Layer | None:
    return session.scalar(select(Layer).where(Layer.index_id == index_id, Layer.name == name))


def get_image(session: Session, index_id: int, image_id: int) -> Image | None:
    return session.get(Image, (index_id, image_id))


# The read queries the API makes per request are built once: constructing an ORM select costs about
# as much as running it (measured 0.2 ms of a 1.4 ms top-100 read on PostgreSQL).
_UNIT_TOP = (
    select(Activation, Image)
    .join(Image, and_(Image.index_id == Activation.index_id, Image.id == Activation.image_id))
    .where(Activation.index_id == bindparam("index_id"), Activation.layer_id == bindparam("layer_id"),
           Activation.unit == bindparam("unit"))
    .order_by(Activation.rank)
)
_IMAGE_UNITS = (
    select(Activation, Layer)
    .join(Layer, Layer.id == Activation.layer_id)
    .where(Activation.index_id == bindparam("index_id"), Activation.image_id == bindparam("image_id"))
    .order_by(Activation.value.desc(), Layer.position, Activation.unit)
    .limit(bindparam("limit"))
)


def unit_top(session: Session, index_id: int, layer_id: int, unit: int,
             limit: int | None = None) -> list[tuple[Activation, Image]]:
    """One unit's top-k in rank order, each with its image (a primary-key range read)."""
    statement = _UNIT_TOP if limit is None else _UNIT_TOP.limit(limit)
    rows = session.execute(statement, {"index_id": index_id, "layer_id": layer_id, "unit": unit})
    return [(activation, image) for activation, image in rows]


def image_units(session: Session, index_id: int, image_id: int, layer_id: int | None = None,
                limit: int = 100) -> list[tuple[Activation, Layer]]:
    """The units whose top-k contains this image, strongest first across layers."""
    statement = _IMAGE_UNITS if layer_id is None else _IMAGE_UNITS.where(Activation.layer_id == layer_id)
    rows = session.execute(statement, {"index_id": index_id, "image_id": image_id, "limit": limit})
    return [(activation, layer) for activation, layer in rows]


# --- shard states ------------------------------------------------------------------------------

def save_shard_state(session: Session, index_id: int, shard: int, state: bytes) -> None:
    """Store (or replace, when a shard is retried) one shard's mergeable state."""
    session.merge(ShardState(index_id=index_id, shard=shard, state=state))
    session.flush()


def load_shard_states(session: Session, index_id: int) -> dict[int, bytes]:
    """Saved states by shard number, in shard order."""
    rows = session.execute(select(ShardState.shard, ShardState.state)
                           .where(ShardState.index_id == index_id).order_by(ShardState.shard))
    return {shard: state for shard, state in rows}


def clear_shard_states(session: Session, index_id: int) -> int:
    result = session.execute(delete(ShardState).where(ShardState.index_id == index_id),
                             execution_options={"synchronize_session": False})
    return result.rowcount
