"""Store rows as the JSON shapes ``openapi.yaml`` declares (one function per schema)."""

from __future__ import annotations

from datetime import datetime

from service.store.models import Activation, Image, Index, Layer, ScanJob


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def index_json(index: Index, jobs: list[ScanJob]) -> dict:
    pre = index.preprocess
    return {
        "id": index.id,
        "name": index.name,
        "status": index.status,
        "model": index.model_spec,
        "dataset": index.dataset_spec,
        "layers_requested": index.layers_requested,
        "k": index.k,
        "score": index.score,
        "neuron": {"y": index.neuron[0], "x": index.neuron[1]} if index.neuron else None,
        "preprocess": {key: pre.get(key) for key in ("resize", "crop", "mean", "std", "input_size")} if pre else None,
        "pretrained": index.pretrained,
        "images": {
            "total": index.images_total,
            "scanned": index.images_scanned,
            "skipped": index.images_skipped,
            "skipped_reasons": index.skipped_reasons or {},
        },
        "created_at": _time(index.created_at),
        "started_at": _time(index.started_at),
        "finished_at": _time(index.finished_at),
        "scan_seconds": index.scan_seconds,
        "device": index.device,
        "error": index.error,
        "job_ids": [job.id for job in jobs],
    }


def job_json(job: ScanJob) -> dict:
    done, total, rate = job.progress_done, job.progress_total, job.rate
    eta = (total - done) / rate if rate and total is not None and done is not None and job.status == "running" else None
    return {
        "id": job.id,
        "index_id": job.index_id,
        "status": job.status,
        "shard": job.shard,
        "shard_count": job.shard_count,
        "progress": {"done": done, "total": total, "rate": rate, "eta_seconds": eta},
        "error": job.error,
        "attempt": job.attempt,
        "created_at": _time(job.created_at),
        "started_at": _time(job.started_at),
        "finished_at": _time(job.finished_at),
    }


def layer_json(layer: Layer) -> dict:
    return {
        "name": layer.name,
        "type": layer.type,
        "position": layer.position,
        "shape": {"channels": layer.channels, "height": layer.height, "width": layer.width},
        "receptive_field": {"size": layer.rf_size, "jump": layer.rf_jump, "offset": layer.rf_offset},
    }


def image_json(image: Image) -> dict:
    return {"id": image.id, "path": image.path, "label": image.label, "width": image.width, "height": image.height}


def _box(x0: int, y0: int, x1: int, y1: int) -> dict:
    return {"x0": x0, "y0": y0, "x1": x1, "y1": y1}


def entry_json(a: Activation) -> dict:
    """The parts of a top-k entry that do not depend on whether the image is shown in full."""
    return {
        "rank": a.rank,
        "value": a.value,
        "position": {"y": a.y, "x": a.x},
        "box": _box(a.x0, a.y0, a.x1, a.y1),
    }


def top_entry_json(a: Activation, image: Image) -> dict:
    return {**entry_json(a), "image": image_json(image), "input_box": _box(a.in_x0, a.in_y0, a.in_x1, a.in_y1)}
