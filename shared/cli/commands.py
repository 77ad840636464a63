"""The CLI's client commands: each goes through the REST API, prints text (or, with ``--json``, one JSON document)
and returns an exit code (``shared.cli.client.EXIT_*``)."""

from __future__ import annotations

import json
import os
import re
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from shared.cli.client import EXIT_JOB_FAILED, EXIT_USAGE, Client, CliError

TERMINAL = ("succeeded", "failed", "cancelled")
PAGE = 200  # the API's largest page


def client() -> Client:
    return Client()


def emit(args, data: Any, text: str | None = None) -> None:
    """``--json``: the data as one document; otherwise the human text (default: the data as indented JSON)."""
    if getattr(args, "json", False) or text is None:
        print(json.dumps(data, indent=None if getattr(args, "json", False) else 2, ensure_ascii=False))
    else:
        print(text)


def params_from(args) -> dict:
    try:
        raw = Path(args.params_file).read_text() if args.params_file else (args.params or "{}")
        params = json.loads(raw)
    except OSError as exc:
        raise CliError(f"cannot read --params-file: {exc.strerror}: {args.params_file}", EXIT_USAGE) from exc
    except json.JSONDecodeError as exc:
        raise CliError(f"the params are not valid JSON: {exc}", EXIT_USAGE) from exc
    if not isinstance(params, dict):
        raise CliError("the params must be a JSON object", EXIT_USAGE)
    return params


def job_line(job: dict) -> str:
    p = job["progress"]
    progress = f"{p['done']}/{p['total']}" if p.get("total") else "-"
    return f"{job['id']:<34} {job['kind']:<16} {job['status']:<11} {progress:>11}  {(job['created_at'] or '')[:19]}"


def cmd_submit(args) -> int:
    from shared.cli.webhooks import submit_extras

    job = client().post(
        "/jobs", json={"kind": args.kind, "params": params_from(args), "priority": args.priority, **submit_extras(args)}
    )
    emit(args, job, job["id"])
    return 0


def cmd_status(args) -> int:
    emit(args, client().job(args.job_id))
    return 0


def parse_metadata(pairs):
    from shared.cli.webhooks import parse_metadata as parse

    return parse(pairs)


def cmd_list(args) -> int:
    """Newest first, paging through the API until ``--limit`` jobs."""
    c, items, cursor = client(), [], None
    while len(items) < args.limit:
        query = {
            "status": args.status,
            "kind": args.kind,
            "limit": min(PAGE, args.limit - len(items)),
            "cursor": cursor,
            **{f"metadata.{k}": v for k, v in parse_metadata(getattr(args, "metadata", None)).items()},
        }
        page = c.get("/jobs", params={k: v for k, v in query.items() if v})
        items += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            break
    header = f"{'ID':<34} {'KIND':<16} {'STATUS':<11} {'PROGRESS':>11}  CREATED (UTC)"
    emit(args, {"items": items, "next_cursor": cursor}, "\n".join([header, *map(job_line, items)]))
    return 0


def event_line(e: dict) -> str:
    at = (e.get("at") or "")[11:19]
    if e["type"] == "metric":
        values = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in (e["data"] or {}).items())
        return f"{at} metric  step {e['step']}: {values}"
    return f"{at} {e['type']:<7} {e.get('message') or ''}"


def cmd_logs(args) -> int:
    """Print the job's events; ``-f``: keep polling until the job has ended and every event is printed."""
    c, after, items = client(), 0, []
    types = None if args.metrics else "log,status"
    while True:
        job = c.job(args.job_id) if args.follow else None
        while True:
            query = {"after": after, "limit": 1000, **({"type": types} if types else {})}
            page = c.get(f"/jobs/{args.job_id}/events", params=query)
            for e in page["items"]:
                if args.json:
                    items.append(e)
                else:
                    print(event_line(e), flush=True)
            after = page["next_after"] or after
            if len(page["items"]) < 1000:
                break
        if not args.follow or job["status"] in TERMINAL:
            break
        time.sleep(args.interval)
    if args.json:
        emit(args, {"job_id": args.job_id, "items": items, "next_after": after})
    return 0 if not args.follow or job["status"] == "succeeded" else EXIT_JOB_FAILED


