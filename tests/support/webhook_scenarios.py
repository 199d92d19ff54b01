"""End-to-end webhook scenarios over HTTP, shared by the memory and NATS suites.

Each takes an ``httpx.AsyncClient`` on an OJS app (admin key by default, see :data:`ADMIN`)
whose settings allow loopback http endpoints and use :data:`FAST_SCHEDULE`, and a
:class:`~webhook_receiver.Receiver`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from starlette.applications import Starlette
from webhook_receiver import Receiver, until

from ojs_http.auth import ApiKeys

__all__ = [
    "ADMIN",
    "FAST_SCHEDULE",
    "KEYS",
    "PRODUCER",
    "WEBHOOK_SETTINGS",
    "client_of",
    "run_job",
    "subscribe",
]

KEYS = ApiKeys.load("admin:KA,producer:KP,worker:KW")
ADMIN = {"Authorization": "Bearer KA"}
PRODUCER = {"Authorization": "Bearer KP"}
WORKER = {"Authorization": "Bearer KW"}
#: Three attempts, 0.3 s apart: retries within a test's patience.
FAST_SCHEDULE = (0.0, 0.3, 0.3)
WEBHOOK_SETTINGS: dict[str, Any] = {
    "webhooks_allow_http": True,
    "webhooks_allow_private": True,
    "webhook_schedule": FAST_SCHEDULE,
    "webhook_poll_s": 0.02,
}
SUBS = "/ojs/v1/webhooks/subscriptions"


@asynccontextmanager
async def client_of(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """A client on ``app`` through the ASGI transport, its lifespan running."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30) as client,
    ):
        yield client


async def subscribe(
    client: httpx.AsyncClient, receiver: Receiver, events: list[str], **extra: Any
) -> dict[str, Any]:
    """Create a subscription to ``receiver``; the answer (with its secret)."""
    r = await client.post(
        SUBS, json={"url": receiver.url, "events": events, **extra}, headers=ADMIN
    )
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


async def run_job(client: httpx.AsyncClient, job_type: str = "email.send") -> str:
    """Enqueue a job, fetch it and acknowledge it; its id."""
    r = await client.post(
        "/ojs/v1/jobs", json={"type": job_type, "args": [1], "queue": "hooks"}, headers=PRODUCER
    )
    assert r.status_code == 201, r.text
    job_id: str = r.json()["job"]["id"]
    r = await client.post(
        "/ojs/v1/workers/fetch", json={"queues": ["hooks"], "worker_id": "w1"}, headers=WORKER
    )
    assert r.status_code == 200, r.text
    assert r.json()["job"]["id"] == job_id
    r = await client.post(
        "/ojs/v1/workers/ack", json={"job_id": job_id, "result": {"ok": True}}, headers=WORKER
    )
    assert r.status_code == 200, r.text
    return job_id


async def completed_delivery_is_signed(client: httpx.AsyncClient, receiver: Receiver) -> None:
    """A job completed after subscribing reaches the receiver, signed with the secret."""
    sub = await subscribe(client, receiver, ["job.completed"], filter={"queues": ["hooks"]})
    job_id = await run_job(client)
    got = await until(lambda: receiver.of_type("job.completed"), "the job.completed delivery")
    request = got[0]
    assert request.verifies(sub["secret"])
    assert not request.verifies("whsec_wrong")
    assert request.json["type"] == "job.completed"
    assert request.json["subject"] == job_id
    assert request.json["data"]["queue"] == "hooks"
    assert request.headers["x-ojs-subscription-id"] == sub["id"]
    assert request.headers["x-ojs-delivery-id"].startswith("del_")
    assert request.headers["user-agent"].startswith("ojs-python-webhook/")
    assert request.headers["content-type"] == "application/json"
    # Only job.completed was subscribed to.
    assert {r.headers["x-ojs-event-type"] for r in receiver.requests} == {"job.completed"}


