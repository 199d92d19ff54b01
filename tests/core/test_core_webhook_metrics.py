"""The webhook metrics (``ojs_core.webhook_prometheus``): label cardinality and how often the
subscription gauge reads the store."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry

from ojs_core.events import make_event
from ojs_core.prometheus import OTHER
from ojs_core.webhook_prometheus import MAX_DURATION_SUBSCRIPTIONS, WebhookMetrics

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _delivered(sub: str) -> Any:
    data = {"event_type": "job.completed", "subscription_id": sub, "duration_ms": 5, "attempt": 1}
    return make_event("webhook.delivered", NOW, data)


def _label_values(registry: CollectorRegistry, sample: str, label: str) -> set[str]:
    return {
        s.labels[label]
        for m in registry.collect()
        for s in m.samples
        if s.name == sample and label in s.labels
    }


def test_the_duration_histogram_labels_at_most_100_subscriptions() -> None:
    """The histogram has a series per bucket: its subscription label is capped far below the
    dead counter's (spec §11.2 labels both by ``subscription_id``; the rest are ``_other``)."""
    registry = CollectorRegistry()
    metrics = WebhookMetrics(registry, registry)
    metrics.observe([_delivered(f"sub-{i}") for i in range(MAX_DURATION_SUBSCRIPTIONS + 50)])
    subs = _label_values(registry, "ojs_webhook_delivery_duration_seconds_count", "subscription_id")
    assert MAX_DURATION_SUBSCRIPTIONS == 100
    assert len(subs) == MAX_DURATION_SUBSCRIPTIONS + 1
    assert OTHER in subs


class _Store:
    def __init__(self) -> None:
        self.listings = 0

    async def list_subscriptions(self) -> list[Any]:
        self.listings += 1
        return []


async def test_the_subscription_gauge_is_read_at_most_once_per_interval() -> None:
    registry = CollectorRegistry()
    metrics = WebhookMetrics(registry, registry, refresh_interval=60.0)
    store = _Store()
    for _ in range(3):
        await metrics.refresh(store)  # type: ignore[arg-type]
    assert (store.listings, metrics.subscriptions) == (1, 0)
    await metrics.refresh(store, force=True)  # type: ignore[arg-type]
    assert store.listings == 2
