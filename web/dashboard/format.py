"""Small display helpers shared by the templates (the dashboard JS mirrors them in static/js/common.js)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from shared.kinds import KINDS

KIND_LABELS = {name: k.label for name, k in KINDS.items()}
STATUS_ICONS = {
    "queued": "◷",
    "running": "▶",
    "cancelling": "◼",
    "succeeded": "✓",
    "failed": "✕",
    "cancelled": "⊘",
}
ACTIVE = ("queued", "running", "cancelling")


def kind_label(kind: str) -> str:
    return KIND_LABELS.get(kind, kind)


def short_id(value: str | None) -> str:
    """``job_…9f3e21ab``: the prefix and the random tail (the full id is in the title)."""
    if not value:
        return ""
    prefix, _, rest = value.partition("_")
    return f"{prefix}_…{rest[-8:]}" if len(rest) > 10 else value


def model_label(job: dict[str, Any]) -> str:
    """The model a job uses (or the architecture it trains)."""
    p = job.get("params") or {}
    kind = job.get("kind")
    if kind == "text.train":
        base = p.get("base_model", "scratch")
        return f"scratch ({p.get('size') or 'custom'})" if base == "scratch" else base
    if kind == "image.train_gan":
        return f"{p.get('architecture', 'dcgan')} on {p.get('dataset', 'digits')}"
    param = KINDS[kind].model_param if kind in KINDS else "model"
    return str(p.get(param, "scratch" if param == "base_model" else ""))


def _parse(ts: str | None) -> datetime | None:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")) if ts else None


def duration(job: dict[str, Any], now: datetime | None = None) -> str:
    """Run time: started → finished (or now, while running); "" before it starts."""
    start, end = _parse(job.get("started_at")), _parse(job.get("finished_at"))
    if start is None:
        return ""
    if end is None:
        if job.get("status") not in ACTIVE:
            return ""
        from shared.timeutil import utcnow

        end = now or utcnow()
    return human_seconds((end - start).total_seconds())


def human_seconds(seconds: float | None) -> str:
    if seconds is None:
        return ""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


def human_bytes(n: int | None) -> str:
    if n is None:
        return ""
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def percent(job: dict[str, Any]) -> int:
    prog = job.get("progress") or {}
    total, done = prog.get("total") or 0, prog.get("done") or 0
    if job.get("status") == "succeeded":
        return 100
    return min(100, int(done * 100 / total)) if total else 0


def metric(value: Any) -> str:
    """A metric value, compactly: 3 significant digits for floats."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
        return f"{value:.3g}"
    return f"{value:.4g}"


def summary_rows(summary: dict | None) -> list[tuple[str, str]]:
    """A job summary as (label, text) rows: nested dicts flattened ("metrics · val_loss"), numbers compact, None
    as a dash. The same rows job.js renders while the page polls."""
    rows: list[tuple[str, str]] = []

    def add(key: str, value: Any) -> None:
        if isinstance(value, dict):
            for sub, inner in value.items():
                add(f"{key} · {sub}", inner)
        elif value is None:
            rows.append((key, "—"))
        elif isinstance(value, list):
            rows.append((key, json.dumps(value)))
        else:
            rows.append((key, metric(value)))

    for key, value in (summary or {}).items():
        add(str(key), value)
    return rows


FILTERS = {
    "kind_label": kind_label,
    "short_id": short_id,
    "model_label": model_label,
    "duration": duration,
    "human_seconds": human_seconds,
    "human_bytes": human_bytes,
    "percent": percent,
    "metric": metric,
    "summary_rows": summary_rows,
}
