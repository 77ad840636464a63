"""``genqueue webhooks …`` and the job options for webhooks and metadata (client commands, through the API)."""

from __future__ import annotations


def parse_metadata(pairs: list[str] | None) -> dict[str, str]:
    """``["campaign=spring", "v=2"]`` → ``{"campaign": "spring", "v": "2"}``; a pair without ``=`` is an error."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"genqueue: --metadata wants KEY=VALUE, got {pair!r}")
        out[key] = value
    return out


def cmd_webhooks_secret(args) -> int:
    """Print the caller's webhook signing secret (``--rotate``: a new one)."""
    from shared.cli.client import Client

    client = Client()
    body = client.post("/webhooks/secret") if args.rotate else client.get("/webhooks/secret")
    print(body["secret"])
    return 0


def cmd_webhooks_default(args) -> int:
    """Print, set (``URL``) or clear (``--clear``) the default webhook URL of jobs that name none."""
    from shared.cli.client import Client

    client = Client()
    if args.clear or args.url:
        body = client.request("PUT", "/webhooks/settings", json={"default_url": None if args.clear else args.url})
        body = body.json()
    else:
        body = client.get("/webhooks/settings")
    print(body["default_url"] or "")
    return 0


def add_parsers(sub) -> None:
    """``genqueue webhooks secret [--rotate]`` and ``genqueue webhooks default [URL | --clear]``."""
    wh = sub.add_parser("webhooks", help="your webhook signing secret and default URL").add_subparsers(
        dest="sub", required=True
    )
    sec = wh.add_parser("secret", help="print your whsec_ signing secret")
    sec.add_argument("--rotate", action="store_true", help="make a new secret (the old one stops verifying)")
    sec.set_defaults(fn=cmd_webhooks_secret)
    default = wh.add_parser("default", help="print, set or clear your default webhook URL")
    default.add_argument("url", nargs="?"), default.add_argument("--clear", action="store_true")
    default.set_defaults(fn=cmd_webhooks_default)


def add_submit_options(parser) -> None:
    """``submit --metadata K=V`` (repeatable), ``--webhook-url URL``, ``--webhook-event STATUS`` (repeatable)."""
    parser.add_argument("--metadata", action="append", metavar="KEY=VALUE", help="a label (repeatable)")
    parser.add_argument("--webhook-url", help="POSTed the job when it ends (Standard Webhooks, signed)")
    parser.add_argument("--webhook-event", action="append", choices=["running", "succeeded", "failed", "cancelled"])


def submit_extras(args) -> dict:
    """The envelope fields the options above add to ``POST /jobs``."""
    extra: dict = {}
    if getattr(args, "metadata", None):
        extra["metadata"] = parse_metadata(args.metadata)
    if getattr(args, "webhook_url", None):
        extra["webhook_url"] = args.webhook_url
    if getattr(args, "webhook_event", None):
        extra["webhook_events"] = args.webhook_event
    return extra
