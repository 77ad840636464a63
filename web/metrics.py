"""``GET /metrics``: Prometheus text format, guarded by an admin token or ``GENQUEUE_METRICS_TOKEN``.

Two sources, so the numbers are right with several gunicorn processes and several worker hosts:

- **Postgres, read at scrape time** (:class:`PostgresCollector`): everything Postgres knows — jobs by kind and status,
  queue depth and oldest queued age, job duration and queue-wait histograms, tokens generated and tokens/s, training
  steps, workers alive by queue and device, GPU memory (each CUDA worker's heartbeat records it), webhook deliveries
  by outcome. Every web process computes the same cluster-wide values, whichever one Prometheus happens to reach, and
  nothing is lost when a process or a worker host restarts.
- **HTTP requests** (``genqueue_http_requests_total``) happen inside each gunicorn process. ``genqueue web`` / ``up``
  run gunicorn with ``web/gunicorn_conf.py``, which sets ``PROMETHEUS_MULTIPROC_DIR`` before the workers start:
  prometheus-client's multiprocess mode then keeps each process's counts in a file there and a scrape sums them
  (:class:`~prometheus_client.multiprocess.MultiProcessCollector`). Without that variable (the Flask dev server,
  the tests) the counter lives in the one process.
"""

from __future__ import annotations

import hmac
import logging
import os

from flask import Blueprint, Flask, Response, g, request
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from sqlalchemy import text

from shared.db import session_scope
from shared.kinds import TRAINING_KINDS
from shared.settings import get_settings
from web.auth import authenticate
from web.errors import Forbidden, Unauthorized

logger = logging.getLogger(__name__)

bp = Blueprint("metrics", __name__)

HTTP_REQUESTS = Counter(
    "genqueue_http_requests",
    "HTTP requests served, by Flask endpoint, method and status",
    ["endpoint", "method", "status"],
)
# Seconds: from a second to a day (training jobs run for hours).
BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 24 * 3600)


def _histograms(s, name: str, doc: str, seconds_sql: str, where: str) -> HistogramMetricFamily:
    """A histogram by kind computed in one query: cumulative bucket counts, count and sum of ``seconds_sql``."""
    buckets = ", ".join(f"count(*) FILTER (WHERE d <= {b}) AS b{i}" for i, b in enumerate(BUCKETS))
    rows = s.execute(
        text(
            f"SELECT kind, {buckets}, count(*) AS n, coalesce(sum(d), 0) AS total "
            f"FROM (SELECT kind, extract(epoch FROM {seconds_sql}) AS d FROM jobs WHERE {where}) t GROUP BY kind"
        )
    ).mappings()
    family = HistogramMetricFamily(name, doc, labels=["kind"])
    for r in rows:
        counts = [(str(float(b)), r[f"b{i}"]) for i, b in enumerate(BUCKETS)] + [("+Inf", r["n"])]
        family.add_metric([r["kind"]], counts, float(r["total"]))
    return family


