"""The webhooks extension on a real nats-server: storage, end to end over HTTP, replicas.

No NATS mocks: the backends are connections to the session's server (``nats_fixtures``), the
receiver a real HTTP endpoint on a loopback port (``webhook_receiver``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import httpx
import pytest
import webhook_scenarios as sc
from nats_fixtures import BackendFactory
from webhook_receiver import Receiver, receiving, until

from ojs_core.errors import ConflictError
from ojs_core.events import make_event
from ojs_core.webhook_store import WebhookStore
from ojs_core.webhooks import Subscription, deliveries_for, new_secret
from ojs_http import create_app
from ojs_http.settings import HttpSettings
from ojs_nats import names, provision
from ojs_nats.backend import NatsBackend


def make_app(backend: NatsBackend, **settings: Any) -> Any:
    options = {**sc.WEBHOOK_SETTINGS, **settings}
    return create_app(backend, HttpSettings(**options), auth=sc.KEYS, manage_backend=False)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with receiving() as r:
        yield r


def subscription(now: datetime, **changes: Any) -> Subscription:
    return Subscription(
        id="sub_" + now.strftime("%H%M%S%f"),
        url="https://example.com/hook",
        events=("job.*",),
        created_at=now,
        updated_at=now,
        secret=new_secret(),
        **changes,
    )


async def test_backend_declares_the_capability(new_backend: BackendFactory) -> None:
    assert isinstance(await new_backend(), WebhookStore)


async def test_subscriptions_are_stored_and_listed(new_backend: BackendFactory) -> None:
    one, two = await new_backend(), await new_backend()
    now = datetime.now(UTC)
    sub = subscription(now, queues=("q",), metadata={"k": "v"})
    await one.put_subscription(sub)
    assert await two.get_subscription(sub.id) == sub
    assert await two.list_subscriptions() == [sub]
    assert await two.delete_subscription(sub.id) is True
    assert await one.get_subscription(sub.id) is None
    assert await one.list_subscriptions() == []
    assert await one.delete_subscription(sub.id) is False


async def test_a_change_is_a_compare_and_swap_and_never_resurrects(
    new_backend: BackendFactory,
) -> None:
    """Changes through two replicas both land; a change of a deleted subscription is
    ``None`` and stores nothing."""
    one, two = await new_backend(), await new_backend()
    now = datetime.now(UTC)
    sub = subscription(now)
    await one.put_subscription(sub)
    await asyncio.gather(
        one.change_subscription(sub.id, lambda s: attrs.evolve(s, active=False)),
        two.change_subscription(sub.id, lambda s: s.rotated(now)),
    )
    stored = await one.get_subscription(sub.id)
    assert stored is not None
    assert stored.active is False
    assert stored.previous_secret == sub.secret
    assert await two.delete_subscription(sub.id)
    assert await one.change_subscription(sub.id, lambda s: attrs.evolve(s, active=True)) is None
    assert await one.get_subscription(sub.id) is None


async def test_deleting_a_subscription_drops_its_delivery_log(
    new_backend: BackendFactory,
) -> None:
    backend = await new_backend()
    now = datetime.now(UTC)
    sub = subscription(now - timedelta(seconds=1))
    await backend.put_subscription(sub)
    event = make_event("job.completed", now, {"queue": "q"}, subject="j9")
    await backend.add_deliveries(deliveries_for(event, [sub], now))
    (claimed,) = await backend.claim_deliveries(now, 10)
    await backend.settle_delivery(attrs.evolve(claimed, status="delivered", attempt=1))
    assert [d.id for d in await backend.list_deliveries(sub.id, 10)] == [claimed.id]
    assert await backend.delete_subscription(sub.id)
    assert await backend.list_deliveries(sub.id, 10) == []


async def test_a_delivery_is_added_once_and_claimed_by_one_replica(
    new_backend: BackendFactory,
) -> None:
    one, two = await new_backend(), await new_backend()
    now = datetime.now(UTC)
    sub = subscription(now - timedelta(seconds=1))
    event = make_event("job.completed", now, {"queue": "q"}, subject="j1")
    deliveries = deliveries_for(event, [sub], now)
    # Routed twice (a replica died before acknowledging the event): the same id, added once.
    await one.add_deliveries(deliveries)
    await two.add_deliveries(deliveries_for(event, [sub], now))
    claims = [*(await one.claim_deliveries(now, 10)), *(await two.claim_deliveries(now, 10))]
    assert [d.id for d in claims] == [deliveries[0].id]
    assert claims[0].attempt == 0
    info = await one.js.stream_info(names.WEBHOOK_STREAM)
    assert info.state.messages == 1


async def test_claims_never_settled_are_not_kept_forever(
    new_backend: BackendFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claim whose send failed or was cancelled is never settled: once the server has taken
    it back, the replica forgets it (its table of claims stays bounded)."""
    backend = await new_backend()
    now = datetime.now(UTC)
    sub = subscription(now - timedelta(seconds=1))
    event = make_event("job.completed", now, {"queue": "q"}, subject="j2")
    await backend.add_deliveries(deliveries_for(event, [sub], now))
    assert len(await backend.claim_deliveries(now, 10)) == 1  # and never settled
    store = backend.webhooks
    assert len(store._claimed) == 1
    monkeypatch.setattr(provision, "WEBHOOK_CLAIM_S", 0.0)
    await backend.claim_deliveries(now, 10)
    assert store._claimed == {}


