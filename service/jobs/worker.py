"""The RQ worker that runs scans: ``unitscope worker`` or ``python -m service.jobs.worker``.

It is RQ's default forking ``Worker``: the parent dequeues, forks a fresh "work horse" per job and
watches it. The horse loads the model once, scans, writes and exits, so GPU memory and any leak
go away with it, a job timeout or ``rq``'s stop command can kill it cleanly, and a crashing job
(segfault, OOM kill) cannot take the worker down.

The price: CUDA does not survive ``fork()``, so the parent must never initialise it. It imports
torch only through the task module (harmless) and never calls ``torch.cuda.*``;
``PYTORCH_NVML_BASED_CUDA_CHECK=1`` makes any availability check it might make use NVML instead of
a CUDA context. Each job also pays a model load (seconds, small next to a scan). The alternative,
``SimpleWorker``, runs jobs in the worker process itself: a CUDA context and a loaded model could
then be reused, but a job can no longer be stopped or timed out from outside, and whatever it
leaks or corrupts stays for every later job.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal

from redis import Redis
from rq import Worker
from rq.job import Job

from service.config import Settings
from service.logs import use_json_logs
from service.jobs import recovery, state, task
from service.jobs.queue import display_url, queue_name
from service.store.db import make_engine, session_factory
from service.store.migrate import upgrade

log = logging.getLogger(__name__)

# Idle workers look for dead jobs this often (RQ's default maintenance interval is 10 minutes).
# RQ only runs maintenance when its blocking dequeue returns, which waits ``worker_ttl - 15`` s,
# so the worker TTL is tied to the interval.
MAINTENANCE_INTERVAL_S = 60
WORKER_TTL_S = MAINTENANCE_INTERVAL_S + 15


def _with_sessions(settings: Settings, action):
    """Run ``action(sessions)`` on an engine closed right after: the parent must not leave open
    database connections behind for a forked horse to inherit."""
    engine = make_engine(settings.database_url)
    try:
        return action(session_factory(engine))
    finally:
        engine.dispose()


class ScanWorker(Worker):
    """RQ's forking worker plus the SQL side of crash handling (reaping dead jobs, dead horses)."""

    def __init__(self, settings: Settings, **kwargs):
        self.settings = settings
        super().__init__([queue_name(settings)], maintenance_interval=MAINTENANCE_INTERVAL_S,
                         worker_ttl=WORKER_TTL_S, work_horse_killed_handler=self._horse_killed, **kwargs)

    def run_maintenance_tasks(self) -> None:
        super().run_maintenance_tasks()
        self.reap()

    def reap(self) -> None:
        reaped = _with_sessions(self.settings, lambda sessions: recovery.reap_stale_jobs(
            sessions, self.connection, self.settings.redis_db_prefix))
        for job_id in reaped:
            log.warning("failed scan job %s: its worker is gone", job_id)

    def _horse_killed(self, job: Job, pid: int, status: int, rusage) -> None:
        """The horse died without reporting (SIGKILL, OOM killer, segfault): fail its job now
        rather than after the heartbeat goes stale."""
        how = (f"signal {signal.Signals(os.WTERMSIG(status)).name}" if os.WIFSIGNALED(status)
               else f"exit status {os.WEXITSTATUS(status)}")
        reason = f"the worker process running this job died ({how}); no results were written"
        _with_sessions(self.settings, lambda sessions: state.finish(sessions, job.id, "failed", reason))


def run_worker(settings: Settings, *, burst: bool = False) -> None:
    """Migrate the database, then work the scan queue until stopped (or until empty when ``burst``)."""
    if not settings.redis_url:
        raise ValueError("the worker needs REDIS_URL; without it the API runs scans in-process")
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    upgrade(settings.database_url)
    task.use_worker_settings(settings)
    worker = ScanWorker(settings, connection=Redis.from_url(settings.redis_url))
    log.info("worker %s on %s, queue %s", worker.name, display_url(settings.redis_url), queue_name(settings))
    worker.work(burst=burst, with_scheduler=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run Unitscope scan jobs from the Redis queue.")
    parser.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    parser.add_argument("--prefix", help="Redis key and queue prefix (to share one Redis between deployments)")
    args = parser.parse_args(argv)
    use_json_logs()
    settings = Settings.from_env()
    if args.prefix:
        settings = settings.with_overrides(redis_db_prefix=args.prefix)
    run_worker(settings, burst=args.burst)


if __name__ == "__main__":
    main()
