"""One JSON log line per request and the Prometheus metrics behind ``/metrics``.

Log lines carry the index and job ids from the URL, so an operator can follow one index through
API and worker logs with a single grep. Metrics live in a registry per app (no global state):
request latency by route template (not raw path, which would explode label cardinality), and, read
from the queue and the job rows at scrape time, queue depth and the scan throughput of running jobs.
Under ``unitscope serve`` (gunicorn, possibly several workers) ``PROMETHEUS_MULTIPROC_DIR`` is set
before prometheus_client is imported, the histogram lives in per-process files there, and every
scrape sums all workers' files, whichever worker answers it. Without it (tests, a bare
``create_app``) the histogram lives in the app's own registry.
"""

from __future__ import annotations

import logging
import os
import time

from flask import Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.core import GaugeMetricFamily

from service.api.context import ApiContext
from service.jobs.queue import QueueUnavailable
from service.logs import use_json_logs
from service.store import repository

access_log = logging.getLogger("unitscope.access")

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_URL_IDS = ("index_id", "job_id", "image_id")


class _QueueCollector:
    """Scrape-time gauges: queue depth and what the running jobs report about their speed."""

    def __init__(self, ctx: ApiContext):
        self.ctx = ctx

    def collect(self):
        depth = GaugeMetricFamily("unitscope_queue_depth", "Scan jobs waiting in the queue")
        try:
            depth.add_metric([], self.ctx.queue.depth())
        except QueueUnavailable:
            depth.add_metric([], float("nan"))
        yield depth
        with self.ctx.sessions() as session:
            running = repository.jobs_with_status(session, ["running"])
        yield GaugeMetricFamily("unitscope_scan_jobs_running", "Scan jobs running now", value=len(running))
        yield GaugeMetricFamily("unitscope_scan_images_per_second",
                                "Scan throughput: sum of the running jobs' image rates",
                                value=sum(job.rate or 0.0 for job in running))


def multiprocess_dir() -> str | None:
    """The folder of the server's metric files, when this process writes its metrics there
    (prometheus_client picks file-backed values once, at import, from the same variable)."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path or values.ValueClass is values.MutexValue:
        return None
    return path


def install(app: Flask, ctx: ApiContext) -> None:
    """Time and log every request; expose ``/metrics``."""
    use_json_logs("unitscope.access", "unitscope.api")
    shared = multiprocess_dir()
    registry = CollectorRegistry()
    latency = Histogram("unitscope_http_request_duration_seconds", "HTTP request latency by route",
                        ["method", "endpoint", "status"], registry=None if shared else registry,
                        buckets=LATENCY_BUCKETS)
    if shared:  # the scrape reads every worker's files instead of this process's histogram
        MultiProcessCollector(registry, path=shared)
    registry.register(_QueueCollector(ctx))

    @app.before_request
    def _start_timer() -> None:
        g.request_started = time.perf_counter()

    @app.after_request
    def _observe(response: Response) -> Response:
        elapsed = time.perf_counter() - g.pop("request_started", time.perf_counter())
        endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
        latency.labels(request.method, endpoint, str(response.status_code)).observe(elapsed)
        fields = {"method": request.method, "path": request.path, "status": response.status_code,
                  "duration_ms": round(elapsed * 1000, 2)}
        openapi = getattr(request, "openapi", None)  # the typed values once the request was validated
        url_values = openapi.parameters.path if openapi is not None else request.view_args or {}
        fields.update({k: v for k, v in url_values.items() if k in _URL_IDS})
        fields.update(g.get("log_fields", {}))  # ids a view learned, e.g. of the index it created
        access_log.info("request", extra={"fields": fields})
        return response

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
