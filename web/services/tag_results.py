"""``text.tag`` results: one row per text with its entities, as JSON pages, JSONL or CSV downloads."""

from __future__ import annotations

import csv
import io
import json

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.models import TagResult
from shared.timeutil import iso


def tag_rows(s: Session, job_id: str, offset: int, limit: int | None) -> list[dict]:
    stmt = select(TagResult).where(TagResult.job_id == job_id).order_by(TagResult.text_index)
    return [
        {
            "index": r.text_index,
            "id": r.text_id,
            "text": r.text,
            "entities": r.entities,
            "created_at": iso(r.created_at),
        }
        for r in s.scalars(stmt.offset(offset).limit(limit))
    ]


def tag_csv(rows: list[dict]) -> str:
    """One line per text; ``entities`` as JSON, ``labels`` as a ``;``-joined list for spreadsheets."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["index", "id", "text", "labels", "entities"])
    writer.writeheader()
    for r in rows:
        labels = ";".join(e["label"] for e in r["entities"])
        writer.writerow(
            {
                **{k: r[k] for k in ("index", "id", "text")},
                "labels": labels,
                "entities": json.dumps(r["entities"], ensure_ascii=False),
            }
        )
    return buf.getvalue()
