"""Real ``python -m service.jobs.worker`` processes on the real Redis and PostgreSQL."""

from __future__ import annotations

import time

from rq import Worker
from rq.job import Job

from service.jobs import recovery, state
from service.jobs.queue import RQQueue
from service.jobs.task import submit_index
from service.store.db import session_scope
from service.store.models import ShardState
from service.store.repository import get_index, get_job, jobs_of_index

from .conftest import INDEX_FIELDS, PHOTOS, SLOW_FIELDS, result_row_count, stored_rows, wait_for

WORKER_TIMEOUT_S = 120


def _job(sessions, job_id):
    with session_scope(sessions) as session:
        return get_job(session, job_id)


def _index(sessions, index_id):
    with session_scope(sessions) as session:
        return get_index(session, index_id)


def _slow_scan_started(job_settings, migrated_postgres, redis_url, sessions_for, spawn_worker, **overrides):
    """A 102-photo scan at batch size 1 on a fresh worker, returned once it has made progress."""
    settings = job_settings(migrated_postgres, redis_url, batch_size=1, **overrides)
    sessions = sessions_for(settings)
    queue = RQQueue(settings, sessions)
    index, (job,) = submit_index(sessions, queue, **SLOW_FIELDS)
    worker = spawn_worker(settings)
    wait_for(lambda: _job(sessions, job.id).progress_done > 0, WORKER_TIMEOUT_S, "scan progress")
    return settings, sessions, queue, index, job, worker


def test_worker_scan_writes_rows_equal_to_the_direct_scan_and_reports_progress(
        rq_settings, sessions_for, spawn_worker, direct_rows):
    sessions = sessions_for(rq_settings)
    queue = RQQueue(rq_settings, sessions)
    index, (job,) = submit_index(sessions, queue, **INDEX_FIELDS)

    worker = spawn_worker(rq_settings, burst=True)
    assert worker.wait(WORKER_TIMEOUT_S) == 0, worker.log()

    assert stored_rows(sessions, index.id) == direct_rows
    finished = _job(sessions, job.id)
    assert (finished.status, finished.attempt, finished.progress_done, finished.progress_total) == (
        "succeeded", 1, PHOTOS, PHOTOS)
    assert _index(sessions, index.id).status == "succeeded"
    rq_job = Job.fetch(job.id, connection=queue.redis)
    assert rq_job.timeout == rq_settings.job_timeout_s
    assert rq_job.get_meta()["progress"]["done"] == PHOTOS


def test_two_workers_scan_two_shards_and_merge_into_the_single_scan_rows(
        rq_settings, sessions_for, spawn_worker, direct_rows):
    sessions = sessions_for(rq_settings)
    queue = RQQueue(rq_settings, sessions)
    workers = [spawn_worker(rq_settings), spawn_worker(rq_settings)]
    # Both idle before anything is queued, so each takes one shard (a busy worker takes no second job).
    wait_for(lambda: len(Worker.all(queue=queue.queue)) == 2, WORKER_TIMEOUT_S, "two idle workers")

    index, jobs = submit_index(sessions, queue, shards=2, **INDEX_FIELDS)
    wait_for(lambda: _index(sessions, index.id).status not in ("queued", "running"), WORKER_TIMEOUT_S,
             "the merged index")

    assert _index(sessions, index.id).status == "succeeded", [w.log() for w in workers]
    assert stored_rows(sessions, index.id) == direct_rows
    with session_scope(sessions) as session:
        assert [(j.shard, j.image_start, j.image_stop, j.status) for j in jobs_of_index(session, index.id)] == [
            (0, 0, 4, "succeeded"), (1, 4, 12, "succeeded")]
        assert session.query(ShardState).filter_by(index_id=index.id).count() == 0
    ran_on = {Job.fetch(job.id, connection=queue.redis).worker_name for job in jobs}
    assert len(ran_on) == 2, ran_on