async def retry_keeps_the_delivery_id(client: httpx.AsyncClient, receiver: Receiver) -> None:
    """A 500 then a 200: the same delivery twice, with one id; listed as delivered."""
    receiver.answer(500, 200)
    sub = await subscribe(client, receiver, ["job.completed"])
    await run_job(client)
    await until(lambda: len(receiver.requests) >= 2, "the retried delivery")
    first, second = receiver.requests[:2]
    assert first.headers["x-ojs-delivery-id"] == second.headers["x-ojs-delivery-id"]
    assert first.body == second.body

    async def listed() -> Any:
        r = await client.get(f"{SUBS}/{sub['id']}/deliveries", headers=ADMIN)
        found = r.json()["deliveries"]
        return found if found and found[0]["status"] == "delivered" else None

    found = await until(listed, "the delivered delivery listed")
    assert found[0]["attempt"] == 2
    assert found[0]["id"] == first.headers["x-ojs-delivery-id"]


async def gone_is_dead_at_once(client: httpx.AsyncClient, receiver: Receiver) -> None:
    """A 410 is not retried: the delivery is dead after one attempt, and listed as such."""
    receiver.answer(410)
    sub = await subscribe(client, receiver, ["job.completed"])
    await run_job(client)

    async def dead() -> Any:
        r = await client.get(f"{SUBS}/{sub['id']}/deliveries", headers=ADMIN)
        found = [d for d in r.json()["deliveries"] if d["status"] == "dead"]
        return found or None

    found = await until(dead, "the dead delivery listed")
    assert found[0]["attempt"] == 1
    assert found[0]["last_status_code"] == 410
    assert len(receiver.requests) == 1


async def secret_never_shown_and_rotation_signs_twice(
    client: httpx.AsyncClient, receiver: Receiver
) -> None:
    """GET and list never show the secret; after a rotation deliveries carry both
    signatures, each verifying with its secret."""
    sub = await subscribe(client, receiver, ["job.*"])
    one = (await client.get(f"{SUBS}/{sub['id']}", headers=ADMIN)).json()
    listed = (await client.get(SUBS, headers=ADMIN)).json()["subscriptions"]
    assert "secret" not in one
    assert all("secret" not in s for s in listed)
    assert sub["secret"] not in (await client.get(SUBS, headers=ADMIN)).text
    r = await client.post(f"{SUBS}/{sub['id']}/rotate-secret", headers=ADMIN)
    assert r.status_code == 200, r.text
    new_secret = r.json()["secret"]
    assert new_secret != sub["secret"]
    assert new_secret.startswith("whsec_")
    await run_job(client)
    got = await until(lambda: receiver.of_type("job.completed"), "a delivery after rotation")
    signatures = got[0].headers["x-ojs-signature"].split(",")
    assert len(signatures) == 2
    assert got[0].verifies(new_secret)
    assert got[0].verifies(sub["secret"])


async def producer_is_forbidden(client: httpx.AsyncClient, receiver: Receiver) -> None:
    """Only admins manage webhooks."""
    r = await client.post(SUBS, json={"url": receiver.url, "events": ["*"]}, headers=PRODUCER)
    assert r.status_code == 403
    assert (await client.get(SUBS, headers=PRODUCER)).status_code == 403


async def test_endpoint_reports(client: httpx.AsyncClient, receiver: Receiver) -> None:
    """POST .../test sends a signed webhook.test now and reports the answer."""
    sub = await subscribe(client, receiver, ["job.completed"])
    r = await client.post(f"{SUBS}/{sub['id']}/test", headers=ADMIN)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] is True
    assert body["status_code"] == 200
    assert body["response_body"] == "ok"
    assert receiver.requests[0].headers["x-ojs-event-type"] == "webhook.test"
    assert receiver.requests[0].verifies(sub["secret"])


async def concurrent_changes_both_land(client: httpx.AsyncClient, receiver: Receiver) -> None:
    """An update and a rotation at the same moment both take effect (compare-and-swap), and
    an update after a delete is 404 without bringing the subscription back."""
    for _ in range(5):
        sub = await subscribe(client, receiver, ["job.completed"])
        url = f"{SUBS}/{sub['id']}"
        patched, rotated = await asyncio.gather(
            client.patch(url, json={"events": ["job.failed"]}, headers=ADMIN),
            client.post(f"{url}/rotate-secret", headers=ADMIN),
        )
        assert patched.status_code == 200, patched.text
        assert rotated.status_code == 200, rotated.text
        now = (await client.get(url, headers=ADMIN)).json()
        assert now["events"] == ["job.failed"]
        assert "previous_secret_expires_at" in now
    gone = await client.delete(url, headers=ADMIN)
    assert gone.status_code == 200
    late = await client.patch(url, json={"active": False}, headers=ADMIN)
    assert late.status_code == 404
    assert (await client.get(url, headers=ADMIN)).status_code == 404


