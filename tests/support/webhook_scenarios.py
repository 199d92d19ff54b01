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