def test_cancel_of_a_running_job_stops_it_between_batches_and_writes_no_rows(
        job_settings, migrated_postgres, redis_url, sessions_for, spawn_worker):
    _, sessions, queue, index, job, worker = _slow_scan_started(
        job_settings, migrated_postgres, redis_url, sessions_for, spawn_worker)

    queue.cancel(job.id)
    assert _job(sessions, job.id).status == "running"  # the flag is read by the scan, between batches
    wait_for(lambda: _job(sessions, job.id).status == "cancelled", 30, "the scan to stop")

    stopped = _job(sessions, job.id)
    assert stopped.progress_done < stopped.progress_total == 102
    assert _index(sessions, index.id).status == "cancelled"
    assert result_row_count(sessions, index.id) == 0
    assert worker.process.poll() is None  # the worker survives and waits for the next job


def test_killed_work_horse_fails_its_job_at_once_and_the_worker_lives_on(
        job_settings, migrated_postgres, redis_url, sessions_for, spawn_worker):
    _, sessions, _, index, job, worker = _slow_scan_started(
        job_settings, migrated_postgres, redis_url, sessions_for, spawn_worker)

    worker.kill_horse()
    wait_for(lambda: _job(sessions, job.id).status == "failed", 30, "the worker to notice its dead horse")

    assert "died (signal SIGKILL)" in _index(sessions, index.id).error
    assert result_row_count(sessions, index.id) == 0
    assert worker.process.poll() is None


def test_worker_killed_with_sigkill_mid_scan_is_reaped_to_failed_without_rows(
        job_settings, migrated_postgres, redis_url, sessions_for, spawn_worker):
    settings, sessions, queue, index, job, worker = _slow_scan_started(
        job_settings, migrated_postgres, redis_url, sessions_for, spawn_worker)
    stale_after_s = 4.0
    assert recovery.reap_stale_jobs(sessions, queue.redis, settings.redis_db_prefix,
                                    stale_after_s=stale_after_s) == []  # alive: its heartbeat is fresh

    worker.stop()  # SIGKILL to the worker and to its horse: no handler of ours runs anywhere
    assert _job(sessions, job.id).status == "running"
    time.sleep(stale_after_s + 0.5)

    assert recovery.reap_stale_jobs(sessions, queue.redis, settings.redis_db_prefix,
                                    stale_after_s=stale_after_s) == [job.id]
    assert _job(sessions, job.id).status == "failed"
    assert _index(sessions, index.id).status == "failed"
    assert "stopped (killed or lost)" in _index(sessions, index.id).error
    assert result_row_count(sessions, index.id) == 0


def test_job_timeout_from_settings_fails_the_scan_without_rows(
        job_settings, migrated_postgres, redis_url, sessions_for, spawn_worker):
    settings = job_settings(migrated_postgres, redis_url, batch_size=1, job_timeout_s=2)
    sessions = sessions_for(settings)
    # ResNet-50 at batch size 1 over 102 photos: far longer than 2 s on any CPU, so the timeout
    # (not a fast machine finishing first) decides how the job ends.
    slow = {**SLOW_FIELDS, "model_spec": {"arch": "resnet50"}, "layers": ["layer4"]}
    index, (job,) = submit_index(sessions, RQQueue(settings, sessions), **slow)
    worker = spawn_worker(settings)

    ended = wait_for(lambda: _job(sessions, job.id).status in ("failed", "succeeded") and _job(sessions, job.id),
                     WORKER_TIMEOUT_S, "the job timeout")

    assert ended.status == "failed"
    assert "maximum timeout value (2 seconds)" in _index(sessions, index.id).error
    assert result_row_count(sessions, index.id) == 0
    assert worker.process.poll() is None


def test_a_starting_worker_fails_jobs_left_running_by_a_dead_one(rq_settings, sessions_for, spawn_worker):
    sessions = sessions_for(rq_settings)
    queue = RQQueue(rq_settings, sessions)
    index, (job,) = submit_index(sessions, queue, **INDEX_FIELDS)
    state.claim(sessions, job.id)  # "running", with no heartbeat: its worker died long ago
    Job.fetch(job.id, connection=queue.redis).delete()

    worker = spawn_worker(rq_settings, burst=True)
    assert worker.wait(WORKER_TIMEOUT_S) == 0, worker.log()

    assert _index(sessions, index.id).status == "failed"
    assert "failed scan job " + job.id in worker.log()
