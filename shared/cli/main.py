"""``genqueue``: operator commands act on the database; client commands go through the REST API."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from shared.cli import webhooks as webhooks_cli
from shared.settings import get_settings

TERMINAL = ("succeeded", "failed", "cancelled")


def _client():
    from shared.cli.client import Client

    return Client()


def cmd_up(args) -> int:
    from shared.cli.up import up

    return up()


def cmd_web(args) -> int:
    from shared.cli.up import web_command

    s = get_settings()
    os.execv(sys.executable, web_command(args.host or s.host, args.port or s.port, args.workers))
    return 0


def cmd_worker(args) -> int:
    from shared.cli.up import worker_command

    os.execv(sys.executable, worker_command(args.name, args.concurrency, args.queues))
    return 0


def cmd_migrate(args) -> int:
    from shared.migrate import upgrade

    upgrade()
    print("database at head")
    return 0


def _params(args) -> dict:
    if args.params_file:
        return json.loads(Path(args.params_file).read_text())
    return json.loads(args.params or "{}")


def cmd_submit(args) -> int:
    from shared.cli.webhooks import submit_extras

    body = {"kind": args.kind, "params": _params(args), "priority": args.priority, **submit_extras(args)}
    job = _client().post("/jobs", json=body)
    print(job["id"])
    return 0


def cmd_status(args) -> int:
    print(json.dumps(_client().job(args.job_id), indent=2))
    return 0


def cmd_wait(args) -> int:
    """Follow a job with a progress bar; exit 0 only if it succeeded."""
    from tqdm import tqdm

    client, bar, job = _client(), None, {}
    deadline = time.monotonic() + args.timeout if args.timeout else None
    while deadline is None or time.monotonic() < deadline:
        job = client.job(args.job_id)
        total, done = job["progress"]["total"], job["progress"]["done"]
        if bar is None and total:
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
    print(f"{job.get('id')}: {job.get('status')}" + (f" ({job['error']['message']})" if job.get("error") else ""))
    return 0 if job.get("status") == "succeeded" else 1


def cmd_results(args) -> int:
    resp = _client().request("GET", f"/jobs/{args.job_id}/results", params={"format": args.format})
    sys.stdout.write(resp.text)
    return 0


def cmd_cancel(args) -> int:
    job = _client().post(f"/jobs/{args.job_id}/cancel")
    print(f"{job['id']}: {job['status']}")
    return 0


def cmd_datasets_add(args) -> int:
    with open(args.file, "rb") as f:
        ds = _client().post("/datasets", files={"file": (Path(args.file).name, f)}, data={"name": args.name or ""})
    print(ds["id"])
    return 0


def cmd_models_list(args) -> int:
    items = _client().get("/models")["items"]
    for m in items:
        print(f"{m['id']:<40} {m['name']:<28} {m['kind']:<14} {m['source']:<10} {json.dumps(m['metrics'])[:60]}")
    return 0


def cmd_models_add(args) -> int:
    from shared.registration import register_local_model

    model = register_local_model(args.name, args.path, hub_id=args.hub)
    print(model.id)
    return 0


def cmd_users_add(args) -> int:
    from shared.db import session_scope
    from shared.users import create_user, issue_token

    with session_scope() as s:
        token = issue_token(s, create_user(s, args.name, is_admin=args.admin), name=args.token_name)
    print(token)
    return 0


def cmd_users_issue(args) -> int:
    from shared.db import session_scope
    from shared.users import get_user, issue_token

    with session_scope() as s:
        token = issue_token(s, get_user(s, args.name), name=args.token_name)
    print(token)
    return 0


def cmd_users_tokens(args) -> int:
    from shared.db import session_scope
    from shared.timeutil import iso
    from shared.users import list_tokens

    with session_scope() as s:
        rows = [(t.id, t.name, iso(t.created_at), iso(t.last_used_at) or "never", iso(t.revoked_at) or "no")
                for t in list_tokens(s, args.name)]  # fmt: skip
    print(f"{'ID':<40} {'NAME':<16} {'CREATED':<28} {'LAST USED':<28} REVOKED")
    for tid, name, created, used, revoked in rows:
        print(f"{tid:<40} {name:<16} {created:<28} {used:<28} {revoked}")
    return 0


def cmd_users_revoke(args) -> int:
    from shared.db import session_scope
    from shared.users import revoke_token

    with session_scope() as s:
        n = revoke_token(s, args.token)
    print(f"revoked {n} token(s)")
    return 0 if n else 1


def cmd_demo(args) -> int:
    from shared.cli.demo import run_demo

    return run_demo(steps=args.steps, gan_steps=args.gan_steps, timeout=args.timeout)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="genqueue", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="embedded services + migrations + worker + web").set_defaults(fn=cmd_up)
    w = sub.add_parser("web", help="the web server (gunicorn)")
    w.add_argument("--host"), w.add_argument("--port", type=int), w.add_argument("--workers", type=int, default=2)
    w.set_defaults(fn=cmd_web)
    wk = sub.add_parser("worker", help="a Celery worker")
    wk.add_argument("--name", default="worker1"), wk.add_argument("--concurrency", type=int)
    wk.add_argument("--queues", help="comma-separated (default gpu,cpu)")
    wk.set_defaults(fn=cmd_worker)
    sub.add_parser("migrate", help="apply database migrations").set_defaults(fn=cmd_migrate)
    s = sub.add_parser("submit", help="submit a job; prints its id")
    s.add_argument("kind"), s.add_argument("--params"), s.add_argument("--params-file")
    s.add_argument("--priority", type=int, default=0)
    webhooks_cli.add_submit_options(s)
    s.set_defaults(fn=cmd_submit)
    for name, fn in (("status", cmd_status), ("cancel", cmd_cancel)):
        c = sub.add_parser(name)
        c.add_argument("job_id")
        c.set_defaults(fn=fn)
    wt = sub.add_parser("wait", help="progress bar until the job ends; exit 0 only on success")
    wt.add_argument("job_id"), wt.add_argument("--interval", type=float, default=1.0)
    wt.add_argument("--timeout", type=float, default=0)
    wt.set_defaults(fn=cmd_wait)
    r = sub.add_parser("results")
    r.add_argument("job_id"), r.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    r.set_defaults(fn=cmd_results)
    ds = sub.add_parser("datasets").add_subparsers(dest="sub", required=True)
    da = ds.add_parser("add", help="upload a dataset file; prints its id")
    da.add_argument("file"), da.add_argument("--name")
    da.set_defaults(fn=cmd_datasets_add)
    ms = sub.add_parser("models").add_subparsers(dest="sub", required=True)
    ms.add_parser("list").set_defaults(fn=cmd_models_list)
    ma = ms.add_parser("add", help="register a local Hugging Face or generator directory (or --hub ID)")
    ma.add_argument("name"), ma.add_argument("path", nargs="?"), ma.add_argument("--hub")
    ma.set_defaults(fn=cmd_models_add)
    us = sub.add_parser("users").add_subparsers(dest="sub", required=True)
    ua = us.add_parser("add", help="create a user; prints a new API token")
    ua.add_argument("name"), ua.add_argument("--admin", action="store_true")
    ua.add_argument("--token-name", default="cli", help="a label for the token (shown by `users tokens`)")
    ua.set_defaults(fn=cmd_users_add)
    ui = us.add_parser("issue-token", help="a new API token for an existing user; prints it")
    ui.add_argument("name"), ui.add_argument("--token-name", default="cli")
    ui.set_defaults(fn=cmd_users_issue)
    ut = us.add_parser("tokens", help="list a user's tokens: id, name, created, last used, revoked")
    ut.add_argument("name")
    ut.set_defaults(fn=cmd_users_tokens)
    ur = us.add_parser("revoke-token", help="revoke an API token (the token itself, or its id tok_…)")
    ur.add_argument("token")
    ur.set_defaults(fn=cmd_users_revoke)
    webhooks_cli.add_parsers(sub)
    dm = sub.add_parser("demo", help="train + generate, text and images, on this machine's own data")
    dm.add_argument("--steps", type=int, default=300), dm.add_argument("--gan-steps", type=int, default=400)
    dm.add_argument("--timeout", type=float, default=1800)
    dm.set_defaults(fn=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=get_settings().log_level.upper())
    args = build_parser().parse_args(argv)
    from shared.cli.client import ApiFailure
    from shared.registration import RegistrationError
    from shared.users import UserError

    try:
        return args.fn(args) or 0
    except (ApiFailure, UserError, RegistrationError) as exc:
        print(f"genqueue: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
