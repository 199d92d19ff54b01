"""The webhooks storage capability of the memory backend (tests/nats has NATS's)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import attrs
import pytest

from ojs_core.events import make_event
from ojs_core.model import Event
from ojs_core.webhook_store import WebhookStore
from ojs_core.webhooks import Subscription, deliveries_for, new_secret
from ojs_memory import MemoryBackend
from ojs_memory import webhooks as memory_webhooks

NOW = datetime(2026, 2, 15, 22, 0, tzinfo=UTC)


def subscription(**changes: object) -> Subscription:
    base: dict[str, object] = {
        "id": "sub_1",
        "url": "https://example.com/h",
        "events": ("job.*",),
        "created_at": NOW - timedelta(seconds=1),
        "updated_at": NOW,
        "secret": new_secret(),
    }
    base.update(changes)
    return Subscription(**base)  # type: ignore[arg-type]


def event(event_type: str = "job.completed") -> Event:
    return make_event(event_type, NOW, {"queue": "q"}, subject="j")


async def test_capability_and_crud() -> None:
    backend = MemoryBackend()
    assert isinstance(backend, WebhookStore)
    sub = subscription()
    await backend.put_subscription(sub)
    assert await backend.get_subscription("sub_1") == sub
    assert await backend.list_subscriptions() == [sub]
    assert await backend.delete_subscription("sub_1") is True
    assert await backend.delete_subscription("sub_1") is False
    await backend.reset()
    assert await backend.list_subscriptions() == []


async def test_events_reach_the_intake_only_while_someone_subscribes() -> None:
    backend = MemoryBackend()
    await backend.publish_events([event()])
    assert (await backend.take_webhook_events(10)).events == []
    await backend.put_subscription(subscription())
    await backend.publish_events([event(), event("job.failed")])
    batch = await backend.take_webhook_events(10)
    assert [e.type for e in batch.events] == ["job.completed", "job.failed"]
    await batch.ack()
    assert (await backend.take_webhook_events(10)).events == []


async def test_deliveries_are_added_once_claimed_once_and_rescheduled() -> None:
    backend = MemoryBackend()
    sub = subscription()
    ev = event()
    await backend.add_deliveries(deliveries_for(ev, [sub], NOW))
    await backend.add_deliveries(deliveries_for(ev, [sub], NOW))  # routed again
    (claimed,) = await backend.claim_deliveries(NOW, 10)
    assert await backend.claim_deliveries(NOW, 10) == []  # leased
    retry = attrs.evolve(
        claimed, attempt=1, status="pending", next_at=NOW + timedelta(seconds=30), updated_at=NOW
    )
    await backend.settle_delivery(retry)
    assert await backend.claim_deliveries(NOW + timedelta(seconds=29), 10) == []
    (again,) = await backend.claim_deliveries(NOW + timedelta(seconds=30), 10)
    assert again.attempt == 1
    dead = attrs.evolve(again, attempt=2, status="dead", updated_at=NOW + timedelta(seconds=31))
    await backend.settle_delivery(dead)
    listed = await backend.list_deliveries("sub_1", 10)
    assert [(d.id, d.status, d.attempt) for d in listed] == [(claimed.id, "dead", 2)]
    assert await backend.claim_deliveries(NOW + timedelta(days=2), 10) == []


async def test_an_unsettled_claim_comes_back_after_its_lease() -> None:
    backend = MemoryBackend()
    await backend.add_deliveries(deliveries_for(event(), [subscription()], NOW))
    (claimed,) = await backend.claim_deliveries(NOW, 10)
    (again,) = await backend.claim_deliveries(NOW + timedelta(minutes=3), 10)
    assert again.id == claimed.id


async def test_a_full_subscription_queue_refuses_only_its_own_deliveries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past its bound, a subscription's new deliveries are logged dead at once; another
    subscription's are still added."""
    monkeypatch.setattr(memory_webhooks, "MAX_PENDING_PER_SUBSCRIPTION", 2)
    backend = MemoryBackend()
    down, other = subscription(), subscription(id="sub_2")
    for i in range(3):  # three for the full one, two for the other (each bound is 2)
        event = make_event("job.completed", NOW, {"queue": "q"}, subject=f"j{i}")
        await backend.add_deliveries(deliveries_for(event, [down, other][: 2 if i < 2 else 1], NOW))
    logged = await backend.list_deliveries(down.id, 10)
    assert [(d.status, d.last_error) for d in logged] == [
        ("dead", "the subscription's queue is full")
    ]
    claimed = await backend.claim_deliveries(NOW, 10)
    assert sorted(d.subscription_id for d in claimed) == sorted([down.id, other.id] * 2)


async def test_change_applies_to_the_stored_version_and_never_resurrects() -> None:
    backend = MemoryBackend()
    sub = subscription()
    await backend.put_subscription(sub)
    changed = await backend.change_subscription(sub.id, lambda s: attrs.evolve(s, active=False))
    assert changed is not None
    assert changed.active is False
    assert await backend.get_subscription(sub.id) == changed
    assert await backend.delete_subscription(sub.id)
    assert await backend.change_subscription(sub.id, lambda s: s) is None
    assert await backend.get_subscription(sub.id) is None


async def test_deleting_a_subscription_drops_its_delivery_log() -> None:
    backend = MemoryBackend()
    sub = subscription()
    await backend.put_subscription(sub)
    await backend.add_deliveries(deliveries_for(event(), [sub], NOW))
    (claimed,) = await backend.claim_deliveries(NOW, 10)
    await backend.settle_delivery(attrs.evolve(claimed, status="dead", attempt=1))
    assert [d.id for d in await backend.list_deliveries(sub.id, 10)] == [claimed.id]
    assert await backend.delete_subscription(sub.id)
    assert await backend.list_deliveries(sub.id, 10) == []
