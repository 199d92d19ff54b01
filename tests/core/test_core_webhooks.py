"""The webhooks extension's rules: signing, rotation, schedule, outcomes, matching, URLs."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import socket
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import pytest

from ojs_core.errors import ValidationError
from ojs_core.events import make_event
from ojs_core.webhook_delivery import (
    DEFAULT_SCHEDULE,
    after_attempt,
    classify,
    delivery_headers,
    retry_after_seconds,
    sign,
    signature_header,
    verify,
)
from ojs_core.webhook_events import outcome_event
from ojs_core.webhook_urls import check_resolved, check_url
from ojs_core.webhooks import (
    Delivery,
    Subscription,
    deliveries_for,
    delivery_id,
    new_secret,
    parse_events,
    parse_filter,
)

NOW = datetime(2026, 2, 15, 22, 0, tzinfo=UTC)


def sub(**changes: object) -> Subscription:
    base: dict[str, object] = {
        "id": "sub_1",
        "url": "https://example.com/h",
        "events": ("job.completed",),
        "created_at": NOW,
        "updated_at": NOW,
        "secret": "whsec_current",
    }
    base.update(changes)
    return Subscription(**base)  # type: ignore[arg-type]


def pending(attempt: int = 0) -> Delivery:
    return Delivery(
        id="del_1",
        subscription_id="sub_1",
        event={"id": "evt_1", "type": "job.completed"},
        created_at=NOW,
        next_at=NOW,
        attempt=attempt,
    )


# -- signing -----------------------------------------------------------------------------------


def test_signature_is_the_specs_formula() -> None:
    body = b'{"type":"job.completed"}'
    expected = hmac.new(b"whsec_x", b'1708030665.{"type":"job.completed"}', hashlib.sha256)
    assert sign("whsec_x", 1708030665, body) == "sha256=" + expected.hexdigest()


def test_verify_checks_signature_and_timestamp_window() -> None:
    body = b"{}"
    header = sign("s", 1000, body)
    assert verify("s", "1000", body, header, now=1000)
    assert verify("s", "1000", body, header, now=1299)
    assert not verify("s", "1000", body, header, now=1301)  # replayed later
    assert not verify("other", "1000", body, header, now=1000)
    assert not verify("s", "1000", b"{ }", header, now=1000)  # tampered body
    assert not verify("s", "x", body, header, now=1000)


def test_rotation_signs_with_both_secrets_for_a_day() -> None:
    rotated = sub().rotated(NOW)
    assert rotated.secret.startswith("whsec_")
    assert rotated.secret != "whsec_current"
    assert rotated.signing_secrets(NOW) == [rotated.secret, "whsec_current"]
    header = signature_header(rotated.signing_secrets(NOW), 5, b"{}")
    parts = header.split(",")
    assert parts == [sign(rotated.secret, 5, b"{}"), sign("whsec_current", 5, b"{}")]
    assert verify("whsec_current", "5", b"{}", header, now=5)
    assert verify(rotated.secret, "5", b"{}", header, now=5)
    assert rotated.signing_secrets(NOW + timedelta(hours=24)) == [rotated.secret]


def test_headers_of_a_delivery() -> None:
    headers = delivery_headers(
        delivery_id="del_1",
        subscription_id="sub_1",
        event_type="job.completed",
        secrets=["s"],
        timestamp=7,
        body=b"{}",
        user_agent="ojs-python-webhook/1",
    )
    assert headers == {
        "Content-Type": "application/json",
        "User-Agent": "ojs-python-webhook/1",
        "X-OJS-Event-Type": "job.completed",
        "X-OJS-Delivery-ID": "del_1",
        "X-OJS-Subscription-ID": "sub_1",
        "X-OJS-Timestamp": "7",
        "X-OJS-Signature": sign("s", 7, b"{}"),
    }


def test_secrets_are_never_in_the_wire_form_or_repr() -> None:
    s = sub(previous_secret="whsec_old", previous_until=NOW)
    assert "secret" not in s.to_wire()
    assert "whsec_" not in repr(s)
    assert s.to_wire(with_secret=True)["secret"] == "whsec_current"
    assert Subscription.from_record(s.to_record()) == s
    assert new_secret().startswith("whsec_")
    assert len(new_secret()) > 40


def verify_webhook(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """Whether a delivery is signed with ``secret`` and at most 5 minutes old."""
    timestamp = headers["x-ojs-timestamp"]
    if abs(time.time() - int(timestamp)) > 300:
        return False
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    expected = "sha256=" + mac.hexdigest()
    # During a secret rotation the header carries two signatures, comma-separated.
    received = headers["x-ojs-signature"].split(",")
    return any(hmac.compare_digest(expected, s.strip()) for s in received)


def test_the_documented_verification_accepts_deliveries() -> None:
    # docs/webhooks.md shows verify_webhook: it must accept what the server signs.
    body = b'{"type":"job.completed"}'
    now = int(time.time())
    old = sub().rotated(NOW)
    header = signature_header(old.signing_secrets(NOW), now, body)
    headers = {"x-ojs-timestamp": str(now), "x-ojs-signature": header}
    assert verify_webhook(old.secret, headers, body)
    assert verify_webhook("whsec_current", headers, body)
    assert not verify_webhook("whsec_other", headers, body)
    assert not verify_webhook(old.secret, headers, body + b" ")
    stale = {**headers, "x-ojs-timestamp": str(now - 301)}
    assert not verify_webhook(old.secret, stale, body)


# -- schedule and outcomes -----------------------------------------------------------------------


def test_default_schedule_is_the_specs() -> None:
    assert DEFAULT_SCHEDULE == (0, 30, 120, 600, 3600, 14400, 43200, 86400)
    assert sum(DEFAULT_SCHEDULE) / 3600 == pytest.approx(41.2, abs=0.1)


def test_retries_follow_the_schedule_then_die() -> None:
    d = pending()
    retry = classify(503, now=NOW)
    for attempt in range(1, len(DEFAULT_SCHEDULE)):
        d = after_attempt(d, retry, NOW, DEFAULT_SCHEDULE)
        assert d.status == "pending"
        assert d.attempt == attempt
        assert d.next_at == NOW + timedelta(seconds=DEFAULT_SCHEDULE[attempt])
        assert d.last_error == "HTTP 503"
    d = after_attempt(d, retry, NOW, DEFAULT_SCHEDULE)
    assert (d.status, d.attempt) == ("dead", 8)


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (200, "delivered"),
        (204, "delivered"),
        (400, "dead"),
        (404, "dead"),
        (410, "dead"),
        (429, "retry"),
        (500, "retry"),
        (503, "retry"),
        (None, "retry"),
    ],
)
def test_outcome_classification(status: int | None, kind: str) -> None:
    assert classify(status, error="timed out", now=NOW).kind == kind


def test_429_honours_retry_after() -> None:
    outcome = classify(429, headers={"retry-after": "90"}, now=NOW)
    assert outcome.retry_after_s == 90
    d = after_attempt(pending(), outcome, NOW, DEFAULT_SCHEDULE)
    assert d.next_at == NOW + timedelta(seconds=90)
    date = "Sun, 15 Feb 2026 22:02:00 GMT"
    assert retry_after_seconds(date, NOW) == 120
    assert retry_after_seconds("junk", NOW) is None
    assert retry_after_seconds("9999999", NOW) == 86400
    without = after_attempt(pending(), classify(429, now=NOW), NOW, DEFAULT_SCHEDULE)
    assert without.next_at == NOW + timedelta(seconds=30)


def test_client_error_is_dead_after_one_attempt() -> None:
    d = after_attempt(pending(), classify(410, now=NOW), NOW, DEFAULT_SCHEDULE)
    assert (d.status, d.attempt, d.last_status_code) == ("dead", 1, 410)


# -- matching ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patterns", "event_type", "matches"),
    [
        (("job.completed",), "job.completed", True),
        (("job.completed",), "job.failed", False),
        (("job.*",), "job.failed", True),
        (("job.*",), "workflow.completed", False),
        (("*",), "workflow.completed", True),
    ],
)
def test_event_type_filter(patterns: tuple[str, ...], event_type: str, matches: bool) -> None:
    event = make_event(event_type, NOW, {"queue": "q", "job_type": "t"})
    assert sub(events=patterns).matches(event) is matches


def test_attribute_filter_and_creation_time() -> None:
    event = make_event("job.completed", NOW, {"queue": "payments", "job_type": "pay.run"})
    assert sub(queues=("payments",)).matches(event)
    assert not sub(queues=("billing",)).matches(event)
    assert sub(job_types=("pay.run",)).matches(event)
    assert not sub(queues=("payments",), job_types=("other",)).matches(event)
    assert not sub(active=False).matches(event)
    assert not sub(created_at=NOW + timedelta(milliseconds=1)).matches(event)


def test_outcome_events_are_never_routed() -> None:
    """A ``*`` subscription is not sent webhook.delivered/failed/dead (a feedback loop while
    its endpoint is down), but is sent the subscription events."""
    for kind in ("webhook.delivered", "webhook.failed", "webhook.dead"):
        assert not sub(events=("*",)).matches(make_event(kind, NOW, {}))
        assert not sub(events=("webhook.*",)).matches(make_event(kind, NOW, {}))
    assert sub(events=("*",)).matches(make_event("webhook.subscription.created", NOW, {}))


def test_a_tenant_subscription_gets_only_its_tenants_events() -> None:
    mine = make_event("job.completed", NOW, {"tenant_id": "acme"})
    theirs = make_event("job.completed", NOW, {"tenant_id": "beta"})
    untagged = make_event("job.completed", NOW, {})
    scoped = sub(tenant_id="acme")
    assert scoped.matches(mine)
    assert not scoped.matches(theirs)
    assert not scoped.matches(untagged)
    assert all(sub().matches(e) for e in (mine, theirs, untagged))
    assert Subscription.from_record(scoped.to_record()) == scoped
    assert scoped.to_wire()["tenant_id"] == "acme"


def test_outcome_event_data() -> None:
    failed = attrs.evolve(pending(1), status="pending", last_status_code=503, last_error="HTTP 503")
    event = outcome_event(failed, NOW, 12)
    assert event is not None
    assert event.type == "webhook.failed"
    assert event.data["status_code"] == 503
    assert event.data["duration_ms"] == 12
    assert event.data["next_attempt_at"]
    dead = outcome_event(attrs.evolve(failed, status="dead"), NOW)
    assert dead is not None
    assert dead.type == "webhook.dead"
    delivered = outcome_event(attrs.evolve(failed, status="delivered"), NOW)
    assert delivered is not None
    assert "error" not in delivered.data
    assert outcome_event(attrs.evolve(failed, status="cancelled"), NOW) is None


def test_delivery_ids_are_stable_per_event_and_subscription() -> None:
    event = make_event("job.completed", NOW, {"queue": "q"}, subject="j")
    first = deliveries_for(event, [sub(), sub(id="sub_2")], NOW)
    again = deliveries_for(event, [sub(), sub(id="sub_2")], NOW + timedelta(seconds=5))
    assert [d.id for d in first] == [d.id for d in again]
    assert first[0].id != first[1].id
    assert first[0].id == delivery_id(event.id, event.time, "sub_1")
    assert first[0].id.startswith("del_")
    assert first[0].id[4:][14] == "7"  # a UUIDv7
    assert first[0].event["type"] == "job.completed"
    assert first[0].event["subject"] == "j"


def test_events_and_filter_validation_name_the_field() -> None:
    assert parse_events(["job.*", "job.*", "*"]) == ("job.*", "*")
    for bad, path in (([], "events"), (["ok", ""], "events[1]"), (["Job.X"], "events[0]")):
        with pytest.raises(ValidationError) as info:
            parse_events(bad)
        assert info.value.details["validation_errors"][0]["path"] == path
    with pytest.raises(ValidationError) as info:
        parse_filter({"queues": ["a", 1]})
    assert info.value.details["validation_errors"][0]["path"] == "filter.queues[1]"


# -- URLs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/h",
        "https://127.1/h",
        "https://2130706433/h",
        "http://2130706433/",
        "https://0x7f000001/h",
        "https://017700000001/h",
        "https://[::1]/h",
        "https://[::ffff:127.0.0.1]/h",
        "https://[fe80::1]/h",
        "https://localhost/h",
        "https://LOCALHOST./h",
        "https://api.localhost/h",
        "https://10.0.0.1/h",
        "https://172.16.5.4/h",
        "https://192.168.1.1/h",
        "https://169.254.169.254/latest/meta-data",
        "https://0.0.0.0/h",
        "https://100.64.0.1/h",
        "https://[fc00::1]/h",
        "https://[2002:7f00:1::]/h",  # 6to4 carrying 127.0.0.1
        "https://[2002:a00:1::]/h",  # 6to4 carrying 10.0.0.1
        "https://[64:ff9b::a00:1]/h",  # NAT64 of 10.0.0.1
    ],
)
def test_private_targets_are_refused(url: str) -> None:
    with pytest.raises(ValidationError) as info:
        check_url(url, allow_http=True, allow_private=False)
    assert info.value.details["validation_errors"][0]["path"] == "url"
    assert check_url(url, allow_http=True, allow_private=True) == url


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/",
        "example.com/h",
        "https:///h",
        "https://u:p@example.com/",
        "",
        5,
        "https://x\x00.com/",  # httpx refuses such a URL at every attempt: refused here
        "https://exa mple.com/",
        "https://example.com/a b",
        "https://" + "a" * 70 + ".com/",  # a label over 63 characters
    ],
)
def test_malformed_urls_are_refused(url: object) -> None:
    with pytest.raises(ValidationError):
        check_url(url, allow_http=True, allow_private=True)


def test_a_nat64_address_of_a_public_host_is_allowed() -> None:
    """On IPv6-only networks with DNS64, receivers are reached through NAT64: judged by the
    IPv4 address they carry, not refused as a reserved range."""
    assert check_url("https://[64:ff9b::808:808]/h", allow_http=False, allow_private=False)


def test_plain_http_needs_the_setting() -> None:
    with pytest.raises(ValidationError):
        check_url("http://example.com/h", allow_http=False, allow_private=False)
    assert check_url("http://example.com/h", allow_http=True, allow_private=False)
    assert check_url("https://93.184.215.14/h", allow_http=False, allow_private=False)


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("10.9.8.7", True),
        ("fe80::1%eth0", True),
        ("93.184.215.14", False),
    ],
)
async def test_names_are_judged_by_what_they_resolve_to(
    monkeypatch: pytest.MonkeyPatch, address: str, refused: bool
) -> None:
    # The resolver is replaced (no DNS in tests): a public name pointing at a private address.
    loop = asyncio.get_running_loop()

    async def resolve(host: str, port: int, **kwargs: object) -> list[Any]:
        assert host == "hooks.example.com"
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        return [(family, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(loop, "getaddrinfo", resolve)
    if refused:
        with pytest.raises(ValidationError) as info:
            await check_resolved("https://hooks.example.com/h")
        assert "resolves to" in str(info.value)
    else:
        await check_resolved("https://hooks.example.com/h")


async def test_localhost_is_refused_without_resolving() -> None:
    with pytest.raises(ValidationError):
        await check_resolved("https://localhost/h")
    await check_resolved("https://name.invalid/h")  # does not resolve: left to the attempt