class PostgresCollector:
    """The cluster's state from Postgres, computed when Prometheus scrapes."""

    def collect(self):
        with session_scope() as s:
            yield from self._jobs(s)
            yield from self._work(s)
            yield from self._workers(s)
            yield from self._webhooks(s)

    def _jobs(self, s):
        jobs = GaugeMetricFamily("genqueue_jobs", "Jobs by kind and status", labels=["kind", "status"])
        for kind, status, n in s.execute(text("SELECT kind, status, count(*) FROM jobs GROUP BY kind, status")):
            jobs.add_metric([kind, status], n)
        yield jobs
        depth = GaugeMetricFamily("genqueue_queue_depth", "Jobs waiting in `queued`, by queue", labels=["queue"])
        oldest = GaugeMetricFamily(
            "genqueue_queue_oldest_age_seconds", "Age of the oldest `queued` job, by queue", labels=["queue"]
        )
        rows = s.execute(
            text(
                "SELECT queue, count(*), extract(epoch FROM now() - min(created_at)) FROM jobs "
                "WHERE status = 'queued' GROUP BY queue"
            )
        )
        for queue, n, age in rows:
            depth.add_metric([queue], n)
            oldest.add_metric([queue], float(age))
        yield depth
        yield oldest
        yield _histograms(
            s,
            "genqueue_job_duration_seconds",
            "Run time of finished jobs (started → finished), by kind",
            "finished_at - started_at",
            "status IN ('succeeded', 'failed', 'cancelled') AND started_at IS NOT NULL AND finished_at IS NOT NULL",
        )
        yield _histograms(
            s,
            "genqueue_job_queue_wait_seconds",
            "Time from submission to first start, by kind",
            "started_at - created_at",
            "started_at IS NOT NULL",
        )

    def _work(self, s):
        tokens = CounterMetricFamily("genqueue_tokens_generated", "New tokens in stored text.generate results")
        tokens.add_metric([], s.execute(text("SELECT coalesce(sum(tokens), 0) FROM generation_results")).scalar())
        yield tokens
        rate = GaugeMetricFamily("genqueue_tokens_per_second", "Tokens generated per second over the last minute")
        recent = s.execute(
            text(
                "SELECT coalesce(sum(tokens), 0) FROM generation_results"
                " WHERE created_at > now() - interval '60 seconds'"
            )
        ).scalar()
        rate.add_metric([], float(recent) / 60.0)
        yield rate
        steps = CounterMetricFamily("genqueue_training_steps", "Training steps done, by kind", labels=["kind"])
        for kind, n in s.execute(
            text("SELECT kind, coalesce(sum(progress_done), 0) FROM jobs WHERE kind = ANY(:kinds) GROUP BY kind"),
            {"kinds": list(TRAINING_KINDS)},  # the registry's kinds that train a model
        ):
            steps.add_metric([kind], n)
        yield steps

    def _workers(self, s):
        alive = GaugeMetricFamily(
            "genqueue_workers_alive",
            "Workers whose heartbeat is recent, by queue and device",
            labels=["queue", "device"],
        )
        gpu = GaugeMetricFamily(
            "genqueue_gpu_memory_used_bytes",
            "GPU memory in use on each CUDA worker's device",
            labels=["worker", "device"],
        )
        rows = s.execute(
            text(
                "SELECT id, queues, device, gpu_memory_bytes FROM workers "
                "WHERE last_seen > now() - make_interval(secs => :t)"
            ),
            {"t": get_settings().lease_seconds},
        ).all()
        counts: dict[tuple[str, str], int] = {}
        for worker_id, queues, device, gpu_bytes in rows:
            for queue in filter(None, (q.strip() for q in queues.split(","))):
                counts[(queue, device)] = counts.get((queue, device), 0) + 1
            if gpu_bytes is not None:
                gpu.add_metric([worker_id, device], gpu_bytes)
        for labels, n in sorted(counts.items()):
            alive.add_metric(list(labels), n)
        yield alive
        yield gpu

    def _webhooks(self, s):
        attempts = CounterMetricFamily(
            "genqueue_webhook_attempts", "Webhook delivery attempts, by outcome", labels=["outcome"]
        )
        for outcome, n in s.execute(text("SELECT outcome, count(*) FROM webhook_attempts GROUP BY outcome")):
            attempts.add_metric([outcome], n)
        yield attempts
        deliveries = GaugeMetricFamily(
            "genqueue_webhook_deliveries", "Webhook deliveries, by status", labels=["status"]
        )
        for status, n in s.execute(text("SELECT status, count(*) FROM webhook_deliveries GROUP BY status")):
            deliveries.add_metric([status], n)
        yield deliveries


def _registry() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PostgresCollector())
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(HTTP_REQUESTS)
    return registry


def _authorize() -> None:
    """``GENQUEUE_METRICS_TOKEN`` (compared in constant time), else an admin's bearer token."""
    header = request.headers.get("Authorization", "")
    token = header[7:].strip() if header.lower().startswith("bearer ") else ""
    wanted = get_settings().metrics_token
    if wanted and token and hmac.compare_digest(token.encode(), wanted.encode()):
        return
    if not token:
        raise Unauthorized("missing bearer token (an admin token or GENQUEUE_METRICS_TOKEN)")
    authenticate()
    if not g.user.is_admin:
        raise Forbidden("/metrics needs an admin token or GENQUEUE_METRICS_TOKEN", code="forbidden")


@bp.get("/metrics")
def metrics() -> Response:
    _authorize()
    return Response(generate_latest(_registry()), mimetype=CONTENT_TYPE_LATEST)


def _count_request(response: Response) -> Response:
    endpoint = request.endpoint or "unmatched"  # unmatched paths share one label: no unbounded label values
    if endpoint != "static":
        HTTP_REQUESTS.labels(endpoint, request.method, str(response.status_code)).inc()
    return response


def init_app(app: Flask) -> None:
    """Register ``/metrics`` and count every request the app answers."""
    app.register_blueprint(bp)
    app.after_request(_count_request)