DELIVERIES = "/ojs/v1/webhooks/deliveries"


async def events_of(client: httpx.AsyncClient, *types: str) -> list[dict[str, Any]]:
    """The logged events of ``types`` (``GET /ojs/v1/events``)."""
    r = await client.get("/ojs/v1/events", params={"types": ",".join(types)}, headers=ADMIN)
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()["events"]
    return found


async def outcome_events_are_published(client: httpx.AsyncClient, receiver: Receiver) -> None:
    """Spec §11.1: a failed attempt publishes webhook.failed, the success webhook.delivered,
    creating and deleting a subscription webhook.subscription.created / .deleted; a ``*``
    subscription is never sent the outcome events (no feedback loop)."""
    receiver.answer(500, 200)
    sub = await subscribe(client, receiver, ["*"])

    async def created() -> Any:
        return await events_of(client, "webhook.subscription.created")

    found = await until(created, "webhook.subscription.created")
    assert [e["data"]["subscription_id"] for e in found] == [sub["id"]]
    assert "secret" not in str(found)
    await run_job(client)

    async def outcomes() -> Any:
        got = await events_of(client, "webhook.failed", "webhook.delivered")
        return got if any(e["type"] == "webhook.delivered" for e in got) else None

    # The first request (of some job event) was answered 500, its retry 200.
    first = await until(lambda: receiver.requests, "a request")
    delivery_id = first[0].headers["x-ojs-delivery-id"]

    async def both() -> Any:
        got = await outcomes()
        mine = [e for e in got or [] if e["data"]["delivery_id"] == delivery_id]
        return mine if len(mine) == 2 else None

    mine = await until(both, "webhook.failed and webhook.delivered")
    assert [e["type"] for e in mine] == ["webhook.failed", "webhook.delivered"]
    failed, delivered = mine
    assert failed["data"]["status_code"] == 500
    assert failed["data"]["attempt"] == 1
    assert failed["data"]["event_type"] == first[0].json["type"]
    assert failed["data"]["next_attempt_at"]
    assert delivered["data"]["attempt"] == 2
    assert delivered["data"]["subscription_id"] == sub["id"]
    assert delivered["data"]["event_id"] == first[0].json["id"]
    r = await client.delete(f"{SUBS}/{sub['id']}", headers=ADMIN)
    assert r.status_code == 200

    async def deleted() -> Any:
        return await events_of(client, "webhook.subscription.deleted")

    gone = await until(deleted, "webhook.subscription.deleted")
    assert [e["data"]["subscription_id"] for e in gone] == [sub["id"]]
    sent = {r.headers["x-ojs-event-type"] for r in receiver.requests}
    assert not sent & {"webhook.failed", "webhook.delivered", "webhook.dead"}


async def _dead(client: httpx.AsyncClient, sub_id: str) -> dict[str, Any]:
    async def dead() -> Any:
        r = await client.get(
            DELIVERIES, params={"status": "dead", "subscription_id": sub_id}, headers=ADMIN
        )
        assert r.status_code == 200, r.text
        return r.json()["deliveries"]

    found: list[dict[str, Any]] = await until(dead, "the dead delivery listed")
    return found[0]


