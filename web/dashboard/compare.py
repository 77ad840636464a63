"""``/compare?jobs=a,b,c``: 2 to 6 jobs of one kind side by side, their metric curves overlaid, their params diffed.

The page is rendered from the same JSON API clients use (``GET /jobs/{id}``); its script fetches each job's
downsampled series from ``GET /jobs/{id}/metrics``.
"""

from __future__ import annotations

import json
from typing import Any

from flask import render_template, request

from web.dashboard import bp
from web.dashboard.internal import api_json
from web.errors import Invalid

MIN_JOBS, MAX_JOBS = 2, 6
MISSING = "—"


def requested_ids() -> list[str]:
    """Job ids from ``?jobs=a,b`` or ``?jobs=a&jobs=b`` (the jobs page's checkboxes), in order, without repeats."""
    ids = [i.strip() for raw in request.args.getlist("jobs") for i in raw.split(",") if i.strip()]
    ids = list(dict.fromkeys(ids))
    if not MIN_JOBS <= len(ids) <= MAX_JOBS:
        raise Invalid(f"pick {MIN_JOBS} to {MAX_JOBS} jobs to compare (got {len(ids)})", code="invalid_query")
    return ids


def _shown(value: Any) -> str:
    if value is None:
        return MISSING
    if isinstance(value, list) and value and all(isinstance(v, str | dict) for v in value):
        return f"{len(value)} item{'s' if len(value) != 1 else ''}"  # prompts: thousands, compared by count
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)


def diff_rows(values: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per key any job has: ``{"key", "cells": [shown...], "differs": bool}``, differing rows first."""
    keys = list(dict.fromkeys(k for v in values for k in v))
    rows = []
    for key in keys:
        raw = [json.dumps(v.get(key), sort_keys=True, default=str) for v in values]
        rows.append({"key": key, "cells": [_shown(v.get(key)) for v in values], "differs": len(set(raw)) > 1})
    return sorted(rows, key=lambda r: not r["differs"])


def _final_metrics(job: dict) -> dict:
    summary = job.get("summary") or {}
    metrics = summary.get("metrics") if isinstance(summary.get("metrics"), dict) else {}
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()}


@bp.get("/compare")
def compare():
    ids = requested_ids()
    jobs = [api_json("api.get", job_id=i) for i in ids]  # someone else's job: the API's 404
    kinds = sorted({j["kind"] for j in jobs})
    if len(kinds) > 1:
        raise Invalid(f"compare jobs of one kind (these are {', '.join(kinds)})", code="invalid_query")
    return render_template(
        "compare.html",
        jobs=jobs,
        kind=kinds[0],
        params=diff_rows([j["params"] for j in jobs]),
        metrics=diff_rows([_final_metrics(j) for j in jobs]),
    )
