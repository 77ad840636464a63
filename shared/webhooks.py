"""Webhooks (Standard Webhooks, https://www.standardwebhooks.com): signing, the SSRF guard, the outbox, one attempt.

A job transition that should call back (``shared/lifecycle.py`` calls :func:`record`) adds a
:class:`~shared.models.WebhookDelivery` row in the transition's own transaction: the job's status never waits on a
receiver. When that transaction commits, the delivery id is published to Celery (``genqueue.webhooks.deliver``,
``worker/tasks/webhooks.py``); a lost message is published again by the worker's maintenance pass (:func:`sweep`).

Each attempt is logged (:class:`~shared.models.WebhookAttempt`); a failed one is retried on the Standard Webhooks
schedule (5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h: eight attempts over about 27 hours).

**SSRF guard**: only ``http``/``https``; every address the host resolves to must be public (not loopback, private,
link-local, multicast, reserved or unspecified) unless it lies inside ``GENQUEUE_WEBHOOK_ALLOW_NETS``; the request
connects to the address that was checked (no second lookup, so no DNS rebinding), follows no redirect, has short
timeouts and reads at most :data:`MAX_RESPONSE_BYTES` of the answer.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import ipaddress
import json
import logging
import secrets
import socket
import ssl
import time
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from urllib.parse import urlsplit

from sqlalchemy import event, select, update
from sqlalchemy.orm import Session

from shared.ids import new_id
from shared.models import DeliveryStatus, Job, WebhookDelivery
from shared.settings import get_settings
from shared.timeutil import utcnow

logger = logging.getLogger(__name__)

EVENTS = ("running", "succeeded", "failed", "cancelled")
DEFAULT_EVENTS = ("succeeded", "failed", "cancelled")
RETRY_SCHEDULE = (5, 300, 1800, 7200, 18000, 36000, 36000)  # seconds after attempt 1, 2, …; then it has failed
MAX_ATTEMPTS = len(RETRY_SCHEDULE) + 1
MAX_RESPONSE_BYTES = 4096
MAX_URL_CHARS = 2048
TASK = "genqueue.webhooks.deliver"
QUEUE = "cpu"  # every worker consumes it by default; a webhook never waits for a GPU
PUBLISH_LEASE = timedelta(minutes=5)  # a published delivery is not published again before this (unless it ran)
_OUTBOX = "genqueue_webhook_outbox"


class Refused(ValueError):
    """A webhook URL genqueue will not call (scheme, host, or an address the SSRF guard refuses)."""


# -- signing -------------------------------------------------------------------------------------------------------
def new_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 of "id.timestamp.body">`` keyed by the secret's decoded bytes."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def headers(secret: str, msg_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The three Standard Webhooks headers, plus the content type."""
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(secret, msg_id, ts, body),
        "content-type": "application/json",
    }


