"""The life of a scan job and of its index, as transitions of their SQL rows.

The tables are the truth (RQ's own records expire and cannot be trusted after a crash), so every
change of state goes through here, each in one short transaction, each conditional on the state
it leaves: a transition that lost a race (the job was cancelled, reaped or finished meanwhile)
changes nothing and says so.

Every transaction that changes a job first takes its index row (``_lock_index``). That serialises
the shards of one index, which is what lets exactly one shard find that all the others are done,
and one fixed lock order (index, then job) keeps PostgreSQL free of deadlocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from service.store.db import session_scope
from service.store.models import Index, ScanJob
from service.store.repository import (
    clear_shard_states,
    get_job,
    load_shard_states,
    record_progress as store_progress,
    save_shard_state,
    set_index_status,
    set_job_status,
)

LIVE = ("queued", "running")


class JobAbandoned(Exception):
    """The job or its index left "running" meanwhile (cancelled, reaped, a sibling shard failed)."""


@dataclass(frozen=True)
class JobPlan:
    """What a claimed job needs to run, copied out of the session that claimed it."""

    job_id: str
    index_id: int
    shard: int | None
    shard_count: int
    model_spec: dict[str, Any]
    dataset_spec: dict[str, Any]
    layers: list[str] | None
    k: int
    score: str
    neuron: Any


def _lock_index(session: Session, index_id: int) -> Index | None:
    """Take the index row for the rest of the transaction and return it, fresh.

    A no-op UPDATE rather than SELECT ... FOR UPDATE: on PostgreSQL both lock the row, but on
    SQLite only a write takes the database lock up front (waiting on the busy timeout); a read
    followed by a write can fail at once with "database is locked" when another writer got in.
    """
    session.execute(update(Index).where(Index.id == index_id).values(status=Index.status),
                    execution_options={"synchronize_session": False})
    return session.get(Index, index_id, populate_existing=True)


def claim(sessions: sessionmaker, job_id: str) -> JobPlan | None:
    """queued -> running (attempt + 1); None when the job must not run (gone, cancelled, done)."""
    with session_scope(sessions) as session:
        job = get_job(session, job_id)
        if job is None:
            return None
        index = _lock_index(session, job.index_id)
        if job.status != "queued":
            return None
        if index.status not in LIVE:
            set_job_status(session, job_id, "cancelled", error=f"the index is {index.status}")
            return None
        set_job_status(session, job_id, "running")
        set_index_status(session, index.id, "running", expected=("queued",))
        return JobPlan(job_id=job.id, index_id=index.id, shard=job.shard, shard_count=job.shard_count,
                       model_spec=dict(index.model_spec), dataset_spec=dict(index.dataset_spec),
                       layers=index.layers_requested, k=index.k, score=index.score, neuron=index.neuron)


def finish(sessions: sessionmaker, job_id: str, status: str, error: str | None = None) -> bool:
    """End a queued or running job; False when it had already ended.

    A failed or cancelled job takes its index with it (a partial index is worth nothing), and the
    index's other queued shards are cancelled; its running shards notice at their next progress
    write (``record_progress`` returns False). A succeeded job leaves the index alone: the result
    write marks the index succeeded. Once the index has ended, saved shard states are garbage.
    """
    with session_scope(sessions) as session:
        job = get_job(session, job_id)
        if job is None:
            return False
        index = _lock_index(session, job.index_id)
        if not set_job_status(session, job_id, status, error=error, expected=LIVE):
            return False
        if status in ("failed", "cancelled"):
            index_error = error if job.shard is None else f"shard {job.shard + 1}/{job.shard_count}: {error}"
            set_index_status(session, job.index_id, status, error=index_error, expected=LIVE)
            siblings = select(ScanJob.id).where(ScanJob.index_id == job.index_id, ScanJob.status == "queued")
            for sibling in session.scalars(siblings).all():
                set_job_status(session, sibling, "cancelled", error=f"another job of this index {status}")
        session.refresh(index)
        if index.status not in LIVE:
            clear_shard_states(session, job.index_id)
        return True


def cancel_if_queued(sessions: sessionmaker, job_id: str) -> bool:
    """Cancel a job that has not started; a running one is stopped by the queue's flag instead."""
    with session_scope(sessions) as session:
        job = get_job(session, job_id)
        if job is None or job.status != "queued":
            return False
    return finish(sessions, job_id, "cancelled", "cancelled before it started")


def record_progress(sessions: sessionmaker, job_id: str, done: int, total: int, rate: float | None) -> bool:
    """Store progress; False when the job should stop because it or its index is no longer running."""
    with session_scope(sessions) as session:
        store_progress(session, job_id, done, total, rate)
        return _still_running(session, job_id)


def _still_running(session: Session, job_id: str) -> bool:
    row = session.execute(
        select(ScanJob.status, Index.status).join(Index, Index.id == ScanJob.index_id).where(ScanJob.id == job_id)
    ).first()
    return row is not None and tuple(row) == ("running", "running")


def record_range(sessions: sessionmaker, job_id: str, start: int, stop: int) -> None:
    """The image range a job scans, fixed once it has listed the dataset."""
    with session_scope(sessions) as session:
        session.execute(update(ScanJob).where(ScanJob.id == job_id).values(
            image_start=start, image_stop=stop, progress_done=0, progress_total=stop - start))


def complete_shard(sessions: sessionmaker, plan: JobPlan, state: bytes | None) -> bool:
    """Save a finished shard's state; True when this shard is the last one and must merge.

    The last shard stays "running" while it merges and writes (its heartbeat keeps it alive for the
    reaper); every other shard is succeeded here. Raises JobAbandoned when the index stopped.
    """
    with session_scope(sessions) as session:
        index = _lock_index(session, plan.index_id)
        if index is None or index.status != "running":
            raise JobAbandoned(f"index {plan.index_id} is {index.status if index else 'deleted'}")
        if state is not None:  # an empty image range has nothing to contribute
            save_shard_state(session, plan.index_id, plan.shard, state)
        others_done = session.scalar(
            select(func.count()).select_from(ScanJob)
            .where(ScanJob.index_id == plan.index_id, ScanJob.id != plan.job_id, ScanJob.status == "succeeded")
        )
        if others_done == plan.shard_count - 1:
            return True
        if not set_job_status(session, plan.job_id, "succeeded", expected=("running",)):
            raise JobAbandoned(f"job {plan.job_id} is no longer running")
        return False


def shard_states(sessions: sessionmaker, index_id: int) -> list[bytes]:
    """All saved shard states of the index, in shard order."""
    with session_scope(sessions) as session:
        return list(load_shard_states(session, index_id).values())


def ensure_running(sessions: sessionmaker, job_id: str) -> None:
    """Raise JobAbandoned unless the job and its index are still running (checked before writing)."""
    with session_scope(sessions) as session:
        if not _still_running(session, job_id):
            raise JobAbandoned(f"job {job_id} is no longer running")
