"""The scan task in this process on SQLite: rows against the engine, errors, the embedded queue."""

from __future__ import annotations

import json
import logging

from service.jobs import state
from service.jobs.queue import EmbeddedQueue
from service.jobs.task import run_scan_job, shard_range, submit_index
from service.logs import JsonFormatter
from service.scan.geometry import original_box
from service.store.db import session_scope
from service.store.repository import get_index, get_job, jobs_of_index, set_index_status

from .conftest import INDEX_FIELDS, LAYERS, PHOTOS, SLOW_FIELDS, result_row_count, stored_rows, wait_for


class RecordingQueue:
    """Takes jobs without running them, so a test decides what runs them and when."""

    def __init__(self):
        self.enqueued: list[tuple[int, str]] = []

    def enqueue_scan(self, index_id: int, job_id: str) -> None:
        self.enqueued.append((index_id, job_id))


def test_shard_ranges_tile_the_dataset_in_near_equal_consecutive_parts():
    assert [shard_range(12, i, 2) for i in range(2)] == [(0, 6), (6, 12)]
    assert [shard_range(10, i, 3) for i in range(3)] == [(0, 3), (3, 6), (6, 10)]
    assert [shard_range(2, i, 3) for i in range(3)] == [(0, 0), (0, 1), (1, 2)]
    assert shard_range(7, None, 1) == (0, 7)


def test_shard_boundaries_fall_on_batch_multiples_so_shards_form_a_single_scans_batches():
    assert [shard_range(12, i, 2, align=4) for i in range(2)] == [(0, 4), (4, 12)]
    assert [shard_range(10, i, 3, align=4) for i in range(3)] == [(0, 4), (4, 8), (8, 10)]
    assert [shard_range(100, i, 4, align=8) for i in range(4)] == [(0, 24), (24, 48), (48, 72), (72, 100)]


def test_scan_job_writes_the_engine_top_k_with_both_boxes(job_settings, migrated_sqlite, sessions_for,
                                                          direct_result, direct_rows):
    settings = job_settings(migrated_sqlite, None)
    sessions = sessions_for(settings)
    index, (job,) = submit_index(sessions, RecordingQueue(), **INDEX_FIELDS)

    run_scan_job(job.id, settings)

    rows = stored_rows(sessions, index.id)
    assert rows == direct_rows
    assert [layer[0] for layer in rows["layers"]] == LAYERS
    # Check the glue against the engine's own tensors, not only against result_rows.
    name = LAYERS[1]
    top = direct_result.topk[name].result()
    field = direct_result.layers[name].receptive_field
    unit_rows = [r for r in rows["activations"] if r[0] == name and r[1] == 7]
    assert [r[3] for r in unit_rows] == top.values[7].tolist()
    assert [(r[4], r[5], r[6]) for r in unit_rows] == list(zip(top.image_ids[7].tolist(), top.ys[7].tolist(),
                                                              top.xs[7].tolist()))
    for _, _, _, _, image_id, y, x, *boxes in unit_rows:
        in_box, box = tuple(boxes[:4]), tuple(boxes[4:])
        x0, y0 = field.offset + x * field.jump, field.offset + y * field.jump
        assert in_box == (x0, y0, x0 + field.size, y0 + field.size)
        _, _, _, width, height, _ = rows["images"][image_id]
        assert box == original_box(in_box, width, height, direct_result.preprocess)
        assert 0 <= box[0] < box[2] <= width and 0 <= box[1] < box[3] <= height
    with session_scope(sessions) as session:
        done = get_index(session, index.id)
        assert (done.status, done.images_total, done.images_scanned, done.device) == ("succeeded", PHOTOS, PHOTOS, "cpu")
        finished = get_job(session, job.id)
        assert (finished.status, finished.attempt, finished.progress_done, finished.progress_total) == (
            "succeeded", 1, PHOTOS, PHOTOS)
    run_scan_job(job.id, settings)  # a duplicate delivery finds the job done and changes nothing
    assert stored_rows(sessions, index.id) == direct_rows


def test_bad_dataset_fails_the_job_with_its_message_and_writes_no_rows(job_settings, migrated_sqlite, sessions_for):
    settings = job_settings(migrated_sqlite, None)
    sessions = sessions_for(settings)
    index, (job,) = submit_index(sessions, RecordingQueue(), **{**INDEX_FIELDS, "dataset_spec": {"path": "nowhere"}})

    run_scan_job(job.id, settings)  # a user error is recorded, not raised

    with session_scope(sessions) as session:
        failed = get_index(session, index.id)
        assert failed.status == "failed" and "'nowhere' does not exist" in failed.error
        assert get_job(session, job.id).error == failed.error
    assert result_row_count(sessions, index.id) == 0


def test_embedded_queue_fails_orphaned_running_jobs_and_runs_orphaned_queued_ones(
        job_settings, migrated_sqlite, sessions_for, direct_rows):
    settings = job_settings(migrated_sqlite, None)
    sessions = sessions_for(settings)
    crashed, (crashed_job,) = submit_index(sessions, RecordingQueue(), **INDEX_FIELDS)
    state.claim(sessions, crashed_job.id)  # "running" in a process that no longer exists
    waiting, _ = submit_index(sessions, RecordingQueue(), **INDEX_FIELDS)

    queue = EmbeddedQueue(settings, sessions)  # as an API process starting up
    try:
        assert queue.wait(timeout=120)
    finally:
        queue.close()

    with session_scope(sessions) as session:
        assert get_index(session, crashed.id).status == "failed"
        assert "exited before it finished" in get_index(session, crashed.id).error
        assert get_index(session, waiting.id).status == "succeeded"
    assert result_row_count(sessions, crashed.id) == 0
    assert stored_rows(sessions, waiting.id) == direct_rows


