"""Redis keys that a running scan shares with whoever controls it, kept outside RQ's job hash.

RQ stores ``job.meta`` as one serialized blob that the running job rewrites on every progress save,
so a cancel request written into meta would be lost at the next save. The cancel flag and the
liveness heartbeat therefore live in keys of their own, named after the scan job id (which is also
the RQ job id).
"""

from __future__ import annotations

import threading

import redis

# A horse refreshes its heartbeat this often; the key outlives a few missed beats so that a slow
# Redis round trip is not mistaken for a death. ``heartbeat_age`` measures from the last refresh.
HEARTBEAT_INTERVAL_S = 2.0
HEARTBEAT_TTL_S = 120


def cancel_key(prefix: str, job_id: str) -> str:
    return f"{prefix}:cancel:{job_id}"


def heartbeat_key(prefix: str, job_id: str) -> str:
    return f"{prefix}:alive:{job_id}"


def heartbeat_age(client: redis.Redis, prefix: str, job_id: str) -> float | None:
    """Seconds since the job's last heartbeat, or None when it never beat or the key expired.

    Computed from the key's remaining TTL, so only the Redis server's clock is involved: a reaper on
    another host with a skewed clock still judges liveness correctly.
    """
    remaining_ms = client.pttl(heartbeat_key(prefix, job_id))
    if remaining_ms < 0:  # -2: no key, -1: no TTL (never written by Heartbeat)
        return None
    return max(0.0, HEARTBEAT_TTL_S - remaining_ms / 1000.0)


class Heartbeat:
    """A daemon thread that keeps ``heartbeat_key`` fresh while a scan runs in this process.

    A scan batch can take minutes on a big model, so progress updates alone cannot prove the
    process is alive; this thread beats independently of the scan loop. When the process dies
    (SIGKILL, OOM) the beats stop and the reaper sees the age grow.
    """

    def __init__(self, client: redis.Redis, prefix: str, job_id: str):
        self._client = client
        self._key = heartbeat_key(prefix, job_id)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job_id}", daemon=True)

    def _beat(self) -> None:
        self._client.set(self._key, "1", ex=HEARTBEAT_TTL_S)

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_INTERVAL_S):
            try:
                self._beat()
            except redis.RedisError:
                # A transient outage must not kill the scan; if it lasts, the reaper fails the job
                # and the scan notices at its next progress write.
                continue

    def __enter__(self) -> "Heartbeat":
        self._beat()  # synchronously, so the job is never "running" without a heartbeat
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        try:
            self._client.delete(self._key)
        except redis.RedisError:
            pass  # the key expires on its own
