"""A job's metric series, downsampled in Postgres for long runs: min and max per step bucket, so spikes stay visible.

Each metric event holds several values by name (``{"train_loss": 2.1, "lr": 3e-4}``). A series is one name's
(step, value) points. A retried job may report a step twice (once per attempt): the newest point wins, as on the job
page. A series with more than ``2 * buckets`` points is cut into ``buckets`` equal step ranges; each contributes its
lowest and its highest point (at their own steps), plus the series' first and last point, so the curve keeps its
extremes and its end.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.orm import Session

SERIES_SQL = text("""
WITH pts AS (
    SELECT DISTINCT ON (kv.key, e.step) kv.key AS key, e.step AS step, (kv.value #>> '{}')::float8 AS v
    FROM job_events e CROSS JOIN LATERAL jsonb_each(e.data) AS kv
    WHERE e.job_id = :job_id AND e.type = 'metric' AND e.step IS NOT NULL AND jsonb_typeof(kv.value) = 'number'
    ORDER BY kv.key, e.step, e.id DESC
), spans AS (
    SELECT key, step, v, count(*) OVER w AS n, min(step) OVER w AS lo, max(step) OVER w AS hi
    FROM pts WINDOW w AS (PARTITION BY key)
), bucketed AS (
    SELECT key, step, v, n,
           CASE WHEN n <= 2 * :buckets THEN step
                ELSE floor((step - lo)::float8 * :buckets / (hi - lo + 1))::bigint END AS bucket,
           step = lo OR step = hi AS edge
    FROM spans
), ranked AS (
    SELECT key, step, v, n, edge,
           row_number() OVER (PARTITION BY key, bucket ORDER BY v, step) AS low,
           row_number() OVER (PARTITION BY key, bucket ORDER BY v DESC, step) AS high
    FROM bucketed
)
SELECT key, step, v, n FROM ranked WHERE low = 1 OR high = 1 OR edge ORDER BY key, step
""")


def metric_series(s: Session, job_id: str, buckets: int) -> dict[str, dict]:
    """``{name: {"steps": [...], "values": [...], "points": n}}``; ``points`` counts the series before downsampling."""
    out: dict[str, dict] = {}
    for key, step, value, n in s.execute(SERIES_SQL, {"job_id": job_id, "buckets": buckets}):
        series = out.setdefault(key, {"steps": [], "values": [], "points": n})
        series["steps"].append(step)
        series["values"].append(value)
    return out