def test_embedded_queue_runs_shards_in_turn_and_cancels_a_queued_job(job_settings, migrated_sqlite, sessions_for,
                                                                      direct_rows):
    settings = job_settings(migrated_sqlite, None)
    sessions = sessions_for(settings)
    queue = EmbeddedQueue(settings, sessions)
    try:
        sharded, jobs = submit_index(sessions, queue, shards=2, **INDEX_FIELDS)
        cancelled, (job,) = submit_index(sessions, queue, **INDEX_FIELDS)
        queue.cancel(job.id)  # still behind the two shards
        assert queue.is_cancelled(job.id)
        assert queue.wait(timeout=120)
    finally:
        queue.close()

    assert stored_rows(sessions, sharded.id) == direct_rows
    with session_scope(sessions) as session:
        assert [(j.image_start, j.image_stop, j.status) for j in jobs_of_index(session, sharded.id)] == [
            (0, 4, "succeeded"), (4, 12, "succeeded")]
        assert get_index(session, cancelled.id).status == "cancelled"
    assert result_row_count(sessions, cancelled.id) == 0


def test_embedded_queue_cancels_a_running_scan_between_batches(job_settings, migrated_sqlite, sessions_for):
    settings = job_settings(migrated_sqlite, None, batch_size=1)
    sessions = sessions_for(settings)
    queue = EmbeddedQueue(settings, sessions)
    try:
        index, (job,) = submit_index(sessions, queue, **SLOW_FIELDS)
        wait_for(lambda: _job(sessions, job.id).progress_done > 0, 60, "scan progress")
        queue.cancel(job.id)
        assert queue.wait(timeout=30)
    finally:
        queue.close()

    stopped = _job(sessions, job.id)
    assert stopped.status == "cancelled" and stopped.progress_done < stopped.progress_total
    assert result_row_count(sessions, index.id) == 0


def _job(sessions, job_id):
    with session_scope(sessions) as session:
        return get_job(session, job_id)


def test_cancel_landing_between_the_last_check_and_the_write_wins(job_settings, migrated_sqlite, sessions_for,
                                                                  monkeypatch):
    """The result write itself requires a running index, so a late cancel leaves no rows."""
    settings = job_settings(migrated_sqlite, None)
    sessions = sessions_for(settings)
    index, (job,) = submit_index(sessions, RecordingQueue(), **INDEX_FIELDS)

    def cancel_just_after_the_check(sessions_, job_id):
        with session_scope(sessions_) as session:
            set_index_status(session, index.id, "cancelled", error="cancelled by a client")

    monkeypatch.setattr(state, "ensure_running", cancel_just_after_the_check)
    run_scan_job(job.id, settings)

    with session_scope(sessions) as session:
        assert get_index(session, index.id).status == "cancelled"
        assert get_job(session, job.id).status == "cancelled"
    assert result_row_count(sessions, index.id) == 0


def test_scan_job_logs_start_and_end_as_json_with_the_index_and_job_ids(job_settings, migrated_sqlite, sessions_for,
                                                                        caplog):
    settings = job_settings(migrated_sqlite, None)
    sessions = sessions_for(settings)
    index, (job,) = submit_index(sessions, RecordingQueue(), **{**INDEX_FIELDS, "dataset_spec": {"path": "nowhere"}})

    with caplog.at_level(logging.INFO, logger="service.jobs.task"):
        run_scan_job(job.id, settings)

    lines = [json.loads(JsonFormatter().format(r)) for r in caplog.records if r.name == "service.jobs.task"]
    assert [line["msg"] for line in lines] == ["scan job started", "scan job failed"]
    assert all(line["index_id"] == index.id and line["job_id"] == job.id for line in lines)
    assert "'nowhere' does not exist" in lines[-1]["error"]


def test_a_dataset_of_only_unreadable_files_fails_the_index_saying_why(job_settings, migrated_sqlite, sessions_for,
                                                                       tmp_path, assets_dir):
    junk = tmp_path / "junk-root" / "junk"
    junk.mkdir(parents=True)
    (junk / "a.jpg").write_bytes(b"not a jpeg")
    (junk / "b.png").write_text("nor a png")
    settings = job_settings(migrated_sqlite, None, dataset_roots=(tmp_path / "junk-root", assets_dir))
    sessions = sessions_for(settings)
    index, (job,) = submit_index(sessions, RecordingQueue(), **{**INDEX_FIELDS, "dataset_spec": {"path": "junk"}})

    run_scan_job(job.id, settings)

    with session_scope(sessions) as session:
        failed = get_index(session, index.id)
        assert failed.status == "failed"
        assert "none of the 2 images could be read" in failed.error
    assert result_row_count(sessions, index.id) == 0


def test_an_index_submitted_without_a_name_is_named_after_its_model_and_dataset(job_settings, migrated_sqlite,
                                                                                sessions_for):
    sessions = sessions_for(job_settings(migrated_sqlite, None))
    index, _ = submit_index(sessions, RecordingQueue(), **{**INDEX_FIELDS, "name": None})
    assert index.name == "mobilenet_v2 on photos"
