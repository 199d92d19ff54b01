"""The webhooks extension over HTTP on the memory backend, delivering to a real endpoint.

The receiver is a Starlette app on Hypercorn on a loopback port (``webhook_receiver``); the
OJS app allows loopback http targets and retries on a short schedule.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
import webhook_scenarios as sc
from webhook_receiver import Receiver, receiving, until

from ojs_http import create_app
from ojs_http.settings import HttpSettings
from ojs_memory import MemoryBackend

SUBS = "/ojs/v1/webhooks/subscriptions"


def make_app(**settings: Any) -> Any:
    options = {"run_scheduler": True, **sc.WEBHOOK_SETTINGS, **settings}
    return create_app(MemoryBackend(), HttpSettings(**options), auth=sc.KEYS)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with sc.client_of(make_app()) as c:
        yield c


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with receiving() as r:
        yield r


Scenario = Callable[[httpx.AsyncClient, Receiver], Awaitable[None]]


@pytest.mark.parametrize(
    "scenario",
    [
        sc.completed_delivery_is_signed,
        sc.retry_keeps_the_delivery_id,
        sc.gone_is_dead_at_once,
        sc.secret_never_shown_and_rotation_signs_twice,
        sc.producer_is_forbidden,
        sc.test_endpoint_reports,
        sc.concurrent_changes_both_land,
        sc.outcome_events_are_published,
        sc.dead_delivery_is_retried,
        sc.subscriptions_are_tenant_scoped,
    ],
    ids=lambda f: f.__name__,
)
async def test_scenario(scenario: Scenario, client: httpx.AsyncClient, receiver: Receiver) -> None:
    await scenario(client, receiver)


async def test_manifest_declares_webhooks(client: httpx.AsyncClient) -> None:
    r = await client.get("/ojs/manifest", headers=sc.ADMIN)
    uris = [e["uri"] for e in r.json()["extensions"]["official"]]
    assert "urn:ojs:ext:webhooks" in uris


async def test_disabled_webhooks_are_unsupported_and_not_declared() -> None:
    async with sc.client_of(make_app(webhooks=False)) as client:
        r = await client.get("/ojs/manifest", headers=sc.ADMIN)
        uris = [e["uri"] for e in r.json()["extensions"]["official"]]
        assert "urn:ojs:ext:webhooks" not in uris
        r = await client.get(SUBS, headers=sc.ADMIN)
        assert r.status_code == 422
        assert r.json()["error"]["code"] == "unsupported"


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"events": ["*"]}, "url"),
        ({"url": "https://example.com/h"}, "events"),
        ({"url": "https://example.com/h", "events": []}, "events"),
        ({"url": "https://example.com/h", "events": [""]}, "events[0]"),
        ({"url": "https://example.com/h", "events": ["job.*", 3]}, "events[1]"),
        ({"url": "ftp://example.com/h", "events": ["*"]}, "url"),
        (
            {"url": "https://example.com/h", "events": ["*"], "filter": {"queues": "x"}},
            "filter.queues",
        ),
        ({"url": "https://example.com/h", "events": ["*"], "secret": "mine"}, "secret"),
        ({"url": "https://example.com/h", "events": ["*"], "active": "yes"}, "active"),
    ],
)
async def test_invalid_subscription_is_400_with_the_path(
    client: httpx.AsyncClient, body: dict[str, Any], path: str
) -> None:
    r = await client.post(SUBS, json=body, headers=sc.ADMIN)
    assert r.status_code == 400, r.text
    errors = r.json()["error"]["details"]["validation_errors"]
    assert errors[0]["path"] == path


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/h",  # plain http
        "https://127.0.0.1/h",
        "https://[::1]/h",
        "https://localhost/h",
        "https://10.1.2.3/h",
        "https://169.254.169.254/latest",
        "https://2130706433/h",
        "https://0x7f000001/h",
        "https://[::ffff:127.0.0.1]/h",
    ],
)
async def test_private_and_plain_http_targets_are_refused_by_default(url: str) -> None:
    settings = {"webhooks_allow_http": False, "webhooks_allow_private": False}
    async with sc.client_of(make_app(**settings)) as client:
        r = await client.post(SUBS, json={"url": url, "events": ["*"]}, headers=sc.ADMIN)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["details"]["validation_errors"][0]["path"] == "url"


async def test_crud_and_deleted_subscription_cancels_pending(
    client: httpx.AsyncClient, receiver: Receiver
) -> None:
    sub = await sc.subscribe(client, receiver, ["job.completed"], metadata={"team": "a"})
    r = await client.patch(
        f"{SUBS}/{sub['id']}", json={"events": ["job.failed"], "active": False}, headers=sc.ADMIN
    )
    assert r.status_code == 200, r.text
    assert r.json()["events"] == ["job.failed"]
    assert r.json()["active"] is False
    assert r.json()["metadata"] == {"team": "a"}
    assert "secret" not in r.json()
    assert (await client.get(f"{SUBS}/nope", headers=sc.ADMIN)).status_code == 404
    r = await client.delete(f"{SUBS}/{sub['id']}", headers=sc.ADMIN)
    assert r.status_code == 200
    assert r.json()["deleted"] is True
    assert (await client.get(f"{SUBS}/{sub['id']}", headers=sc.ADMIN)).status_code == 404
    assert (await client.get(SUBS, headers=sc.ADMIN)).json()["subscriptions"] == []


async def test_pending_delivery_of_a_deleted_subscription_is_not_sent() -> None:
    backend = MemoryBackend()
    app = create_app(backend, HttpSettings(**sc.WEBHOOK_SETTINGS), auth=sc.KEYS)
    async with receiving() as receiver, sc.client_of(app) as client:
        receiver.answer(500)
        sub = await sc.subscribe(client, receiver, ["job.completed"])
        await sc.run_job(client)
        await sc.until(lambda: receiver.requests, "the first attempt")
        await client.delete(f"{SUBS}/{sub['id']}", headers=sc.ADMIN)
        # The retry is due 0.3 s later; once it is settled as cancelled nothing more is sent.
        await sc.until(
            lambda: any(
                d.status == "cancelled" for log in backend._wh_recent.values() for d in log.values()
            ),
            "the pending delivery cancelled",
        )
        assert len(receiver.requests) == 1


async def test_events_before_the_subscription_are_not_delivered(
    client: httpx.AsyncClient, receiver: Receiver
) -> None:
    await sc.run_job(client, "before.sub")
    sub = await sc.subscribe(client, receiver, ["job.completed"])
    await sc.run_job(client, "after.sub")
    got = await sc.until(lambda: receiver.of_type("job.completed"), "the delivery")
    assert [r.json["data"]["job_type"] for r in got] == ["after.sub"]
    assert sub["id"] == got[0].headers["x-ojs-subscription-id"]


async def test_metrics_count_the_outcomes(receiver: Receiver) -> None:
    """Spec §11.2: a failed attempt and its successful retry are counted, the retry count
    observed, the subscriptions gauged; the metrics are read at GET /metrics."""
    receiver.answer(500, 200)
    async with sc.client_of(make_app(metrics=True)) as client:
        await sc.subscribe(client, receiver, ["job.completed"])
        await sc.run_job(client)

        async def scraped() -> Any:
            r = await client.get("/metrics", headers=sc.ADMIN)
            assert r.status_code == 200, r.text
            return r.text if 'status="success"' in r.text else None

        text = await until(scraped, "the success counted")
    assert 'ojs_webhook_delivery_total{event_type="job.completed",status="failed"} 1.0' in text
    assert 'ojs_webhook_delivery_total{event_type="job.completed",status="success"} 1.0' in text
    assert 'ojs_webhook_delivery_retry_count_sum{event_type="job.completed"} 1.0' in text
    assert "ojs_webhook_delivery_duration_seconds_count" in text
    assert "ojs_webhook_subscriptions 1.0" in text


async def test_a_subscription_has_its_own_timeout(receiver: Receiver) -> None:
    """``timeout_ms`` (5-60 s, spec §7.3) replaces the server's request timeout for the
    subscription's deliveries; null gives it back; out of range is 400 naming it."""
    receiver.delay_s = 0.5
    async with sc.client_of(make_app(webhook_timeout_s=0.2)) as client:
        sub = await sc.subscribe(client, receiver, ["job.completed"], timeout_ms=5000)
        assert sub["timeout_ms"] == 5000
        r = await client.post(f"{SUBS}/{sub['id']}/test", headers=sc.ADMIN)
        assert r.json()["success"] is True, r.text
        r = await client.patch(f"{SUBS}/{sub['id']}", json={"timeout_ms": None}, headers=sc.ADMIN)
        assert "timeout_ms" not in r.json()
        r = await client.post(f"{SUBS}/{sub['id']}/test", headers=sc.ADMIN)
        assert r.json()["success"] is False
        assert r.json()["error"] == "timed out after 0.2 s"
        for bad in (100, 61_000, "5000", True):
            r = await client.patch(
                f"{SUBS}/{sub['id']}", json={"timeout_ms": bad}, headers=sc.ADMIN
            )
            assert r.status_code == 400, r.text
            assert r.json()["error"]["details"]["validation_errors"][0]["path"] == "timeout_ms"


class _CountingBackend(MemoryBackend):
    """Counts the subscription listings (what a scrape's webhook gauge reads)."""

    listings = 0

    async def list_subscriptions(self, *args: Any, **kwargs: Any) -> Any:
        self.listings += 1
        return await super().list_subscriptions(*args, **kwargs)


async def test_scrapes_read_the_subscriptions_at_most_once_per_refresh_interval() -> None:
    """``ojs_webhook_subscriptions`` is read like the job gauges: a burst of scrapes lists the
    subscriptions once (``JobMetrics.refresh_interval``), not once per scrape."""
    backend = _CountingBackend()
    options = {**sc.WEBHOOK_SETTINGS, "metrics": True}
    app = create_app(backend, HttpSettings(**options), auth=sc.KEYS)
    async with sc.client_of(app) as client:
        for _ in range(5):
            r = await client.get("/metrics", headers=sc.ADMIN)
            assert r.status_code == 200, r.text
            assert "ojs_webhook_subscriptions 0.0" in r.text
    assert backend.listings == 1
