"""Two queue backends behind one small interface: RQ on Redis, or a thread inside the process.

The API only enqueues, cancels and asks for depth/health; it never runs a scan. With ``REDIS_URL``
set, scans go to RQ and run in ``unitscope worker`` processes (possibly on GPU hosts). Without it, an
embedded daemon thread runs the very same task function, so a newcomer needs neither Redis nor a
second process. The SQL tables stay the truth about every job; Redis is only transport.
"""

from __future__ import annotations

import logging
import queue as stdlib_queue
import threading
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

import redis
from rq import Queue
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job
from sqlalchemy.orm import sessionmaker

from service.config import Settings
from service.jobs import recovery, state
from service.jobs.signals import cancel_key
from service.store.db import make_engine, session_factory as make_session_factory

log = logging.getLogger(__name__)

# RQ calls the task by import path, so the API process never has to import torch to enqueue.
TASK_PATH = "service.jobs.task.run_scan_job"
# RQ results are transport only (the rows are in SQL); keep them long enough to debug a failure.
RESULT_TTL_S = 24 * 3600
FAILURE_TTL_S = 7 * 24 * 3600


class QueueUnavailable(Exception):
    """The queue backend cannot be reached; the API answers 503 and stored indexes stay readable."""


class JobQueue(Protocol):
    def enqueue_scan(self, index_id: int, job_id: str) -> None: ...
    def cancel(self, job_id: str) -> None: ...
    def is_cancelled(self, job_id: str) -> bool: ...
    def depth(self) -> int: ...
    def ping(self) -> bool: ...
    def reap(self, index_id: int | None = None) -> list[str]: ...


def queue_name(settings: Settings) -> str:
    return f"{settings.redis_db_prefix}-scans"


def redis_client(url: str) -> redis.Redis:
    """A client that fails fast: an API request must not hang for long when Redis is down."""
    return redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=10)


