"""The webhooks extension's own events (spec §11.1), published through the event log.

========================================= =====================================================
``webhook.delivered``                     an attempt got a 2xx
``webhook.failed``                        an attempt failed and the delivery will be retried
``webhook.dead``                          the delivery will not be retried (a 4xx, the schedule
                                          exhausted, a refused target, a full queue)
``webhook.subscription.created``          a subscription was created
``webhook.subscription.deleted``          a subscription was deleted
========================================= =====================================================

The spec names the events but not their ``data``; ours carries the delivery's ids, the event
it carried (id and type), the attempt number and what the endpoint answered, never the secret
nor the delivered body. Delivery outcomes are never themselves delivered
(:data:`OUTCOME_EVENTS` is excluded from routing by
:meth:`~ojs_core.webhooks.Subscription.matches`): a ``*`` subscription whose endpoint is down
would otherwise feed itself one ``webhook.failed`` per failure, forever.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .events import make_event
from .model import Event
from .timeutil import format_ts
from .webhooks import OUTCOME_EVENTS, Delivery, Subscription

__all__ = [
    "DEAD",
    "DELIVERED",
    "FAILED",
    "OUTCOME_EVENTS",
    "SUBSCRIPTION_CREATED",
    "SUBSCRIPTION_DELETED",
    "outcome_event",
    "subscription_event",
]

DELIVERED = "webhook.delivered"
FAILED = "webhook.failed"
DEAD = "webhook.dead"
SUBSCRIPTION_CREATED = "webhook.subscription.created"
SUBSCRIPTION_DELETED = "webhook.subscription.deleted"
# OUTCOME_EVENTS (defined in ojs_core.webhooks, which routes) is {DELIVERED, FAILED, DEAD}.


def outcome_event(settled: Delivery, now: datetime, duration_ms: int | None = None) -> Event | None:
    """The event of a delivery just settled after an attempt (``None`` for a cancelled one,
    which made no attempt)."""
    if settled.status == "delivered":
        kind = DELIVERED
    elif settled.status == "pending":
        kind = FAILED
    elif settled.status == "dead":
        kind = DEAD
    else:
        return None
    data: dict[str, Any] = {
        "delivery_id": settled.id,
        "subscription_id": settled.subscription_id,
        "event_id": settled.event.get("id"),
        "event_type": settled.event_type,
        "attempt": settled.attempt,
        "status_code": settled.last_status_code,
    }
    if duration_ms is not None:
        data["duration_ms"] = duration_ms
    if settled.status != "delivered":
        data["error"] = settled.last_error
    if settled.status == "pending":
        data["next_attempt_at"] = format_ts(settled.next_at)
    return make_event(kind, now, data, subject=settled.id)


def subscription_event(kind: str, sub: Subscription, now: datetime) -> Event:
    """``webhook.subscription.created`` or ``.deleted`` for ``sub`` (without its secret)."""
    data: dict[str, Any] = {
        "subscription_id": sub.id,
        "url": sub.url,
        "events": list(sub.events),
        "active": sub.active,
    }
    if sub.tenant_id is not None:
        data["tenant_id"] = sub.tenant_id
    return make_event(kind, now, data, subject=sub.id)