async def test_a_rescheduled_delivery_comes_back_after_its_delay(
    new_backend: BackendFactory,
) -> None:
    backend = await new_backend()
    now = datetime.now(UTC)
    sub = subscription(now - timedelta(seconds=1))
    event = make_event("job.failed", now, {"queue": "q"})
    await backend.add_deliveries(deliveries_for(event, [sub], now))
    (claimed,) = await backend.claim_deliveries(now, 10)
    later = datetime.now(UTC)
    retry = attrs.evolve(
        claimed,
        attempt=1,
        status="pending",
        last_status_code=503,
        last_error="HTTP 503",
        updated_at=later,
        next_at=later + timedelta(seconds=0.5),
    )
    await backend.settle_delivery(retry)
    assert await backend.claim_deliveries(datetime.now(UTC), 10) == []
    again = await until(
        lambda: backend.claim_deliveries(datetime.now(UTC), 10), "the delayed retry"
    )
    assert again[0].id == claimed.id
    assert again[0].attempt == 1
    listed = await backend.list_deliveries(sub.id, 10)
    assert [(d.id, d.status, d.last_status_code) for d in listed] == [(claimed.id, "pending", 503)]
    await backend.settle_delivery(attrs.evolve(again[0], status="dead", updated_at=later))
    listed = await backend.list_deliveries(sub.id, 10)
    assert [(d.id, d.status) for d in listed] == [(claimed.id, "dead")]


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
async def test_scenario(
    scenario: Scenario, new_backend: BackendFactory, receiver: Receiver
) -> None:
    async with sc.client_of(make_app(await new_backend())) as client:
        await scenario(client, receiver)


async def test_two_replicas_deliver_each_event_once(
    new_backend: BackendFactory, receiver: Receiver
) -> None:
    one, two = await new_backend(), await new_backend()
    async with (
        sc.client_of(make_app(one)) as first,
        sc.client_of(make_app(two)) as second,
    ):
        await sc.subscribe(first, receiver, ["job.completed"])
        jobs = 6
        for i in range(jobs):
            await sc.run_job(first if i % 2 else second, f"replica.n{i}")
        await until(
            lambda: len(receiver.of_type("job.completed")) >= jobs, "every delivery", within=20
        )

        async def drained() -> bool:
            events = await one.js.consumer_info(names.EVENTS_STREAM, names.WEBHOOK_EVENTS_CONSUMER)
            queue = await one.js.consumer_info(names.WEBHOOK_STREAM, names.WEBHOOK_CONSUMER)
            return not any(
                (
                    events.num_pending,
                    events.num_ack_pending,
                    queue.num_pending,
                    queue.num_ack_pending,
                )
            )

        # Every event routed and every delivery settled: nothing else can arrive.
        await until(drained, "both consumers drained")
        got = receiver.of_type("job.completed")
        ids = [r.headers["x-ojs-delivery-id"] for r in got]
        assert len(ids) == jobs
        assert len(set(ids)) == jobs
        assert sorted(r.json["data"]["job_type"] for r in got) == sorted(
            f"replica.n{i}" for i in range(jobs)
        )