# -- the SSRF guard ------------------------------------------------------------------------------------------------
@lru_cache(maxsize=8)
def _allowed_nets(raw: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    try:
        return tuple(ipaddress.ip_network(n, strict=False) for n in raw)
    except ValueError as exc:
        raise SystemExit(f"GENQUEUE_WEBHOOK_ALLOW_NETS: {exc}") from exc


def address_allowed(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """A public address, or one inside ``GENQUEUE_WEBHOOK_ALLOW_NETS``."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if any(ip in net for net in _allowed_nets(get_settings().webhook_allow_nets)):
        return True
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_loopback or ip.is_link_local)


@dataclass(frozen=True)
class Target:
    """A checked URL: connect to ``address``, send ``Host: host`` (and SNI ``host`` for https)."""

    scheme: str
    host: str
    port: int
    path: str
    address: str


def check_url(url: str) -> Target:
    """Parse, resolve and check ``url``; raises :class:`Refused` with a message a user can act on."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_CHARS:
        raise Refused(f"webhook_url must be a URL of 1 to {MAX_URL_CHARS} characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise Refused("webhook_url must be an http:// or https:// URL")
    try:
        host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise Refused(f"webhook_url has an invalid port: {exc}") from exc
    if not host:
        raise Refused("webhook_url has no host")
    if parts.username or parts.password:
        raise Refused("webhook_url must not carry credentials")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise Refused(f"webhook_url host {host!r} does not resolve") from exc
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    bad = [a for a in addresses if not address_allowed(ipaddress.ip_address(a.split("%")[0]))]
    if bad:  # one refused address is enough: a name that also resolves inward could be steered there
        raise Refused(
            f"webhook_url host {host!r} resolves to {bad[0]}, a loopback, private, link-local, multicast or reserved "
            "address (an operator may allow networks with GENQUEUE_WEBHOOK_ALLOW_NETS)"
        )
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(parts.scheme, host, port, path, addresses[0])


# -- one attempt ---------------------------------------------------------------------------------------------------
@dataclass
class AttemptResult:
    outcome: str  # success | http_error | timeout | connection_error | refused
    status_code: int | None = None
    error: str | None = None
    response: str | None = None
    duration_ms: int = 0


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to the checked address, whatever the Host header says."""

    def __init__(self, target: Target, timeout: float):
        super().__init__(target.host, target.port, timeout=timeout)
        self._address = target.address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, target: Target, timeout: float):
        super().__init__(target.host, target.port, timeout=timeout, context=ssl.create_default_context())
        self._address = target.address

    def connect(self) -> None:
        raw = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)


def post(url: str, body: bytes, hdrs: dict[str, str], timeout: float | None = None) -> AttemptResult:
    """POST ``body`` once: checked URL, pinned address, no redirects, timeouts, a capped read. Never raises."""
    timeout = timeout or get_settings().webhook_timeout_seconds
    started = time.monotonic()
    result = _post(url, body, hdrs, timeout)
    result.duration_ms = int((time.monotonic() - started) * 1000)
    return result


def _post(url: str, body: bytes, hdrs: dict[str, str], timeout: float) -> AttemptResult:
    try:
        target = check_url(url)
    except Refused as exc:
        return AttemptResult("refused", error=str(exc))
    cls = _PinnedHTTPSConnection if target.scheme == "https" else _PinnedHTTPConnection
    conn = cls(target, timeout)
    try:
        conn.request("POST", target.path, body=body, headers={**hdrs, "user-agent": "genqueue-webhooks"})
        resp = conn.getresponse()
        text = resp.read(MAX_RESPONSE_BYTES).decode("utf-8", "replace")
    except TimeoutError as exc:
        return AttemptResult("timeout", error=f"no answer within {timeout:g}s ({exc})")
    except (OSError, http.client.HTTPException) as exc:
        return AttemptResult("connection_error", error=f"{type(exc).__name__}: {exc}"[:500])
    finally:
        conn.close()
    if 200 <= resp.status < 300:
        return AttemptResult("success", resp.status, response=text)
    why = "redirects are not followed" if 300 <= resp.status < 400 else "the receiver did not answer 2xx"
    return AttemptResult("http_error", resp.status, error=f"HTTP {resp.status}: {why}", response=text)


def next_attempt_delay(attempts: int) -> int | None:
    """Seconds until the next attempt after ``attempts`` failed ones; None when the schedule is used up."""
    return RETRY_SCHEDULE[attempts - 1] if attempts <= len(RETRY_SCHEDULE) else None


def payload(event_type: str, job: dict) -> bytes:
    """The body: ``{"type": "job.succeeded", "timestamp": …, "data": <the job object>}`` (compact JSON)."""
    doc = {"type": event_type, "timestamp": utcnow().isoformat().replace("+00:00", "Z"), "data": job}
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


# -- the outbox ----------------------------------------------------------------------------------------------------
def record(s: Session, job: Job, status: str) -> None:
    """Add a delivery of ``job.<status>`` if the job has a webhook for that status (called by the lifecycle)."""
    events = job.webhook_events or DEFAULT_EVENTS
    if not job.webhook_url or str(status) not in events:
        return
    delivery = WebhookDelivery(
        id=new_id("msg"),
        job_id=job.id,
        owner_id=job.owner_id,
        event=f"job.{status}",
        url=job.webhook_url,
        status=DeliveryStatus.PENDING,
        attempts=0,
        next_attempt_at=utcnow() + PUBLISH_LEASE,
    )
    s.add(delivery)
    s.info.setdefault(_OUTBOX, []).append(delivery.id)


def publish(delivery_id: str, attempts: int) -> bool:
    """Send one delivery's message; False (logged) when the broker is down — :func:`sweep` sends it later."""
    from shared.broker import sender

    try:
        sender().send_task(TASK, args=[delivery_id, attempts], queue=QUEUE, retry=False)
        return True
    except Exception as exc:  # noqa: BLE001 - any broker failure: the row is committed, the sweep resends it
        logger.warning("could not publish webhook delivery %s (%s); the sweep will send it", delivery_id, exc)
        return False


@event.listens_for(Session, "after_commit")
def _publish_committed(s: Session) -> None:
    for delivery_id in s.info.pop(_OUTBOX, ()):
        publish(delivery_id, 0)


@event.listens_for(Session, "after_rollback")
def _forget_rolled_back(s: Session) -> None:
    s.info.pop(_OUTBOX, None)


def sweep(s: Session, limit: int = 200) -> int:
    """Publish deliveries that are due (a retry's time came, or a message was lost); returns how many.

    The rows are pushed ``PUBLISH_LEASE`` ahead and committed *before* their messages go out, so the task that
    receives one never finds the row still locked by this sweep; one that could not be published is due again.
    """
    due = s.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id.in_(
                select(WebhookDelivery.id)
                .where(WebhookDelivery.status == DeliveryStatus.PENDING, WebhookDelivery.next_attempt_at <= utcnow())
                .order_by(WebhookDelivery.next_attempt_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        )
        .values(next_attempt_at=utcnow() + PUBLISH_LEASE)
        .returning(WebhookDelivery.id, WebhookDelivery.attempts)
    ).all()
    s.commit()
    unsent = [d.id for d in due if not publish(d.id, d.attempts)]
    if unsent:
        s.execute(update(WebhookDelivery).where(WebhookDelivery.id.in_(unsent)).values(next_attempt_at=utcnow()))
        s.commit()
    return len(due) - len(unsent)