def cmd_wait(args) -> int:
    """Follow a job with a progress bar; exit 0 only if it succeeded."""
    from tqdm import tqdm

    c, bar, job = client(), None, {}
    deadline = time.monotonic() + args.timeout if args.timeout else None
    while deadline is None or time.monotonic() < deadline:
        job = c.job(args.job_id)
        total, done = job["progress"]["total"], job["progress"]["done"]
        if bar is None and total and not args.json:
            bar = tqdm(total=total, desc=f"{job['kind']} {job['id'][-8:]}", unit="step", file=sys.stderr)
        if bar is not None:
            bar.total = total or bar.total
            bar.update(max(0, done - bar.n))
            bar.set_postfix_str(job["status"])
        if job["status"] in TERMINAL:
            break
        time.sleep(args.interval)
    if bar is not None:
        bar.close()
    error = f" ({job['error']['message']})" if job.get("error") else ""
    emit(args, job, f"{job.get('id')}: {job.get('status')}{error}")
    return 0 if job.get("status") == "succeeded" else EXIT_JOB_FAILED


def cmd_results(args) -> int:
    fmt = "json" if args.json else args.format
    resp = client().request("GET", f"/jobs/{args.job_id}/results", params={"format": fmt})
    sys.stdout.write(json.dumps(resp.json(), ensure_ascii=False) + "\n" if args.json else resp.text)
    return 0


def cmd_cancel(args) -> int:
    job = client().post(f"/jobs/{args.job_id}/cancel")
    emit(args, job, f"{job['id']}: {job['status']}")
    return 0


def cmd_retry(args) -> int:
    job = client().post(f"/jobs/{args.job_id}/retry")
    emit(args, job, job["id"])
    return 0


def cmd_delete(args) -> int:
    """Delete a finished job (``job_…``) or a dataset (``ds_…``)."""
    c = client()
    if args.object_id.startswith("ds_"):
        gone = c.delete(f"/datasets/{args.object_id}")
        emit(args, gone, f"deleted dataset {args.object_id}")
        return 0
    gone = c.delete(f"/jobs/{args.object_id}", params={"with_model": "true" if args.with_model else "false"})
    kept = "" if gone["models_deleted"] or not gone["model_ids"] else f"; kept model {', '.join(gone['model_ids'])}"
    emit(args, gone, f"deleted job {args.object_id} ({gone['artifacts']} stored files){kept}")
    return 0


def cmd_datasets_add(args) -> int:
    with open(args.file, "rb") as f:
        ds = client().post("/datasets", files={"file": (Path(args.file).name, f)}, data={"name": args.name or ""})
    emit(args, ds, ds["id"])
    return 0


def cmd_datasets_list(args) -> int:
    data = client().get("/datasets", params={"kind": args.kind} if args.kind else None)
    lines = [
        f"{d['id']:<34} {d['name'][:28]:<28} {d['kind']:<7} {d['size']:>12}  {d['created_at'][:19]}"
        for d in data["items"]
    ]
    emit(args, data, "\n".join([f"{'ID':<34} {'NAME':<28} {'KIND':<7} {'BYTES':>12}  CREATED (UTC)", *lines]))
    return 0


def cmd_models_list(args) -> int:
    data = client().get("/models", params={"kind": args.kind} if args.kind else None)
    lines = [
        f"{m['id']:<40} {m['name']:<28} {m['kind']:<14} {m['source']:<10} {json.dumps(m['metrics'])[:60]}"
        for m in data["items"]
    ]
    emit(args, data, "\n".join(lines))
    return 0


def cmd_models_download(args) -> int:
    """Stream the model's tar and extract it (safely) into ``-o DIR``/<name>; prints that directory."""
    out_dir = Path(args.output).resolve()
    resp = client().request("GET", f"/models/{args.model_id}/download", stream=True)
    name = re.search(r'filename="([^"/\\]+)\.tar"', resp.headers.get("Content-Disposition", ""))
    target = out_dir / (name.group(1) if name else args.model_id)
    if target.exists():
        resp.close()
        raise CliError(f"{target} already exists: remove it or pick another -o DIR", EXIT_USAGE)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".genqueue-download-") as tmp:
        with tarfile.open(fileobj=resp.raw, mode="r|") as tar:
            tar.extractall(tmp, filter="data")  # no absolute paths, no escaping links, no devices
        tops = os.listdir(tmp)
        if len(tops) != 1 or not (Path(tmp) / tops[0]).is_dir():
            raise CliError(f"unexpected archive layout: {tops}", EXIT_USAGE)
        os.replace(Path(tmp) / tops[0], target)
    emit(args, {"model_id": args.model_id, "path": str(target)}, str(target))
    return 0
