"""Queue bookkeeping without running a scan: enqueue, Redis down, cancel of a queued job, reaping."""

from __future__ import annotations

import pytest
import redis
from rq import Queue
from rq.job import Job, JobStatus

from service.jobs import recovery, state
from service.jobs.queue import EmbeddedQueue, QueueUnavailable, RQQueue, make_queue, queue_name
from service.jobs.signals import Heartbeat
from service.jobs.task import submit_index
from service.store.db import session_scope
from service.store.repository import create_index, get_index, get_job, jobs_of_index, list_indexes

from .conftest import INDEX_FIELDS

CLOSED_PORT_URL = "redis://127.0.0.1:1/0"


def test_make_queue_picks_rq_with_redis_url_and_embedded_without(job_settings, migrated_sqlite, redis_url):
    rq_queue = make_queue(job_settings(migrated_sqlite, redis_url))
    embedded = make_queue(job_settings(migrated_sqlite, None))
    try:
        assert isinstance(rq_queue, RQQueue) and rq_queue.ping()
        assert isinstance(embedded, EmbeddedQueue) and embedded.ping()
    finally:
        embedded.close()


def test_enqueue_with_redis_down_raises_queue_unavailable_and_keeps_stored_indexes_readable(
        job_settings, migrated_sqlite, sessions_for):
    settings = job_settings(migrated_sqlite, CLOSED_PORT_URL)
    sessions = sessions_for(settings)
    with session_scope(sessions) as session:
        stored = create_index(session, **INDEX_FIELDS).id
    queue = make_queue(settings, sessions)

    with pytest.raises(QueueUnavailable, match=r"Redis at redis://127\.0\.0\.1:1/0\) is unavailable"):
        submit_index(sessions, queue, shards=2, **INDEX_FIELDS)

    assert queue.ping() is False
    with pytest.raises(QueueUnavailable):
        queue.depth()
    with session_scope(sessions) as session:
        indexes, total = list_indexes(session, limit=10, offset=0)
        assert [index.id for index in indexes] == [stored] and total == 1  # the failed submit left nothing
        assert get_index(session, stored).status == "queued"


def test_cancel_of_a_queued_rq_job_removes_it_and_cancels_the_index(rq_settings, sessions_for):
    sessions = sessions_for(rq_settings)
    queue = RQQueue(rq_settings, sessions)
    index, (job,) = submit_index(sessions, queue, **INDEX_FIELDS)
    assert queue.depth() == 1
    assert Job.fetch(job.id, connection=queue.redis).meta == {"index_id": index.id}

    queue.cancel(job.id)

    assert queue.depth() == 0 and queue.is_cancelled(job.id)
    assert Job.fetch(job.id, connection=queue.redis).get_status() == JobStatus.CANCELED
    with session_scope(sessions) as session:
        assert get_job(session, job.id).status == "cancelled"
        assert get_index(session, index.id).status == "cancelled"
    assert state.claim(sessions, job.id) is None  # a worker that dequeued it anyway does nothing


def test_reaper_fails_a_queued_job_lost_from_redis_but_not_a_fresh_one(rq_settings, sessions_for):
    sessions = sessions_for(rq_settings)
    queue = RQQueue(rq_settings, sessions)
    lost_index, (lost,) = submit_index(sessions, queue, **INDEX_FIELDS)
    fresh_index, (fresh,) = submit_index(sessions, queue, **INDEX_FIELDS)
    Job.fetch(lost.id, connection=queue.redis).delete()

    assert queue.reap(lost_index.id) == []  # younger than the grace period: may be enqueued right now
    reaped = recovery.reap_stale_jobs(sessions, queue.redis, rq_settings.redis_db_prefix, stale_after_s=0)

    assert lost.id in reaped and fresh.id not in reaped
    with session_scope(sessions) as session:
        assert get_index(session, lost_index.id).status == "failed"
        assert "lost from the queue" in get_index(session, lost_index.id).error
        assert get_index(session, fresh_index.id).status == "queued"


def test_reaper_spares_a_running_job_while_it_beats_and_fails_it_once_the_beat_stops(rq_settings, sessions_for):
    sessions = sessions_for(rq_settings)
    queue = RQQueue(rq_settings, sessions)
    index, (job,) = submit_index(sessions, queue, **INDEX_FIELDS)
    prefix = rq_settings.redis_db_prefix

    with Heartbeat(queue.redis, prefix, job.id):
        assert state.claim(sessions, job.id) is not None
        assert recovery.reap_stale_jobs(sessions, queue.redis, prefix, index_id=index.id) == []
    # Leaving the block deletes the key, as a dead process's key expires.
    assert recovery.reap_stale_jobs(sessions, queue.redis, prefix, index_id=index.id) == [job.id]

    with session_scope(sessions) as session:
        assert get_job(session, job.id).status == "failed"
        assert get_job(session, job.id).attempt == 1
        assert get_index(session, index.id).status == "failed"


def test_exactly_the_last_shard_to_finish_merges_and_a_failed_shard_cancels_its_queued_siblings(
        rq_settings, sessions_for):
    sessions = sessions_for(rq_settings)
    queue = RQQueue(rq_settings, sessions)
    _, jobs = submit_index(sessions, queue, shards=3, **INDEX_FIELDS)
    first, second, third = (state.claim(sessions, job.id) for job in jobs)

    assert state.complete_shard(sessions, second, b"state-1") is False
    assert state.complete_shard(sessions, first, b"state-0") is False
    assert state.complete_shard(sessions, third, b"state-2") is True
    assert state.shard_states(sessions, first.index_id) == [b"state-0", b"state-1", b"state-2"]

    index, (a, b) = submit_index(sessions, queue, shards=2, **INDEX_FIELDS)
    state.claim(sessions, a.id)
    assert state.finish(sessions, a.id, "failed", "boom")
    with session_scope(sessions) as session:
        assert [j.status for j in jobs_of_index(session, index.id)] == ["failed", "cancelled"]
        assert get_index(session, index.id).error == "shard 1/2: boom"


def test_rq_queue_name_and_redis_errors_are_contained(rq_settings):
    queue = RQQueue(rq_settings, connection=redis.Redis.from_url(CLOSED_PORT_URL, socket_connect_timeout=1))
    assert queue.queue.name == queue_name(rq_settings) == f"{rq_settings.redis_db_prefix}-scans"
    with pytest.raises(QueueUnavailable):
        queue.cancel("0" * 32)
    assert Queue(queue_name(rq_settings), connection=redis.Redis.from_url(rq_settings.redis_url)).count == 0