async def test_a_full_subscription_queue_refuses_only_its_own_deliveries(
    new_backend: BackendFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An endpoint down for days fills only its own subscription's queue: past the bound its
    new deliveries are logged dead at once, routing goes on (nothing raised), and another
    subscription's deliveries are still added."""
    monkeypatch.setattr(provision, "MAX_PENDING_PER_SUBSCRIPTION", 2)
    backend = await new_backend()  # streams made with the small bound
    now = datetime.now(UTC)
    down = subscription(now - timedelta(seconds=2))
    other = attrs.evolve(subscription(now - timedelta(seconds=1)), id="sub_other")
    events = [make_event("job.completed", now, {"queue": "q"}, subject=f"j{i}") for i in range(3)]
    for i, event in enumerate(events):  # three for the full one, two for the other
        await backend.add_deliveries(deliveries_for(event, [down, other][: 2 if i < 2 else 1], now))
    logged = await backend.list_deliveries(down.id, 10)
    assert [(d.status, d.last_error) for d in logged] == [
        ("dead", "the subscription's queue is full")
    ]
    claimed = await backend.claim_deliveries(now, 10)
    assert sorted(d.subscription_id for d in claimed) == sorted([down.id, other.id] * 2)


async def test_a_dead_delivery_is_retried_once_through_two_replicas(
    new_backend: BackendFactory, receiver: Receiver
) -> None:
    """The delivery log and the retry are shared: a delivery dead on one replica is listed
    by the other, and a retry sent through both at once sends it once; the outcome events
    of both replicas are in the one event log."""
    one, two = await new_backend(), await new_backend()
    receiver.answer(410, 200)
    async with (
        sc.client_of(make_app(one)) as first,
        sc.client_of(make_app(two)) as second,
    ):
        sub = await sc.subscribe(first, receiver, ["job.completed"])
        await sc.run_job(first)

        async def dead_on_two() -> Any:
            r = await second.get(sc.DELIVERIES, params={"status": "dead"}, headers=sc.ADMIN)
            return r.json()["deliveries"]

        (dead,) = await until(dead_on_two, "the dead delivery listed by the other replica")
        assert dead["subscription_id"] == sub["id"]
        url = f"{sc.DELIVERIES}/{dead['id']}/retry"
        answers = await asyncio.gather(
            first.post(url, headers=sc.ADMIN), second.post(url, headers=sc.ADMIN)
        )
        assert [a.status_code for a in answers] == [202, 202], [a.text for a in answers]

        async def delivered() -> Any:
            r = await first.get(f"{sc.DELIVERIES}/{dead['id']}", headers=sc.ADMIN)
            return r.json()["status"] == "delivered"

        await until(delivered, "the retried delivery delivered")

        async def drained() -> bool:
            queue = await one.js.consumer_info(names.WEBHOOK_STREAM, names.WEBHOOK_CONSUMER)
            return not (queue.num_pending or queue.num_ack_pending)

        await until(drained, "the delivery queue drained")
        assert len(receiver.requests) == 2

        async def outcomes() -> Any:
            got = await sc.events_of(second, "webhook.dead", "webhook.delivered")
            return [e["type"] for e in got] if len(got) >= 2 else None

        assert await until(outcomes, "both outcome events") == ["webhook.dead", "webhook.delivered"]


async def test_a_retry_into_a_full_queue_is_a_conflict(
    new_backend: BackendFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A manual retry the stream refuses because the subscription's queue is full is a 409
    the admin can act on, never a 500."""
    monkeypatch.setattr(provision, "MAX_PENDING_PER_SUBSCRIPTION", 1)
    backend = await new_backend()
    now = datetime.now(UTC)
    sub = subscription(now - timedelta(seconds=1))
    first, second = (
        make_event("job.completed", now, {"queue": "q"}, subject=f"j{i}") for i in range(2)
    )
    await backend.add_deliveries(deliveries_for(first, [sub], now))  # the queue is full
    (dead,) = deliveries_for(second, [sub], now)
    queued = attrs.evolve(dead, status="pending", attempt=0)
    with pytest.raises(ConflictError):
        await backend.redeliver(queued, "k1")
