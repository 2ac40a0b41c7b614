"""The scan job: claim its row, scan its images, write the index's rows; and submitting one.

``run_scan_job`` is what RQ's work horse and the embedded thread both call. Everything it learns
goes to SQL: progress about once a second (and RQ's ``job.meta`` under RQ), then either the whole
result in one transaction or a failed/cancelled status with no rows at all.

A sharded index is several jobs over consecutive image ranges of one dataset listing. Each shard
saves its mergeable top-k state; the shard that finds all the others done merges every state with
the scan engine's ``ScanResult.merge`` and writes the rows exactly as a single scan would have.
"""

from __future__ import annotations

import functools
import logging
import time
from collections import Counter
from contextlib import contextmanager
from typing import Callable, Iterator

import redis
from rq import get_current_job
from rq.timeouts import JobTimeoutException
from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

from service.config import Settings
from service.jobs import state
from service.jobs.queue import JobQueue, QueueUnavailable, redis_client
from service.jobs.signals import Heartbeat, cancel_key
from service.jobs.state import JobAbandoned, JobPlan
from service.logs import fields
from service.paths import PathNotAllowed, PathNotFound, resolve_under_roots
from service.scan.data import ImageRecord, list_images
from service.scan.errors import DatasetError, ScanCancelled, ScanError
from service.scan.geometry import original_box
from service.scan.models import ModelSpec, load_model
from service.scan.scanner import ScanResult, scan
from service.store.db import make_engine, session_factory, session_scope
from service.store.models import Index, ScanJob
from service.store.repository import IndexNotWritable, create_index, create_job, delete_index, write_index_result

log = logging.getLogger(__name__)

CancelCheck = Callable[[str], bool]
PROGRESS_INTERVAL_S = 1.0
# Errors whose message is meant for the user as is; anything else is a bug or an outage and is
# re-raised after the job is marked failed, so RQ keeps its traceback.
USER_ERRORS = (ScanError, PathNotAllowed, PathNotFound, JobTimeoutException)

# The settings of the worker that forked this process. RQ calls the task with the job's arguments
# only, and passing Settings through Redis would put the database URL (password included) into
# every job hash; a forked work horse inherits this instead. None outside workers.
_worker_settings: Settings | None = None


def use_worker_settings(settings: Settings) -> None:
    """Called by ``run_worker`` before it forks work horses; see ``_worker_settings``."""
    global _worker_settings
    _worker_settings = settings


