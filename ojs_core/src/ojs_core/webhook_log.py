"""Reading the webhook delivery log across subscriptions, and replaying a dead delivery.

The spec's routes ``GET /ojs/v1/webhooks/deliveries``, ``GET .../deliveries/{id}`` and
``POST .../deliveries/{id}/retry`` (§10) work over the whole log, while the store keeps it per
subscription (:meth:`~ojs_core.webhook_store.WebhookStore.list_deliveries`, bounded to the
last 100 recent and 100 dead per subscription). These read every visible subscription's log:
an admin route, at most one read per subscription.

A *tenant-scoped* caller (``tenant``) sees only its tenant's subscriptions and their
deliveries (spec §9.3); an unscoped caller sees all.
"""

from __future__ import annotations

from datetime import datetime

import attrs

from .errors import ConflictError, NotFoundError, ValidationError
from .timeutil import format_ts
from .webhook_store import WebhookStore
from .webhooks import DELIVERY_STATUSES, Delivery, Subscription

__all__ = ["LOG_READ", "find_delivery", "list_all_deliveries", "replay", "visible"]

#: Deliveries read per subscription (the store keeps at most 100 recent and 100 dead).
LOG_READ = 200


def visible(sub: Subscription, tenant: str | None) -> bool:
    """Whether a caller scoped to ``tenant`` (``None``: unscoped) may see ``sub``."""
    return tenant is None or sub.tenant_id == tenant


async def list_all_deliveries(
    store: WebhookStore,
    *,
    limit: int,
    subscription_id: str | None = None,
    status: str | None = None,
    tenant: str | None = None,
) -> list[Delivery]:
    """The logged deliveries of every visible subscription (or of one), optionally of one
    ``status``, the most recently updated first."""
    if status is not None and status not in DELIVERY_STATUSES:
        raise ValidationError(f"must be one of {', '.join(DELIVERY_STATUSES)}", path="status")
    subs = [s for s in await store.list_subscriptions() if visible(s, tenant)]
    if subscription_id is not None:
        subs = [s for s in subs if s.id == subscription_id]
    found: list[Delivery] = []
    for sub in subs:
        found.extend(await store.list_deliveries(sub.id, LOG_READ))
    if status is not None:
        found = [d for d in found if d.status == status]
    found.sort(key=lambda d: d.updated_at or d.created_at, reverse=True)
    return found[:limit]


async def find_delivery(
    store: WebhookStore, delivery_id: str, tenant: str | None = None
) -> Delivery:
    """The logged delivery ``delivery_id`` of a visible subscription; 404 otherwise (also for
    another tenant's: its existence is not revealed)."""
    for sub in await store.list_subscriptions():
        if not visible(sub, tenant):
            continue
        for delivery in await store.list_deliveries(sub.id, LOG_READ):
            if delivery.id == delivery_id:
                return delivery
    raise NotFoundError("delivery", delivery_id)


async def replay(
    store: WebhookStore, delivery_id: str, now: datetime, tenant: str | None = None
) -> Delivery:
    """Queue a dead delivery again, due now, its attempts counted from zero (spec §7.2 "dead
    deliveries ... manual inspection and replay", §10 ``.../retry``); the queued version.

    It keeps its id (spec §7.5: the id names the event's delivery to the subscription, and
    the receiver never took it). Only a dead delivery can be replayed (409 otherwise: a
    pending one is on its way, a delivered one was taken); replaying the same dead delivery
    twice at once, through any replicas, queues it once."""
    dead = await find_delivery(store, delivery_id, tenant)
    if dead.status != "dead":
        raise ConflictError(
            f"delivery {delivery_id} is {dead.status}; only a dead delivery can be retried"
        )
    if "data" not in dead.event and "specversion" not in dead.event:
        raise ConflictError(f"delivery {delivery_id} was logged without its event; cannot retry")
    queued = attrs.evolve(
        dead,
        status="pending",
        attempt=0,
        next_at=now,
        updated_at=now,
        last_error=None,
        last_status_code=None,
    )
    # The dead version's time names this replay: a concurrent replay of the same version is
    # dropped by the store, a replay after the next death is a new one.
    await store.redeliver(queued, format_ts(dead.updated_at or dead.created_at))
    return queued
