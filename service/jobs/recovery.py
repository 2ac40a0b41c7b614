"""Jobs whose runner died: find them and fail them, so no index stays "running" forever.

A worker killed with SIGKILL (or a host that loses power) runs no handler at all; its job rows
would say "running" until someone looks. Liveness is therefore judged from outside: a running
RQ job has a heartbeat key its process refreshes every few seconds (``signals.Heartbeat``), and a
queued job must still exist in RQ. Results are written in one transaction, so a dead job has no
rows to clean up: failing its row and its index is the whole recovery.

``reap_stale_jobs`` runs when a worker starts, at each of its maintenance rounds, and whenever the
API reads a job (``RQQueue.reap``); the embedded queue calls ``adopt_orphaned_jobs`` on start.
"""

from __future__ import annotations

from datetime import timedelta

import redis
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from sqlalchemy.orm import sessionmaker

from service.jobs import state
from service.jobs.signals import HEARTBEAT_INTERVAL_S, heartbeat_age
from service.store.db import session_scope
from service.store.repository import jobs_with_status
from service.store.types import utcnow

# Fifteen missed heartbeats: long enough for a Redis hiccup, short enough that a client polling
# a dead job learns of it within a minute.
STALE_AFTER_S = 15 * HEARTBEAT_INTERVAL_S
_LOST_RQ_STATES = (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED, JobStatus.FINISHED)


def _live_jobs(sessions: sessionmaker, index_id: int | None) -> list[tuple[str, str, object]]:
    with session_scope(sessions) as session:
        return [(job.id, job.status, job.created_at)
                for job in jobs_with_status(session, state.LIVE, index_id=index_id)]


def _lost_from_rq(client: redis.Redis, job_id: str) -> bool:
    try:
        return Job.fetch(job_id, connection=client).get_status() in _LOST_RQ_STATES
    except NoSuchJobError:
        return True


def reap_stale_jobs(sessions: sessionmaker, client: redis.Redis, prefix: str, *, index_id: int | None = None,
                    stale_after_s: float = STALE_AFTER_S) -> list[str]:
    """Fail running jobs without a recent heartbeat and queued jobs RQ no longer holds.

    A queued job younger than ``stale_after_s`` is left alone: its row is written before it is
    enqueued. Returns the ids of the jobs failed here.
    """
    reaped = []
    old_enough = utcnow() - timedelta(seconds=stale_after_s)
    for job_id, status, created_at in _live_jobs(sessions, index_id):
        if status == "running":
            age = heartbeat_age(client, prefix, job_id)
            if age is not None and age <= stale_after_s:
                continue
            reason = "the worker running this job stopped (killed or lost); no results were written"
        elif created_at < old_enough and _lost_from_rq(client, job_id):
            reason = "the job was lost from the queue before any worker ran it"
        else:
            continue
        if state.finish(sessions, job_id, "failed", reason):
            reaped.append(job_id)
    return reaped


def adopt_orphaned_jobs(sessions: sessionmaker) -> list[str]:
    """For an embedded queue starting up: fail jobs a previous process was running, and return the
    queued ones (oldest first) for this process to run."""
    queued = []
    for job_id, status, _ in _live_jobs(sessions, None):
        if status == "running":
            state.finish(sessions, job_id, "failed",
                         "the process running this job exited before it finished; no results were written")
        else:
            queued.append(job_id)
    return queued