async def dead_delivery_is_retried(client: httpx.AsyncClient, receiver: Receiver) -> None:
    """Spec §10: a dead delivery is listed, shown with its event, and retried by
    ``POST .../deliveries/{id}/retry``: sent again with the same id and body, attempts counted
    from zero; a second retry of a delivered one is 409, an unknown id 404, a bad status 400;
    webhook.dead was published."""
    receiver.answer(410, 200)
    sub = await subscribe(client, receiver, ["job.completed"])
    await run_job(client)
    dead = await _dead(client, sub["id"])
    assert dead["attempt"] == 1
    assert dead["last_status_code"] == 410
    r = await client.get(f"{DELIVERIES}/{dead['id']}", headers=ADMIN)
    assert r.status_code == 200, r.text
    assert r.json()["event"]["type"] == "job.completed"

    async def dead_event() -> Any:
        return await events_of(client, "webhook.dead")

    assert [e["data"]["delivery_id"] for e in await until(dead_event, "webhook.dead")] == [
        dead["id"]
    ]
    r = await client.post(f"{DELIVERIES}/{dead['id']}/retry", headers=ADMIN)
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "pending"
    assert r.json()["attempt"] == 0
    await until(lambda: len(receiver.requests) >= 2, "the retried delivery")
    first, second = receiver.requests
    assert second.headers["x-ojs-delivery-id"] == first.headers["x-ojs-delivery-id"]
    assert second.body == first.body
    assert second.verifies(sub["secret"])

    async def delivered() -> Any:
        r = await client.get(f"{DELIVERIES}/{dead['id']}", headers=ADMIN)
        return r.json() if r.json()["status"] == "delivered" else None

    done = await until(delivered, "the retried delivery listed as delivered")
    assert done["attempt"] == 1
    r = await client.post(f"{DELIVERIES}/{dead['id']}/retry", headers=ADMIN)
    assert r.status_code == 409, r.text
    r = await client.post(f"{DELIVERIES}/del_nope/retry", headers=ADMIN)
    assert r.status_code == 404, r.text
    r = await client.get(DELIVERIES, params={"status": "lost"}, headers=ADMIN)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["details"]["validation_errors"][0]["path"] == "status"
    assert (await client.get(DELIVERIES, headers=PRODUCER)).status_code == 403


async def subscriptions_are_tenant_scoped(client: httpx.AsyncClient, receiver: Receiver) -> None:
    """Spec §9.3: a subscription created with ``X-OJS-Tenant: a`` gets only tenant a's
    events; tenant b neither lists nor reads nor deletes it; an unscoped admin sees it."""
    a = {**ADMIN, "X-OJS-Tenant": "acme"}
    b = {**ADMIN, "X-OJS-Tenant": "beta"}
    r = await client.post(SUBS, json={"url": receiver.url, "events": ["job.enqueued"]}, headers=a)
    assert r.status_code == 201, r.text
    sub = r.json()
    assert sub["tenant_id"] == "acme"
    r = await client.post("/ojs/v1/jobs", json={"type": "t.untagged", "args": []}, headers=PRODUCER)
    assert r.status_code == 201, r.text
    assert (await client.get(f"{SUBS}/{sub['id']}", headers=b)).status_code == 404
    assert (await client.delete(f"{SUBS}/{sub['id']}", headers=b)).status_code == 404
    assert (await client.get(SUBS, headers=b)).json()["subscriptions"] == []
    assert [s["id"] for s in (await client.get(SUBS, headers=a)).json()["subscriptions"]] == [
        sub["id"]
    ]
    assert [s["id"] for s in (await client.get(SUBS, headers=ADMIN)).json()["subscriptions"]] == [
        sub["id"]
    ]
    for tenant in ("beta", "acme"):
        r = await client.post(
            "/ojs/v1/jobs",
            json={"type": f"t.{tenant}", "args": []},
            headers={**PRODUCER, "X-OJS-Tenant": tenant},
        )
        assert r.status_code == 201, r.text
    got = await until(lambda: receiver.of_type("job.enqueued"), "acme's delivery")

    async def settled() -> Any:
        r = await client.get(DELIVERIES, params={"status": "delivered"}, headers=ADMIN)
        return r.json()["deliveries"]

    # The others' events came first: had they been routed to the subscription, their
    # deliveries would be due no later than acme's, and logged with it.
    logged = await until(settled, "acme's delivery logged")
    assert [d["event_type"] for d in logged] == ["job.enqueued"]
    assert [r.json["data"]["job_type"] for r in receiver.of_type("job.enqueued")] == ["t.acme"]
    assert got[0].json["data"]["tenant_id"] == "acme"
    r = await client.get(DELIVERIES, headers=b)
    assert r.json()["deliveries"] == []
    r = await client.get(DELIVERIES, headers=a)
    assert len(r.json()["deliveries"]) == 1
