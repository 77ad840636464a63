"""``genqueue``: operator commands act on the database; client commands go through the REST API."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from shared.cli import commands as C
from shared.cli import webhooks as webhooks_cli
from shared.settings import get_settings


def cmd_up(args) -> int:
    from shared.cli.up import up

    return up(no_worker=args.no_worker)


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
        tokens = list_tokens(s, args.name)
        rows = [
            (t.id, t.name, iso(t.created_at), iso(t.last_used_at) or "never", iso(t.revoked_at) or "no") for t in tokens
        ]
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

    return run_demo(steps=args.steps, gan_steps=args.gan_steps, timeout=args.timeout, tagger_steps=args.tagger_steps)


EXIT_CODES = """exit codes: 0 done (wait, logs -f: the job succeeded) · 1 the job failed or was cancelled ·
2 usage · 3 cannot reach the server (or it answered 5xx) · 4 authentication · 5 not found · 6 rejected input"""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("genqueue")
    except PackageNotFoundError:
        return "unknown"


def _cmd(sub, name: str, fn, help: str, *positional: str, json_out: bool = True) -> argparse.ArgumentParser:
    """A subcommand with its positional arguments and, for commands that print data, ``--json``."""
    p = sub.add_parser(name, help=help, description=help)
    for arg in positional:
        p.add_argument(arg)
    if json_out:
        p.add_argument("--json", action="store_true", help="print one JSON document (machine-readable)")
    p.set_defaults(fn=fn)
    return p


def _operator_commands(sub) -> None:
    u = _cmd(sub, "up", cmd_up, "embedded services + migrations + worker + web (Ctrl-C stops all)", json_out=False)
    u.add_argument("--no-worker", action="store_true", help="services, migrations and the web only (workers elsewhere)")
    w = _cmd(sub, "web", cmd_web, "the web server (gunicorn)", json_out=False)
    w.add_argument("--host"), w.add_argument("--port", type=int), w.add_argument("--workers", type=int, default=2)
    wk = _cmd(sub, "worker", cmd_worker, "a Celery worker", json_out=False)
    wk.add_argument("--name", help="the worker's name (`NAME@host`); default: unique per process, worker-<random>")
    wk.add_argument("--concurrency", type=int)
    wk.add_argument("--queues", help="comma-separated (default gpu,cpu)")
    _cmd(sub, "migrate", cmd_migrate, "apply database migrations", json_out=False)
    us = sub.add_parser("users", help="users and API tokens (on the database)").add_subparsers(
        dest="sub", required=True
    )
    ua = _cmd(us, "add", cmd_users_add, "create a user; prints a new API token", "name", json_out=False)
    ua.add_argument("--admin", action="store_true")
    ua.add_argument("--token-name", default="cli", help="a label for the token (shown by `users tokens`)")
    ui = _cmd(
        us, "issue-token", cmd_users_issue, "a new API token for an existing user; prints it", "name", json_out=False
    )
    ui.add_argument("--token-name", default="cli")
    _cmd(
        us,
        "tokens",
        cmd_users_tokens,
        "list a user's tokens: id, name, created, last used, revoked",
        "name",
        json_out=False,
    )
    _cmd(
        us,
        "revoke-token",
        cmd_users_revoke,
        "revoke an API token (the token itself, or its id tok_…)",
        "token",
        json_out=False,
    )


def _client_commands(sub) -> None:
    s = _cmd(sub, "submit", C.cmd_submit, "submit a job; prints its id", "kind")
    s.add_argument("--params", help="the params as JSON"), s.add_argument("--params-file", help="a JSON file")
    s.add_argument("--priority", type=int, default=0)
    webhooks_cli.add_submit_options(s)
    ls = _cmd(sub, "list", C.cmd_list, "list jobs, newest first")
    ls.add_argument("--metadata", action="append", metavar="KEY=VALUE", help="only jobs with this label (repeatable)")
    ls.add_argument("--status", help="comma-separated: queued,running,cancelling,succeeded,failed,cancelled")
    ls.add_argument("--kind", help="e.g. text.train"), ls.add_argument("--limit", type=_positive, default=20)
    _cmd(sub, "status", C.cmd_status, "a job as JSON", "job_id")
    wt = _cmd(sub, "wait", C.cmd_wait, "progress bar until the job ends; exit 0 only on success", "job_id")
    wt.add_argument("--interval", type=float, default=1.0), wt.add_argument("--timeout", type=float, default=0)
    lg = _cmd(sub, "logs", C.cmd_logs, "a job's log and status events (-f: follow until the job ends)", "job_id")
    lg.add_argument(
        "-f", "--follow", action="store_true", help="keep printing until the job ends; exit 1 unless it succeeded"
    )
    lg.add_argument("--metrics", action="store_true", help="include metric points")
    lg.add_argument("--interval", type=float, default=1.0)
    r = _cmd(sub, "results", C.cmd_results, "generation results (JSONL or CSV; --json: one document)", "job_id")
    r.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    _cmd(sub, "cancel", C.cmd_cancel, "cancel a job", "job_id")
    _cmd(sub, "retry", C.cmd_retry, "re-run a job with the same params; prints the new job's id", "job_id")
    d = _cmd(
        sub, "delete", C.cmd_delete, "delete a finished job (results, events, files) or a dataset (ds_…)", "object_id"
    )
    d.add_argument("--with-model", action="store_true", help="also delete the registry model the job trained")
    ds = sub.add_parser("datasets", help="upload and list datasets").add_subparsers(dest="sub", required=True)
    da = _cmd(ds, "add", C.cmd_datasets_add, "upload a dataset file; prints its id", "file")
    da.add_argument("--name")
    _cmd(ds, "list", C.cmd_datasets_list, "list datasets").add_argument("--kind", choices=["text", "images", "tagged"])
    ms = sub.add_parser("models", help="the model registry").add_subparsers(dest="sub", required=True)
    _cmd(ms, "list", C.cmd_models_list, "list registry models").add_argument("--kind")
    ma = _cmd(
        ms,
        "add",
        cmd_models_add,
        "register a local Hugging Face or generator directory (or --hub ID)",
        "name",
        json_out=False,
    )
    ma.add_argument("path", nargs="?"), ma.add_argument("--hub")
    md = _cmd(
        ms, "download", C.cmd_models_download, "download a model's directory (safetensors); prints its path", "model_id"
    )
    md.add_argument("-o", "--output", default=".", help="directory to put the model's directory in (default: .)")
    webhooks_cli.add_parsers(sub)
    dm = _cmd(sub, "demo", cmd_demo, "train + generate, text and images, on this machine's own data", json_out=False)
    dm.add_argument("--steps", type=int, default=300), dm.add_argument("--gan-steps", type=int, default=400)
    dm.add_argument("--tagger-steps", type=int, default=200, help="text.train_tagger steps (0: no tagger)")
    dm.add_argument("--timeout", type=float, default=1800)


def _positive(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="genqueue",
        description="genqueue: operator commands act on the database; client commands go through the REST API.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"genqueue {_version()}")
    sub = p.add_subparsers(dest="command", required=True)
    _operator_commands(sub)
    _client_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run a command; expected errors are one line on stderr and an exit code (README, "CLI": exit codes)."""
    logging.basicConfig(level=get_settings().log_level.upper())
    args = build_parser().parse_args(argv)
    from shared.cli.client import EXIT_UNREACHABLE, EXIT_USAGE, CliError
    from shared.registration import RegistrationError
    from shared.users import UserError

    try:
        return args.fn(args) or 0
    except CliError as exc:
        print(f"genqueue: {exc}", file=sys.stderr)
        return exc.exit_code
    except (UserError, RegistrationError) as exc:  # operator commands: a bad name or directory
        print(f"genqueue: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # a local file (a dataset to upload, an output directory)
        print(f"genqueue: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return EXIT_USAGE
    except RuntimeError as exc:  # e.g. operator commands with no database reachable
        print(f"genqueue: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
