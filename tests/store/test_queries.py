"""Index, job and shard-state queries; deletes that take everything an index owns."""

from __future__ import annotations

from datetime import timezone

import pytest
from sqlalchemy import delete, func, select, text

from service.store import repository
from service.store.db import session_scope
from service.store.models import Activation, Image, Index, Layer, ScanJob, ShardState

OWNED = (Layer, Image, Activation, ScanJob, ShardState)


def owned_rows(session, index_id: int) -> dict[str, int]:
    return {model.__tablename__: session.scalar(select(func.count()).select_from(model)
                                                .where(model.index_id == index_id))
            for model in OWNED}


@pytest.fixture
def full_index(engine, sessions, index_id, result) -> int:
    """An index with result rows, a job and a saved shard state."""
    repository.write_index_result(engine, index_id, **result)
    with session_scope(sessions) as session:
        repository.create_job(session, index_id, shard=0, shard_count=2)
        repository.save_shard_state(session, index_id, 0, b"state")
    return index_id


def new_index(session, name: str) -> Index:
    return repository.create_index(session, name=name, model_spec={"arch": "resnet18"},
                                   dataset_spec={"files": ["a.jpg"]}, layers=None, k=9, score="mean",
                                   neuron=(3, 4))


def test_create_index_stores_the_request_and_starts_queued(sessions):
    with session_scope(sessions) as session:
        index_id = new_index(session, "first").id
    with session_scope(sessions) as session:
        index = repository.get_index(session, index_id)
        assert (index.status, index.k, index.score, index.neuron, index.layers_requested) == (
            "queued", 9, "mean", [3, 4], None)
        assert (index.images_total, index.skipped_reasons, index.started_at) == (0, {}, None)
        assert index.created_at.tzinfo == timezone.utc
        assert repository.get_index(session, index_id + 1000) is None


def test_null_json_fields_are_sql_null(engine, sessions):
    with session_scope(sessions) as session:
        index_id = new_index(session, "x").id
    with engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM indexes WHERE layers_requested IS NULL "
                                 "AND preprocess IS NULL AND id = :id"), {"id": index_id}).scalar() == 1


def test_list_indexes_pages_newest_first_with_the_total(sessions):
    with session_scope(sessions) as session:
        ids = [new_index(session, f"index {i}").id for i in range(5)]
    with session_scope(sessions) as session:
        first, total = repository.list_indexes(session, limit=2, offset=0)
        last, _ = repository.list_indexes(session, limit=2, offset=4)
        beyond, total_beyond = repository.list_indexes(session, limit=2, offset=10)
    assert total == total_beyond == 5
    assert [index.id for index in first] == ids[::-1][:2]
    assert [index.id for index in last] == [ids[0]]
    assert beyond == []


def test_delete_index_removes_every_row_it_owns(sessions, full_index):
    with session_scope(sessions) as session:
        assert all(owned_rows(session, full_index).values())
        assert repository.delete_index(session, full_index) is True
    with session_scope(sessions) as session:
        assert repository.get_index(session, full_index) is None
        assert not any(owned_rows(session, full_index).values())
        assert repository.delete_index(session, full_index) is False


def test_ids_of_deleted_indexes_are_never_reused(sessions):
    """An old URL must not silently name a newer index (SQLite reuses the max rowid otherwise)."""
    with session_scope(sessions) as session:
        newest = new_index(session, "newest").id
        repository.delete_index(session, newest)
    with session_scope(sessions) as session:
        assert new_index(session, "after").id > newest


def test_deleting_the_index_row_directly_cascades_in_the_database(sessions, full_index):
    """ON DELETE CASCADE itself (SQLite: foreign keys switched on), not the repository's code."""
    with session_scope(sessions) as session:
        session.execute(delete(Index).where(Index.id == full_index))
    with session_scope(sessions) as session:
        assert not any(owned_rows(session, full_index).values())