def shard_range(n_images: int, shard: int | None, shard_count: int, align: int = 1) -> tuple[int, int]:
    """The image ids [start, stop) of one shard: consecutive ranges tiling [0, n).

    Boundaries fall on multiples of ``align`` (the batch size), so every shard forms the same
    batches a single scan would: CPU and GPU kernels may round differently with another batch
    composition, and the merge is promised to equal a single scan bit for bit.
    """
    if shard is None:
        return 0, n_images
    blocks = -(-n_images // align)

    def boundary(i: int) -> int:
        return min(i * blocks // shard_count * align, n_images)

    return boundary(shard), boundary(shard + 1)


def default_index_name(model_spec: dict, dataset_spec: dict) -> str:
    """What an index is called when its creator gave no name: the model on the dataset."""
    model = model_spec.get("arch") or model_spec.get("torchscript")
    return f"{model} on {dataset_spec['path']}"[:200]


def submit_index(session_factory: sessionmaker, queue: JobQueue, *, shards: int = 1,
                 **index_fields) -> tuple[Index, list[ScanJob]]:
    """Create an index with its job(s) and enqueue them; returns the rows (detached, loaded).

    ``index_fields`` are ``repository.create_index``'s keywords; a missing or empty name becomes
    ``default_index_name``. ``session_factory`` must keep
    objects loaded after commit (``service.store.db.session_factory`` does). When the queue is
    unreachable the new rows are deleted (the client gets a 503 and will retry; a failed index
    nobody can name would only be litter) and QueueUnavailable propagates.
    """
    if shards < 1:
        raise ValueError("shards must be at least 1")
    if not index_fields.get("name"):
        index_fields["name"] = default_index_name(index_fields["model_spec"], index_fields["dataset_spec"])
    with session_scope(session_factory) as session:
        index = create_index(session, **index_fields)
        jobs = [create_job(session, index.id, shard=i if shards > 1 else None, shard_count=shards)
                for i in range(shards)]
    try:
        for job in jobs:
            queue.enqueue_scan(index.id, job.id)
    except QueueUnavailable:
        with session_scope(session_factory) as session:
            delete_index(session, index.id)
        raise
    return index, jobs


def run_scan_job(job_id: str, settings: Settings | None = None, *, cancel_check: CancelCheck | None = None) -> None:
    """Run one scan job to its end; the RQ entry point.

    ``settings``: when None, the forking worker's, else the environment's. ``cancel_check``: an
    extra cancel source (the embedded queue's flags); with Redis configured, the Redis flag is
    always consulted too. Returns quietly when the job must not run (cancelled, gone, done).
    """
    settings = settings or _worker_settings or Settings.from_env()
    engine = make_engine(settings.database_url)
    sessions = session_factory(engine)
    try:
        with _cancel_signal(settings, job_id, cancel_check) as flagged:
            plan = state.claim(sessions, job_id)
            if plan is None:
                log.info("scan job %s is not queued any more; nothing to do", job_id)
                return
            _run_claimed(plan, settings, engine, sessions, flagged)
    finally:
        engine.dispose()


@contextmanager
def _cancel_signal(settings: Settings, job_id: str, cancel_check: CancelCheck | None) -> Iterator[Callable[[], bool]]:
    """Yield "is this job flagged for cancel?"; under Redis, keep the job's heartbeat beating."""
    checks = [cancel_check] if cancel_check else []
    if not settings.redis_url:
        yield lambda: any(check(job_id) for check in checks)
        return
    client = redis_client(settings.redis_url)
    key = cancel_key(settings.redis_db_prefix, job_id)

    def redis_flag(_job_id: str) -> bool:
        try:
            return bool(client.exists(key))
        except redis.RedisError:
            return False  # a Redis outage must not fail a scan; the SQL rows still say cancelled

    checks.append(redis_flag)
    try:
        with Heartbeat(client, settings.redis_db_prefix, job_id):
            yield lambda: any(check(job_id) for check in checks)
    finally:
        client.close()


class _Progress:
    """The scan's progress callback: SQL (and RQ's job.meta) at most once per interval.

    Each write also tells whether the job and its index are still running; when not (cancelled
    through SQL, reaped, a sibling shard failed) ``abandoned`` turns True and the scan stops at
    its next batch.
    """

    def __init__(self, sessions: sessionmaker, job_id: str):
        self.sessions = sessions
        self.job_id = job_id
        self.abandoned = False
        self._last = float("-inf")
        self._rq_job = get_current_job()

    def __call__(self, done: int, total: int, rate: float) -> None:
        now = time.monotonic()
        if now - self._last < PROGRESS_INTERVAL_S and done < total:
            return
        self._last = now
        if not state.record_progress(self.sessions, self.job_id, done, total, rate):
            self.abandoned = True
        if self._rq_job is not None:
            self._rq_job.meta["progress"] = {"done": done, "total": total, "rate": rate}
            try:
                self._rq_job.save_meta()
            except redis.RedisError:
                pass  # meta is a convenience copy; SQL has the numbers


def _run_claimed(plan: JobPlan, settings: Settings, engine: Engine, sessions: sessionmaker,
                 flagged: Callable[[], bool]) -> None:
    progress = _Progress(sessions, plan.job_id)

    def should_cancel() -> bool:
        return progress.abandoned or flagged()

    ids = {"index_id": plan.index_id, "job_id": plan.job_id, "shard": plan.shard}
    log.info("scan job started", extra=fields(**ids, model=plan.model_spec, dataset=plan.dataset_spec))
    started = time.monotonic()
    try:
        if should_cancel():
            raise ScanCancelled("cancelled before it started")
        records, result = _scan(plan, settings, sessions, progress, should_cancel)
        if plan.shard is not None:
            result = _merge_if_last(plan, sessions, records, result)
        if result is not None:
            _require_a_readable_image(result)
            state.ensure_running(sessions, plan.job_id)
            # expected: a cancel landing after the check above must still win over the write.
            write_index_result(engine, plan.index_id, expected=("running",), **result_rows(result))
            state.finish(sessions, plan.job_id, "succeeded")
        log.info("scan job succeeded", extra=fields(**ids, seconds=round(time.monotonic() - started, 3),
                                                     images=len(records), device=result.device if result else None))
    except (ScanCancelled, JobAbandoned, IndexNotWritable):
        state.finish(sessions, plan.job_id, "cancelled", "cancelled while running")
        log.info("scan job cancelled", extra=fields(**ids))
    except Exception as exc:
        state.finish(sessions, plan.job_id, "failed", _describe(exc))
        log.warning("scan job failed", extra=fields(**ids, error=_describe(exc)))
        if not isinstance(exc, USER_ERRORS):
            raise


def _describe(exc: Exception) -> str:
    if isinstance(exc, USER_ERRORS):
        return str(exc)
    return f"internal error: {type(exc).__name__}: {exc}"[:500]


def _scan(plan: JobPlan, settings: Settings, sessions: sessionmaker, progress: _Progress,
          should_cancel: Callable[[], bool]) -> tuple[list[ImageRecord], ScanResult | None]:
    """Load the model, list the dataset and scan this job's range (None for an empty shard)."""
    resolve = functools.partial(resolve_under_roots, roots=settings.dataset_roots)
    loaded = load_model(ModelSpec.from_dict(plan.model_spec), resolve_path=resolve)
    root = resolve(plan.dataset_spec["path"])
    records = list_images(root, plan.dataset_spec.get("files"))
    start, stop = shard_range(len(records), plan.shard, plan.shard_count, align=settings.batch_size)
    state.record_range(sessions, plan.job_id, start, stop)
    if start == stop:
        return records, None
    result = scan(loaded, root, records[start:stop], plan.layers, k=plan.k, score=plan.score,
                  neuron=tuple(plan.neuron) if plan.neuron is not None else None,
                  batch_size=settings.batch_size, device=settings.device,
                  num_workers=settings.loader_workers, progress=progress, should_cancel=should_cancel)
    return records, result


def _merge_if_last(plan: JobPlan, sessions: sessionmaker, records: list[ImageRecord],
                   result: ScanResult | None) -> ScanResult | None:
    """Save this shard's state; if it completes the set, return the merge of all shards."""
    if not state.complete_shard(sessions, plan, result.to_state() if result is not None else None):
        return None
    merged = functools.reduce(ScanResult.merge, map(ScanResult.from_state, state.shard_states(sessions, plan.index_id)))
    # Every shard listed the dataset itself; if it changed in between, the ids no longer agree.
    if [outcome.record.path for outcome in sorted(merged.images, key=_image_id)] != [r.path for r in records]:
        raise DatasetError("the dataset changed while its shards were being scanned; submit the index again")
    return merged


def _require_a_readable_image(result: ScanResult) -> None:
    """An index over nothing but unreadable files would be an empty "succeeded"; fail it instead,
    saying why the files were skipped."""
    if any(outcome.skipped is None for outcome in result.images):
        return
    summary = ", ".join(f"{count} {reason}" for reason, count in _skip_reasons(result.images).most_common())
    raise DatasetError(f"none of the {len(result.images)} images could be read ({summary})")


def _skip_reasons(outcomes) -> Counter:
    """Skipped images by reason; reasons carry details after a colon ("unreadable: <decoder
    message>"), counted by their kind."""
    return Counter(o.skipped.split(":", 1)[0] for o in outcomes if o.skipped)


def _image_id(outcome) -> int:
    return outcome.record.id


def result_rows(result: ScanResult) -> dict:
    """``write_index_result``'s keyword arguments for one (possibly merged) scan result."""
    outcomes = sorted(result.images, key=_image_id)
    layers = [
        {"name": info.name, "type": info.type, "position": position, "channels": info.channels,
         "height": info.height, "width": info.width, "rf_size": info.receptive_field.size,
         "rf_jump": info.receptive_field.jump, "rf_offset": info.receptive_field.offset}
        for position, info in enumerate(result.layers.values())
    ]
    images = [
        {"id": o.record.id, "path": o.record.path, "label": o.record.label, "width": o.width,
         "height": o.height, "skipped_reason": o.skipped}
        for o in outcomes
    ]
    skipped = _skip_reasons(outcomes)
    return {"preprocess": result.preprocess.to_dict(), "pretrained": result.pretrained,
            "device": result.device, "seconds": result.seconds, "layers": layers, "images": images,
            "activations": activation_rows(result), "skipped_reasons": dict(skipped)}


def activation_rows(result: ScanResult) -> Iterator[tuple]:
    """One tuple per filled top-k slot, in the store's order: (layer, unit, rank, value, image_id,
    y, x, unclipped model-input box, clipped original-image box)."""
    sizes = {o.record.id: (o.width, o.height) for o in result.images}
    for name, info in result.layers.items():
        field = info.receptive_field
        top = result.topk[name].result()
        columns = zip(top.values.tolist(), top.image_ids.tolist(), top.ys.tolist(), top.xs.tolist())
        for unit, (values, image_ids, ys, xs) in enumerate(columns):
            for rank, (value, image_id, y, x) in enumerate(zip(values, image_ids, ys, xs)):
                if image_id < 0:  # empty slot: fewer images than k
                    continue
                box = field.input_box(y, x)
                width, height = sizes[image_id]
                yield (name, unit, rank, value, image_id, y, x, *box,
                       *original_box(box, width, height, result.preprocess))
