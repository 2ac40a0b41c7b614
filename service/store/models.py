"""The schema: one index (a scan of a model over a dataset) and everything it owns.

Every child row references its index with ON DELETE CASCADE, so deleting an index is one statement
whatever its size: each cascade is a single range delete on a key that starts with ``index_id``.

``activations`` deliberately has that one foreign key only. Composite keys to its layer and image
would make PostgreSQL run two referential checks per row during the bulk COPY, measured at 2.6 s
instead of 1.4 s for 250,000 rows; ``write_index_result``, the only writer, checks layer names and
image ids itself before a row leaves Python.

The primary key of ``activations`` is the API's main query, one unit's top-k in rank order; the
secondary index ``(index_id, image_id)`` answers "which units does this image excite".
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from service.store.types import UtcDateTime, utcnow

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

_STATUS_CHECK = "status IN ({})".format(", ".join(f"'{s}'" for s in STATUSES))


def _json(nullable: bool = False) -> sa.JSON:
    """Nullable JSON columns store SQL NULL for None, not the JSON literal ``null``."""
    return sa.JSON(none_as_null=nullable)


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class Index(Base):
    __tablename__ = "indexes"
    # AUTOINCREMENT on SQLite: ids of deleted indexes are never handed out again, so an old URL
    # cannot silently name a newer index (PostgreSQL sequences never reuse values anyway).
    __table_args__ = (sa.CheckConstraint(_STATUS_CHECK, name="status"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    model_spec: Mapped[dict[str, Any]] = mapped_column(_json())
    dataset_spec: Mapped[dict[str, Any]] = mapped_column(_json())
    layers_requested: Mapped[list[str] | None] = mapped_column(_json(nullable=True), nullable=True)
    k: Mapped[int] = mapped_column(sa.Integer)
    score: Mapped[str] = mapped_column(sa.String(16))
    neuron: Mapped[list[int] | None] = mapped_column(_json(nullable=True), nullable=True)
    status: Mapped[str] = mapped_column(sa.String(16), default="queued")
    preprocess: Mapped[dict[str, Any] | None] = mapped_column(_json(nullable=True), nullable=True)
    pretrained: Mapped[bool | None] = mapped_column(sa.Boolean, nullable=True)
    images_total: Mapped[int] = mapped_column(sa.Integer, default=0)
    images_scanned: Mapped[int] = mapped_column(sa.Integer, default=0)
    images_skipped: Mapped[int] = mapped_column(sa.Integer, default=0)
    skipped_reasons: Mapped[dict[str, int]] = mapped_column(_json(), default=dict)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    scan_seconds: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    error: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    device: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)


class ScanJob(Base):
    """One unit of queued work: the whole index, or one shard (an image range) of it."""

    __tablename__ = "scan_jobs"
    __table_args__ = (sa.CheckConstraint(_STATUS_CHECK, name="status"),)

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    index_id: Mapped[int] = mapped_column(sa.ForeignKey("indexes.id", ondelete="CASCADE"), index=True)
    shard: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    shard_count: Mapped[int] = mapped_column(sa.Integer, default=1)
    image_start: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    image_stop: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    status: Mapped[str] = mapped_column(sa.String(16), default="queued")
    progress_done: Mapped[int] = mapped_column(sa.Integer, default=0)
    progress_total: Mapped[int] = mapped_column(sa.Integer, default=0)
    rate: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    error: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    attempt: Mapped[int] = mapped_column(sa.Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class Layer(Base):
    __tablename__ = "layers"
    __table_args__ = (sa.UniqueConstraint("index_id", "name"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    index_id: Mapped[int] = mapped_column(sa.ForeignKey("indexes.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(sa.String(300))
    type: Mapped[str] = mapped_column(sa.String(100))
    position: Mapped[int] = mapped_column(sa.Integer)
    channels: Mapped[int] = mapped_column(sa.Integer)
    height: Mapped[int] = mapped_column(sa.Integer)
    width: Mapped[int] = mapped_column(sa.Integer)
    rf_size: Mapped[int] = mapped_column(sa.Integer)
    rf_jump: Mapped[int] = mapped_column(sa.Integer)
    rf_offset: Mapped[int] = mapped_column(sa.Integer)


class Image(Base):
    """An image of the dataset; ``id`` is the scan's ImageRecord.id, unique within its index."""

    __tablename__ = "images"

    index_id: Mapped[int] = mapped_column(sa.ForeignKey("indexes.id", ondelete="CASCADE"), primary_key=True)
    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    path: Mapped[str] = mapped_column(sa.Text)
    label: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    width: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    height: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    skipped_reason: Mapped[str | None] = mapped_column(sa.Text, nullable=True)


class Activation(Base):
    """One entry of one unit's top-k: where the unit fired, how strongly, and on which patch."""

    __tablename__ = "activations"
    __table_args__ = (sa.Index(None, "index_id", "image_id"),)

    index_id: Mapped[int] = mapped_column(sa.ForeignKey("indexes.id", ondelete="CASCADE"), primary_key=True)
    layer_id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    unit: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    rank: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    value: Mapped[float] = mapped_column(sa.Float)
    image_id: Mapped[int] = mapped_column(sa.Integer)
    y: Mapped[int] = mapped_column(sa.Integer)
    x: Mapped[int] = mapped_column(sa.Integer)
    in_x0: Mapped[int] = mapped_column(sa.Integer)
    in_y0: Mapped[int] = mapped_column(sa.Integer)
    in_x1: Mapped[int] = mapped_column(sa.Integer)
    in_y1: Mapped[int] = mapped_column(sa.Integer)
    x0: Mapped[int] = mapped_column(sa.Integer)
    y0: Mapped[int] = mapped_column(sa.Integer)
    x1: Mapped[int] = mapped_column(sa.Integer)
    y1: Mapped[int] = mapped_column(sa.Integer)


class ShardState(Base):
    """A finished shard's mergeable top-k state, kept until the last shard merges them all."""

    __tablename__ = "shard_states"

    index_id: Mapped[int] = mapped_column(sa.ForeignKey("indexes.id", ondelete="CASCADE"), primary_key=True)
    shard: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    state: Mapped[bytes] = mapped_column(sa.LargeBinary)
