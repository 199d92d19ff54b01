"""The webhooks storage capability of the memory backend (one process, nothing durable).

Events reach the intake as :meth:`~ojs_memory.backend.MemoryBackend.publish_events` appends
them, while any subscription exists; deliveries wait in a dict with a claim lease; the recent
and dead deliveries of each subscription are kept, :data:`LOG_PER_SUBSCRIPTION` of each.
"""

from __future__ import annotations

from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

import attrs

from ojs_core.model import Event
from ojs_core.webhook_store import EventBatch
from ojs_core.webhooks import MAX_PENDING_PER_SUBSCRIPTION, Delivery, Subscription

__all__ = ["CLAIM_LEASE", "LOG_PER_SUBSCRIPTION", "MemoryWebhooks"]

#: A claimed delivery neither settled nor rescheduled for this long is handed out again.
CLAIM_LEASE = timedelta(seconds=120)
#: Recent (and, separately, dead) deliveries kept per subscription.
LOG_PER_SUBSCRIPTION = 100
#: Events waiting for the router, and delivery ids remembered to ignore a second add.
MAX_INTAKE = 100_000
MAX_SEEN = 100_000


class MemoryWebhooks:
    """Mixed into :class:`~ojs_memory.backend.MemoryBackend`: the
    :class:`~ojs_core.webhook_store.WebhookStore` capability."""

    def _clear_webhooks(self) -> None:
        self._wh_subs: dict[str, Subscription] = {}
        self._wh_intake: deque[Event] = deque(maxlen=MAX_INTAKE)
        self._wh_pending: dict[str, Delivery] = {}
        self._wh_leased: dict[str, datetime] = {}
        self._wh_seen: OrderedDict[str, None] = OrderedDict()
        self._wh_recent: dict[str, OrderedDict[str, Delivery]] = {}
        self._wh_dead: dict[str, OrderedDict[str, Delivery]] = {}

    def _webhook_intake(self, event: Event) -> None:
        """An event was appended: keep it for the router while anyone subscribes."""
        if self._wh_subs:
            self._wh_intake.append(event)

    async def put_subscription(self, subscription: Subscription) -> None:
        """Create or replace."""
        self._wh_subs[subscription.id] = subscription

    async def get_subscription(self, subscription_id: str) -> Subscription | None:
        """The subscription, or ``None``."""
        return self._wh_subs.get(subscription_id)

    async def change_subscription(
        self, subscription_id: str, fn: Callable[[Subscription], Subscription]
    ) -> Subscription | None:
        """Apply ``fn`` in place of the stored version (nothing interleaves here)."""
        current = self._wh_subs.get(subscription_id)
        if current is None:
            return None
        new = self._wh_subs[subscription_id] = fn(current)
        return new

    async def list_subscriptions(self) -> list[Subscription]:
        """Oldest first."""
        return sorted(self._wh_subs.values(), key=lambda s: (s.created_at, s.id))

    async def delete_subscription(self, subscription_id: str) -> bool:
        """Remove, with its delivery log; its pending deliveries are cancelled when
        claimed."""
        self._wh_recent.pop(subscription_id, None)
        self._wh_dead.pop(subscription_id, None)
        return self._wh_subs.pop(subscription_id, None) is not None

    async def take_webhook_events(self, limit: int) -> EventBatch:
        """The events appended since the last call (one router per process: no claim)."""
        out: list[Event] = []
        while self._wh_intake and len(out) < limit:
            out.append(self._wh_intake.popleft())
        return EventBatch(out)

    async def add_deliveries(self, deliveries: Sequence[Delivery]) -> None:
        """Queue each delivery whose id was not seen recently (one past its subscription's
        :data:`~ojs_core.webhooks.MAX_PENDING_PER_SUBSCRIPTION` is logged dead at once)."""
        seen = self._wh_seen
        waiting = Counter(d.subscription_id for d in self._wh_pending.values())
        for delivery in deliveries:
            if delivery.id in seen:
                continue
            seen[delivery.id] = None
            if len(seen) > MAX_SEEN:
                seen.popitem(last=False)
            if waiting[delivery.subscription_id] >= MAX_PENDING_PER_SUBSCRIPTION:
                why = "the subscription's queue is full"
                await self.settle_delivery(attrs.evolve(delivery, status="dead", last_error=why))
                continue
            waiting[delivery.subscription_id] += 1
            self._wh_pending[delivery.id] = delivery

    async def claim_deliveries(self, now: datetime, limit: int) -> list[Delivery]:
        """Due deliveries not under a live lease, earliest first, leased to the caller."""
        leased = self._wh_leased
        due = [
            d
            for d in self._wh_pending.values()
            if d.next_at <= now and (d.id not in leased or leased[d.id] <= now)
        ]
        due.sort(key=lambda d: d.next_at)
        out = due[:limit]
        for delivery in out:
            leased[delivery.id] = now + CLAIM_LEASE
        return out

    async def settle_delivery(self, delivery: Delivery) -> None:
        """Reschedule (``pending``) or end the delivery, and log it."""
        self._wh_leased.pop(delivery.id, None)
        if delivery.status == "pending":
            self._wh_pending[delivery.id] = delivery
        else:
            self._wh_pending.pop(delivery.id, None)
        logs = self._wh_dead if delivery.status == "dead" else self._wh_recent
        log = logs.setdefault(delivery.subscription_id, OrderedDict())
        log.pop(delivery.id, None)
        log[delivery.id] = attrs.evolve(delivery)
        while len(log) > LOG_PER_SUBSCRIPTION:
            log.popitem(last=False)
        # A delivery is listed once, under its latest status (a replayed dead one leaves the
        # dead log when it is queued again).
        other = self._wh_recent if delivery.status == "dead" else self._wh_dead
        other.get(delivery.subscription_id, OrderedDict()).pop(delivery.id, None)

    async def redeliver(self, delivery: Delivery, key: str) -> bool:
        """Queue a replay unless the delivery is pending already (nothing interleaves here,
        so a second replay of the same dead version finds the first one queued)."""
        if delivery.id in self._wh_pending:
            return False
        await self.settle_delivery(delivery)
        return True

    async def list_deliveries(self, subscription_id: str, limit: int) -> list[Delivery]:
        """Recent and dead deliveries, the most recently updated first."""
        found = [
            *self._wh_recent.get(subscription_id, {}).values(),
            *self._wh_dead.get(subscription_id, {}).values(),
        ]
        found.sort(key=lambda d: d.updated_at or d.created_at, reverse=True)
        return found[:limit]
