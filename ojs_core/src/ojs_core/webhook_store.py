"""The webhooks storage capability: subscriptions, the event intake, the delivery queue.

A backend that implements :class:`WebhookStore` (checked with ``isinstance``, like
:class:`~ojs_core.backend.QueueBounds`) can serve the webhooks extension; the HTTP binding
runs the loops that route events and send deliveries (``ojs_http.webhook_runner``).

Contract:

* Subscriptions are records by id; :meth:`~WebhookStore.put_subscription` creates one,
  :meth:`~WebhookStore.change_subscription` changes one by compare-and-swap (two concurrent
  changes both land; a change never brings a deleted subscription back). From the moment
  ``put_subscription`` returns, every event appended afterwards reaches
  :meth:`~WebhookStore.take_webhook_events` (in some process).
* :meth:`~WebhookStore.take_webhook_events` hands out appended events, each to one caller at a
  time; an event is handed out again (to any process) if the batch is not acknowledged (a
  crash). Routing the same event again adds nothing, because delivery ids are deterministic
  and :meth:`~WebhookStore.add_deliveries` ignores an id it has seen recently.
* :meth:`~WebhookStore.claim_deliveries` hands out due pending deliveries, each to one caller
  at a time (several replicas may claim concurrently); a claim that is neither finished nor
  rescheduled within the store's lease comes back (a crash mid-send: at least once).
  The claimed :class:`~ojs_core.webhooks.Delivery` says how many attempts were made.
* :meth:`~WebhookStore.settle_delivery` records the outcome of a claimed delivery: ``pending``
  reschedules it for ``next_at``; ``delivered``, ``dead`` and ``cancelled`` end it. Ended and
  attempted deliveries are kept, bounded, for :meth:`~WebhookStore.list_deliveries`; a dead
  one is kept with its event, so that it can be sent again.
* :meth:`~WebhookStore.redeliver` queues a dead delivery again (the manual retry of spec
  §10): the same id, its attempts counted from zero. Two replays of the same dead version
  (the same ``key``, through two replicas at once) queue it once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

import attrs

from .model import Event
from .webhooks import Delivery, Subscription

__all__ = ["EventBatch", "WebhookStore"]


async def _nothing() -> None:
    return None


@attrs.frozen
class EventBatch:
    """Events to route to subscriptions; ``ack()`` once their deliveries are added."""

    events: list[Event]
    ack: Callable[[], Awaitable[None]] = _nothing


@runtime_checkable
class WebhookStore(Protocol):
    """Optional backend capability: storage of the webhooks extension (see the module)."""

    async def put_subscription(self, subscription: Subscription) -> None:
        """Create or replace a subscription."""
        ...

    async def get_subscription(self, subscription_id: str) -> Subscription | None:
        """A subscription, or ``None``."""
        ...

    async def change_subscription(
        self, subscription_id: str, fn: Callable[[Subscription], Subscription]
    ) -> Subscription | None:
        """Apply ``fn`` to the stored subscription atomically (re-applied on contention);
        the version stored, or ``None`` when there is no such subscription."""
        ...

    async def list_subscriptions(self) -> list[Subscription]:
        """Every subscription, oldest first."""
        ...

    async def delete_subscription(self, subscription_id: str) -> bool:
        """Remove a subscription (its pending deliveries are cancelled when claimed, and
        its delivery log is dropped); ``False`` if unknown."""
        ...

    async def take_webhook_events(self, limit: int) -> EventBatch:
        """Up to ``limit`` appended events not yet routed (an empty batch when none; never
        waits long)."""
        ...

    async def add_deliveries(self, deliveries: Sequence[Delivery]) -> None:
        """Queue pending deliveries; an id queued recently is ignored."""
        ...

    async def claim_deliveries(self, now: datetime, limit: int) -> list[Delivery]:
        """Up to ``limit`` pending deliveries due at ``now``, each claimed by this caller."""
        ...

    async def settle_delivery(self, delivery: Delivery) -> None:
        """Record a claimed delivery's new version (see the module for its ``status``)."""
        ...

    async def list_deliveries(self, subscription_id: str, limit: int) -> list[Delivery]:
        """A subscription's recent deliveries (attempted at least once, or pending a retry)
        and its dead ones (with their events), the most recently updated first."""
        ...

    async def redeliver(self, delivery: Delivery, key: str) -> bool:
        """Queue ``delivery`` (``pending``, a dead one's replay) again, bypassing the
        recent-id check of :meth:`add_deliveries`, and log it as pending; ``False`` when a
        replay with the same ``key`` was already queued (nothing is added)."""
        ...
