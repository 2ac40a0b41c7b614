"""Indexes: create (queued scan), list, read, delete; and jobs: progress and cancel."""

from __future__ import annotations

from flask import Blueprint, g, request, url_for

from service.api.context import api, db, require_write_access
from service.api.lookup import index_or_404, job_or_404
from service.api.problems import Problem
from service.api.serialize import index_json, job_json
from service.api.spec_checks import checked_dataset, checked_model
from service.jobs.queue import QueueUnavailable
from service.jobs.state import LIVE
from service.store import repository

bp = Blueprint("indexes", __name__)
# Checked before the request body is validated: without a key, a client learns nothing about it.
bp.before_request(require_write_access)


def _index_body(index) -> dict:
    return index_json(index, repository.jobs_of_index(db(), index.id))


@bp.get("/v1/indexes")
def list_indexes():
    query = request.openapi.parameters.query
    limit, offset = query["limit"], query["offset"]
    indexes, total = repository.list_indexes(db(), limit=limit, offset=offset)
    return {"items": [_index_body(index) for index in indexes], "total": total, "limit": limit, "offset": offset}


@bp.post("/v1/indexes")
def create_index():
    """Check everything a client can get wrong first, so it is a 4xx here and not a failed job."""
    from service.jobs.task import submit_index  # pulls in the scan package; only on writes

    body = request.openapi.body
    model_spec = checked_model(body["model"], body.get("layers"))
    dataset_spec = checked_dataset(body["dataset"])
    neuron = body.get("neuron")
    index, jobs = submit_index(
        api().sessions, api().queue,
        name=body.get("name"),
        model_spec=model_spec, dataset_spec=dataset_spec, layers=body.get("layers"),
        k=body["k"], score=body["score"], neuron=[neuron["y"], neuron["x"]] if neuron else None,
    )
    g.log_fields = {"index_id": index.id, "job_id": jobs[0].id}
    location = url_for("indexes.get_index", index_id=index.id)
    created = {"index": index_json(index, jobs), "job": job_json(jobs[0])}
    return created, 202, {"Location": location}


def _settle(index_id: int, status: str) -> None:
    """Before answering with a live status, let the queue fail jobs whose worker died: a client
    polling a scan must learn that it is dead even when no worker is left to notice."""
    if status not in LIVE:
        return
    try:
        if api().queue.reap(index_id):
            db().expire_all()
    except QueueUnavailable:
        pass  # the stored state is still the best answer while Redis is down


@bp.get("/v1/indexes/<index_id>")
def get_index(index_id):
    index = index_or_404(request.openapi.parameters.path["index_id"])
    _settle(index.id, index.status)
    return _index_body(index)


@bp.delete("/v1/indexes/<index_id>")
def delete_index(index_id):
    """Stop the index's live jobs first, so no worker writes results for a deleted index."""
    index = index_or_404(request.openapi.parameters.path["index_id"])
    for job in repository.jobs_of_index(db(), index.id):
        if job.status in LIVE:
            api().queue.cancel(job.id)
    repository.delete_index(db(), index.id)
    db().commit()
    api().ready.forget(index.id)
    return "", 204


@bp.get("/v1/jobs/<job_id>")
def get_job(job_id):
    job = job_or_404(request.openapi.parameters.path["job_id"])
    _settle(job.index_id, job.status)
    return job_json(job)


@bp.post("/v1/jobs/<job_id>/cancel")
def cancel_job(job_id):
    job = job_or_404(request.openapi.parameters.path["job_id"])
    if job.status not in LIVE:
        raise Problem(409, "job-finished", f"job {job.id} is already {job.status}; only queued or running "
                      "jobs can be cancelled", job_status=job.status)
    api().queue.cancel(job.id)
    db().refresh(job)
    return job_json(job), 202