def test_deleting_one_index_leaves_the_others(engine, sessions, full_index, result):
    with session_scope(sessions) as session:
        other = new_index(session, "other").id
    repository.write_index_result(engine, other, **result)
    with session_scope(sessions) as session:
        repository.delete_index(session, full_index)
    with session_scope(sessions) as session:
        assert owned_rows(session, other)["activations"] == len(result["activations"])


def test_job_lifecycle(sessions, index_id):
    with session_scope(sessions) as session:
        job = repository.create_job(session, index_id)
        assert (len(job.id), job.status, job.attempt, job.shard, job.shard_count) == (32, "queued", 0, None, 1)
        assert repository.set_job_status(session, job.id, "running") is True
        assert (job.status, job.attempt, job.finished_at) == ("running", 1, None)
        assert job.started_at.tzinfo == timezone.utc
        repository.record_progress(session, job.id, 40, 100, 12.5)
        assert (job.progress_done, job.progress_total, job.rate) == (40, 100, 12.5)
        assert repository.set_job_status(session, job.id, "failed", error="boom", expected=("running",))
        assert (job.status, job.error) == ("failed", "boom") and job.finished_at >= job.started_at
    with session_scope(sessions) as session:
        assert repository.get_job(session, job.id).status == "failed"
        assert repository.get_job(session, "0" * 32) is None


def test_status_change_from_an_unexpected_state_changes_nothing(sessions, index_id):
    with session_scope(sessions) as session:
        job = repository.create_job(session, index_id)
        repository.set_job_status(session, job.id, "cancelled")
        assert repository.set_job_status(session, job.id, "running", expected=("queued",)) is False
        assert (job.status, job.attempt) == ("cancelled", 0)
        assert repository.set_index_status(session, index_id, "succeeded", expected=("queued",)) is False
        assert repository.set_job_status(session, "missing", "failed") is False


def test_unknown_status_is_refused(sessions, index_id):
    with session_scope(sessions) as session, pytest.raises(ValueError):
        repository.set_index_status(session, index_id, "done")


def test_index_failure_keeps_the_error_text(sessions, index_id):
    with session_scope(sessions) as session:
        repository.set_index_status(session, index_id, "failed", error="weights-mismatch: layer4")
    with session_scope(sessions) as session:
        index = repository.get_index(session, index_id)
        assert (index.status, index.error) == ("failed", "weights-mismatch: layer4")
        assert index.finished_at is not None


def test_jobs_of_an_index_come_in_shard_order(sessions, index_id):
    with session_scope(sessions) as session:
        made = [repository.create_job(session, index_id, shard=shard, shard_count=3,
                                      image_start=shard * 10, image_stop=shard * 10 + 10)
                for shard in (2, 0, 1)]
        repository.set_job_status(session, made[0].id, "running")
    with session_scope(sessions) as session:
        assert [job.shard for job in repository.jobs_of_index(session, index_id)] == [0, 1, 2]
        assert [job.id for job in repository.jobs_with_status(session, ["running"])] == [made[0].id]
        assert len(repository.jobs_with_status(session, ["queued", "running"])) == 3


def test_shard_states_save_replace_load_clear(sessions, index_id):
    with session_scope(sessions) as session:
        repository.save_shard_state(session, index_id, 1, b"\x00one")
        repository.save_shard_state(session, index_id, 0, b"zero")
        repository.save_shard_state(session, index_id, 1, b"\x00retried")
    with session_scope(sessions) as session:
        assert repository.load_shard_states(session, index_id) == {0: b"zero", 1: b"\x00retried"}
        assert list(repository.load_shard_states(session, index_id)) == [0, 1]
        assert repository.clear_shard_states(session, index_id) == 2
        assert repository.load_shard_states(session, index_id) == {}


def test_session_scope_rolls_back_on_error(sessions):
    with pytest.raises(RuntimeError), session_scope(sessions) as session:
        new_index(session, "doomed")
        raise RuntimeError("request failed")
    with session_scope(sessions) as session:
        assert repository.list_indexes(session, limit=10, offset=0) == ([], 0)
