"""The webhook signing and the SSRF guard, without services: signatures checked by the `standardwebhooks` library,
and loopback/private/link-local/multicast/reserved addresses refused unless GENQUEUE_WEBHOOK_ALLOW_NETS allows them."""

from __future__ import annotations

import ipaddress
import json
import os

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from shared import webhooks
from shared.settings import get_settings


@pytest.fixture
def no_allow_nets():
    """The default (no allowed networks); the variable is put back *before* the settings are read again."""
    saved = os.environ.pop("GENQUEUE_WEBHOOK_ALLOW_NETS", None)
    get_settings.cache_clear()
    yield
    if saved is not None:
        os.environ["GENQUEUE_WEBHOOK_ALLOW_NETS"] = saved
    get_settings.cache_clear()


def test_signatures_verify_with_the_reference_library():
    secret, body = webhooks.new_secret(), json.dumps({"type": "job.succeeded"}).encode()
    hdrs = webhooks.headers(secret, "msg_1", body)
    assert hdrs["webhook-signature"].startswith("v1,")
    assert Webhook(secret).verify(body, hdrs) == {"type": "job.succeeded"}
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body + b" ", hdrs)
    with pytest.raises(WebhookVerificationError):
        Webhook(webhooks.new_secret()).verify(body, hdrs)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "::1",
        "fe80::1",
        "fc00::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::",
    ],
)
def test_inward_addresses_are_refused_by_default(no_allow_nets, address):
    assert not webhooks.address_allowed(ipaddress.ip_address(address))


def test_public_addresses_are_allowed(no_allow_nets):
    assert webhooks.address_allowed(ipaddress.ip_address("8.8.8.8"))
    assert webhooks.address_allowed(ipaddress.ip_address("2606:4700:4700::1111"))


def test_loopback_urls_are_refused_without_allow_nets_and_allowed_with_them(no_allow_nets):
    for url in ("http://127.0.0.1:9/x", "http://localhost/x", "http://[::1]/"):
        with pytest.raises(webhooks.Refused, match="GENQUEUE_WEBHOOK_ALLOW_NETS"):
            webhooks.check_url(url)
    result = webhooks.post("http://127.0.0.1:9/x", b"{}", {})
    assert result.outcome == "refused"  # checked again at delivery, not only at submit
    os.environ["GENQUEUE_WEBHOOK_ALLOW_NETS"] = "127.0.0.0/8"
    get_settings.cache_clear()
    target = webhooks.check_url("http://127.0.0.1:9/x?a=1")
    assert (target.address, target.port, target.path) == ("127.0.0.1", 9, "/x?a=1")
    with pytest.raises(webhooks.Refused):
        webhooks.check_url("http://10.0.0.1/")  # only the allowed network


@pytest.mark.parametrize(
    "url",
    [
        "ftp://8.8.8.8/",
        "gopher://x/",
        "javascript:alert(1)",
        "",
        "http://",
        "http:///x",
        "http://8.8.8.8:99999/",
        "http://user:pw@8.8.8.8/",
    ],
)
def test_malformed_urls_are_refused(url):
    with pytest.raises(webhooks.Refused):
        webhooks.check_url(url)


def test_the_retry_schedule_spans_about_a_day():
    assert webhooks.next_attempt_delay(1) == 5
    assert webhooks.next_attempt_delay(webhooks.MAX_ATTEMPTS) is None
    assert 24 * 3600 <= sum(webhooks.RETRY_SCHEDULE) <= 30 * 3600


def test_the_readme_verification_snippet_verifies_genqueue_signatures():
    """README's Webhooks section shows receivers how to verify; run that very code against our signer."""
    import re
    import time
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("## Webhooks") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    secret, body = webhooks.new_secret(), b'{"type":"job.failed"}'
    hdrs = webhooks.headers(secret, "msg_x", body)
    assert namespace["verify"](secret, hdrs, body) == {"type": "job.failed"}
    with pytest.raises(ValueError, match="bad signature"):
        namespace["verify"](webhooks.new_secret(), hdrs, body)
    stale = webhooks.headers(secret, "msg_x", body, timestamp=int(time.time()) - 3600)
    with pytest.raises(ValueError, match="stale"):
        namespace["verify"](secret, stale, body)
