"""Prometheus metrics of the webhooks extension (spec §11.2; the ``metrics`` extra).

Fed by the ``webhook.*`` events each process publishes as it settles deliveries
(:mod:`ojs_core.webhook_events`, an :mod:`ojs_core.observe` observer), so every replica counts
the attempts it made, and a scrape of prometheus-client's multiprocess mode sums them:

========================================== ====================================================
``ojs_webhook_delivery_total``             attempts by ``event_type`` and ``status``
                                           (``success``, ``failed``: will retry, ``dead``)
``ojs_webhook_delivery_duration_seconds``  request duration by ``event_type`` and
                                           ``subscription_id``
``ojs_webhook_delivery_retry_count``       retries before a success, by ``event_type``
``ojs_webhook_dead_delivery_total``        dead deliveries by ``event_type`` and
                                           ``subscription_id``
``ojs_webhook_subscriptions``              active subscriptions (read from the store when
                                           scraped, at most every ``refresh_interval``
                                           seconds: :meth:`WebhookMetrics.refresh`)
========================================== ====================================================

The spec's dotted names are Prometheus names here (``ojs.webhook.delivery.count`` is
``ojs_webhook_delivery_total``), and durations are in seconds, Prometheus's unit. At most
``max_subscriptions`` subscription ids and ``max_types`` event types get a label value of their
own (the rest are ``_other``); the duration histogram, a series per bucket, gives one to at
most :data:`MAX_DURATION_SUBSCRIPTIONS` subscription ids (its own cap, far lower).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .model import Event
from .prometheus import DURATION_BUCKETS, LabelCap
from .webhook_store import WebhookStore

__all__ = ["MAX_DURATION_SUBSCRIPTIONS", "WebhookMetrics"]

log = logging.getLogger("ojs.metrics")
#: Subscription ids with a label value of their own in the duration histogram (each costs
#: a series per bucket per event type); the rest are ``_other``.
MAX_DURATION_SUBSCRIPTIONS = 100

_STATUS = {"webhook.delivered": "success", "webhook.failed": "failed", "webhook.dead": "dead"}
_RETRY_BUCKETS = (0, 1, 2, 3, 4, 5, 6, 7, 8)


class WebhookMetrics:
    """The webhook metrics of one app: counters and histograms in ``registry`` (``None`` in
    multiprocess mode), the subscription gauge collected from ``collect_into``."""

    def __init__(
        self,
        registry: CollectorRegistry | None,
        collect_into: CollectorRegistry,
        *,
        max_subscriptions: int = 1000,
        max_types: int = 200,
        max_duration_subscriptions: int = MAX_DURATION_SUBSCRIPTIONS,
        refresh_interval: float = 5.0,
    ) -> None:
        self.subscription_label = LabelCap(max_subscriptions)
        #: The duration histogram's own, lower cap of subscription ids.
        self.duration_subscription_label = LabelCap(max_duration_subscriptions)
        #: The subscription gauge is read from the store at most this often (seconds).
        self.refresh_interval = refresh_interval
        self._refreshed = -float("inf")
        self._lock = asyncio.Lock()
        self.type_label = LabelCap(max_types)
        self.count = Counter(
            "ojs_webhook_delivery",
            "Webhook delivery attempts by event type and outcome (success, failed, dead)",
            ("event_type", "status"),
            registry=registry,
        )
        self.duration = Histogram(
            "ojs_webhook_delivery_duration_seconds",
            "Webhook request duration by event type and subscription",
            ("event_type", "subscription_id"),
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.retries = Histogram(
            "ojs_webhook_delivery_retry_count",
            "Retries a delivery needed before it succeeded, by event type",
            ("event_type",),
            buckets=_RETRY_BUCKETS,
            registry=registry,
        )
        self.dead = Counter(
            "ojs_webhook_dead_delivery",
            "Dead webhook deliveries by event type and subscription",
            ("event_type", "subscription_id"),
            registry=registry,
        )
        #: Active subscriptions as of the last :meth:`refresh` (``None``: never read).
        self.subscriptions: int | None = None
        collect_into.register(_SubscriptionGauge(self))

    def observe(self, events: Sequence[Event]) -> None:
        """Count the ``webhook.*`` outcome events of one batch (others are ignored)."""
        for event in events:
            status = _STATUS.get(event.type)
            if status is None:
                continue
            data: dict[str, Any] = dict(event.data)
            kind = self.type_label(str(data.get("event_type", "")))
            sub_id = str(data.get("subscription_id", ""))
            self.count.labels(kind, status).inc()
            duration = data.get("duration_ms")
            if isinstance(duration, int | float):
                sub = self.duration_subscription_label(sub_id)
                self.duration.labels(kind, sub).observe(duration / 1000)
            if status == "success":
                self.retries.labels(kind).observe(max(0, int(data.get("attempt", 1)) - 1))
            elif status == "dead":
                self.dead.labels(kind, self.subscription_label(sub_id)).inc()

    async def refresh(self, store: WebhookStore, *, force: bool = False) -> None:
        """Read the number of active subscriptions (at scrape time), unless read within
        :attr:`refresh_interval` (as ``JobMetrics.refresh``: concurrent scrapes share one
        read; a failed read keeps the previous value, logged)."""
        async with self._lock:
            if not force and time.monotonic() - self._refreshed < self.refresh_interval:
                return
            try:
                self.subscriptions = sum(1 for s in await store.list_subscriptions() if s.active)
            except Exception:
                log.warning("could not read webhook subscriptions for metrics", exc_info=True)
            self._refreshed = time.monotonic()


class _SubscriptionGauge(Collector):
    """``ojs_webhook_subscriptions`` as of the last refresh."""

    def __init__(self, metrics: WebhookMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        """The cached gauge (nothing before the first refresh)."""
        if self._metrics.subscriptions is not None:
            yield GaugeMetricFamily(
                "ojs_webhook_subscriptions",
                "Active webhook subscriptions",
                value=self._metrics.subscriptions,
            )

    def describe(self) -> Iterable[Metric]:
        """Nothing: the value is cached."""
        return ()