def display_url(url: str) -> str:
    """The URL without its password, fit for error messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _sessions_for(settings: Settings, sessions: sessionmaker | None) -> sessionmaker:
    return sessions if sessions is not None else make_session_factory(make_engine(settings.database_url))


class RQQueue:
    """Scans as RQ jobs (job id = ScanJob.id) on ``<prefix>-scans``; see ``service.jobs.worker``."""

    def __init__(self, settings: Settings, session_factory: sessionmaker | None = None,
                 connection: redis.Redis | None = None):
        if not settings.redis_url:
            raise ValueError("RQQueue needs settings.redis_url")
        self.settings = settings
        self.sessions = _sessions_for(settings, session_factory)
        self.redis = connection if connection is not None else redis_client(settings.redis_url)
        self.queue = Queue(queue_name(settings), connection=self.redis)

    def _unavailable(self, exc: redis.RedisError) -> QueueUnavailable:
        return QueueUnavailable(
            f"the job queue (Redis at {display_url(self.settings.redis_url)}) is unavailable: {exc}"
        )

    def enqueue_scan(self, index_id: int, job_id: str) -> None:
        try:
            self.queue.enqueue(
                TASK_PATH,
                job_id,
                job_id=job_id,
                job_timeout=self.settings.job_timeout_s,
                result_ttl=RESULT_TTL_S,
                failure_ttl=FAILURE_TTL_S,
                description=f"scan index {index_id} job {job_id}",
                meta={"index_id": index_id},
            )
        except redis.RedisError as exc:
            raise self._unavailable(exc) from exc

    def cancel(self, job_id: str) -> None:
        """Queued: marked cancelled and removed from RQ. Running: the flag stops it between batches.

        The flag is set first and in every case, and the row is cancelled before RQ is touched: a
        worker that dequeues the job at this very moment then finds the flag or the row and stops.
        """
        try:
            self.redis.set(cancel_key(self.settings.redis_db_prefix, job_id), "1",
                           ex=self.settings.job_timeout_s + 600)
            if state.cancel_if_queued(self.sessions, job_id):
                try:
                    Job.fetch(job_id, connection=self.redis).cancel()
                except (NoSuchJobError, InvalidJobOperation):
                    pass  # already dequeued or gone; the row and the flag have settled it
        except redis.RedisError as exc:
            raise self._unavailable(exc) from exc

    def is_cancelled(self, job_id: str) -> bool:
        try:
            return bool(self.redis.exists(cancel_key(self.settings.redis_db_prefix, job_id)))
        except redis.RedisError as exc:
            raise self._unavailable(exc) from exc

    def depth(self) -> int:
        try:
            return self.queue.count
        except redis.RedisError as exc:
            raise self._unavailable(exc) from exc

    def ping(self) -> bool:
        try:
            return bool(self.redis.ping())
        except redis.RedisError:
            return False

    def reap(self, index_id: int | None = None) -> list[str]:
        """Fail jobs whose worker died (see ``recovery.reap_stale_jobs``); returns their ids."""
        try:
            return recovery.reap_stale_jobs(self.sessions, self.redis, self.settings.redis_db_prefix,
                                            index_id=index_id)
        except redis.RedisError as exc:
            raise self._unavailable(exc) from exc


class EmbeddedQueue:
    """One daemon thread in this process runs queued scans one after the other.

    Nothing outside this process can run or see its jobs, so on start it takes over what a previous
    process left behind: queued jobs are queued again, jobs that were running are failed (their
    process is gone and its partial work with it). Consequently one database must not be shared
    by several processes with embedded queues (use Redis for that): each would adopt the others' jobs.
    """

    def __init__(self, settings: Settings, session_factory: sessionmaker | None = None):
        self.settings = settings
        self.sessions = _sessions_for(settings, session_factory)
        self._pending: stdlib_queue.Queue[str | None] = stdlib_queue.Queue()
        self._cancelled: set[str] = set()
        self._unfinished = 0
        self._idle = threading.Condition()
        for job_id in recovery.adopt_orphaned_jobs(self.sessions):
            self._put(job_id)
        self._thread = threading.Thread(target=self._work, name="unitscope-embedded-worker", daemon=True)
        self._thread.start()

    def _put(self, job_id: str) -> None:
        with self._idle:
            self._unfinished += 1
        self._pending.put(job_id)

    def enqueue_scan(self, index_id: int, job_id: str) -> None:
        self._put(job_id)

    def cancel(self, job_id: str) -> None:
        with self._idle:
            self._cancelled.add(job_id)
        state.cancel_if_queued(self.sessions, job_id)

    def is_cancelled(self, job_id: str) -> bool:
        with self._idle:
            return job_id in self._cancelled

    def depth(self) -> int:
        return self._pending.qsize()

    def ping(self) -> bool:
        return self._thread.is_alive()

    def reap(self, index_id: int | None = None) -> list[str]:
        """Nothing to reap: a job of this queue dies only with the process that would reap it."""
        return []

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every enqueued scan has finished; False on timeout (CLI and tests use it)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._unfinished == 0, timeout)

    def close(self, timeout: float | None = None) -> None:
        """Stop the thread after the scans already queued."""
        self._pending.put(None)
        self._thread.join(timeout)

    def _work(self) -> None:
        # Imported here: the task pulls in torch, which an API in Redis mode never needs.
        from service.jobs.task import run_scan_job

        while (job_id := self._pending.get()) is not None:
            try:
                run_scan_job(job_id, self.settings, cancel_check=self.is_cancelled)
            except Exception:  # the task already recorded the failure in SQL; keep the thread alive
                log.exception("embedded scan job %s failed", job_id)
            finally:
                with self._idle:
                    self._unfinished -= 1
                    self._idle.notify_all()


def make_queue(settings: Settings, session_factory: sessionmaker | None = None) -> JobQueue:
    """RQ when ``settings.redis_url`` is set, else the embedded thread."""
    if settings.redis_url:
        return RQQueue(settings, session_factory)
    return EmbeddedQueue(settings, session_factory)

