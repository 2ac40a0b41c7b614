"""Caches for rendered PNGs and for models loaded to answer on-demand requests.

A rendered PNG is a pure function of (index, its finish time, the endpoint, the parameters), so
entries never need invalidating: a re-run index gets a new finish time and therefore new keys.
With Redis configured, every API process shares one cache; otherwise each process keeps its own,
bounded by bytes rather than entries because a montage is a hundred times larger than a patch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from typing import Callable, Generic, Protocol, TypeVar

import redis

log = logging.getLogger("unitscope.api")

LOCAL_CACHE_BYTES = 64 * 1024 * 1024
REDIS_TTL_S = 7 * 24 * 3600


class RenderCache(Protocol):
    def get(self, key: str) -> bytes | None: ...
    def set(self, key: str, value: bytes) -> None: ...


class LocalRenderCache:
    """In-process LRU holding at most ``max_bytes`` of values; larger single values are not kept."""

    def __init__(self, max_bytes: int = LOCAL_CACHE_BYTES):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def set(self, key: str, value: bytes) -> None:
        if len(value) > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            self._bytes -= len(old) if old is not None else 0
            self._entries[key] = value
            self._bytes += len(value)
            while self._bytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= len(evicted)


class RedisRenderCache:
    """Shared across API processes. A Redis outage must not break image endpoints (they can
    always render again), so errors are logged and treated as misses."""

    def __init__(self, client: redis.Redis, prefix: str):
        self.client = client
        self.prefix = f"{prefix}:png:"

    def get(self, key: str) -> bytes | None:
        try:
            return self.client.get(self.prefix + key)
        except redis.RedisError as exc:
            log.warning("render cache unavailable: %s", exc)
            return None

    def set(self, key: str, value: bytes) -> None:
        try:
            self.client.set(self.prefix + key, value, ex=REDIS_TTL_S)
        except redis.RedisError as exc:
            log.warning("render cache unavailable: %s", exc)


K = TypeVar("K")
V = TypeVar("V")


class LoadingLRU(Generic[K, V]):
    """At most ``size`` values built by ``load(key)``, least recently used evicted.

    Used for models (activation maps, filters): loading MobileNetV2 takes ~0.3 s and ~14 MB, so a
    process keeps the last two. One lock serialises loads, so concurrent requests for the same
    model load it once instead of racing to load it twice.
    """

    def __init__(self, load: Callable[[K], V], size: int = 2):
        self.load = load
        self.size = size
        self._values: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V:
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key]
            value = self.load(key)
            self._values[key] = value
            while len(self._values) > self.size:
                self._values.popitem(last=False)
            return value


class ReadyIndexes:
    """Finished indexes and their layers, kept for a few seconds in process memory.

    Every request below an index first looks up the index and the layer; for a cached PNG those
    two queries were most of the work (measured: 1.2 ms per request, 0.4 ms for a static file).
    A succeeded index never changes except by deletion, so a short lifetime is the only staleness:
    a DELETE through this process forgets at once; other processes notice within ``ttl_s``.
    """

    def __init__(self, ttl_s: float = 5.0, size: int = 256):
        self.ttl_s = ttl_s
        self.size = size
        self._entries: OrderedDict[int, tuple[float, object]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, index_id: int):
        with self._lock:
            entry = self._entries.get(index_id)
            if entry is None or entry[0] < time.monotonic():
                return None
            return entry[1]

    def put(self, index_id: int, value) -> None:
        with self._lock:
            self._entries[index_id] = (time.monotonic() + self.ttl_s, value)
            self._entries.move_to_end(index_id)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def forget(self, index_id: int) -> None:
        with self._lock:
            self._entries.pop(index_id, None)
