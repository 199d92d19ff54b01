"""The webhooks extension (``urn:ojs:ext:webhooks``): subscriptions, deliveries, matching.

A :class:`Subscription` routes the events it selects (by type, queue and job type) to an
HTTPS endpoint; each match of an event becomes a :class:`Delivery`, whose id is derived from
the event id and the subscription id, so routing the same event twice (a replica that crashed
before acknowledging it) produces the same delivery, which the store adds once. Only events
that happened at or after the subscription's creation are delivered.

Signing, the retry schedule and outcome rules are in :mod:`ojs_core.webhook_delivery`; URL
rules (HTTPS, no private addresses) in :mod:`ojs_core.webhook_urls`; the storage capability
in :mod:`ojs_core.webhook_store`. See ``docs/webhooks.md``.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import attrs

from . import jsonio
from .codec import event_to_wire
from .errors import ValidationError
from .events import EVENT_PATTERN, event_type_matches
from .ids import deterministic_uuid7, uuid7
from .model import Event
from .timeutil import format_ts, parse_ts

__all__ = [
    "DELIVERY_STATUSES",
    "MAX_EVENTS",
    "MAX_FILTER_VALUES",
    "MAX_PENDING_PER_SUBSCRIPTION",
    "OUTCOME_EVENTS",
    "ROTATION_OVERLAP",
    "Delivery",
    "Subscription",
    "deliveries_for",
    "delivery_id",
    "new_secret",
    "new_subscription_id",
    "parse_events",
    "parse_filter",
    "parse_metadata",
    "parse_timeout",
]

#: How long a rotated-out secret still signs deliveries (spec §8.3 recommends 24 hours).
ROTATION_OVERLAP = timedelta(hours=24)
#: Bounds of one subscription's lists and metadata (a subscription is read per event batch).
MAX_EVENTS = 100
#: Deliveries of one subscription waiting at once: past it, a new one is dead at once ("the
#: subscription's queue is full"), so an endpoint that is down for days cannot fill the store
#: or hold up the others' deliveries.
MAX_PENDING_PER_SUBSCRIPTION = 10_000
MAX_FILTER_VALUES = 100
MAX_METADATA_BYTES = 8192
#: A subscription's own request timeout (spec §7.3, MAY: the RECOMMENDED range 5-60 s).
MIN_TIMEOUT_MS = 5_000
MAX_TIMEOUT_MS = 60_000
#: ``pending``: waiting for its next attempt; ``delivered``: a 2xx answered; ``dead``: no more
#: attempts (a 4xx, or the schedule exhausted); ``cancelled``: its subscription was deleted or
#: deactivated before it was sent.
DELIVERY_STATUSES = ("pending", "delivered", "dead", "cancelled")
#: The events about deliveries themselves (``ojs_core.webhook_events``): never routed to a
#: subscription, or a ``*`` subscription whose endpoint is down would feed itself forever.
OUTCOME_EVENTS = frozenset({"webhook.delivered", "webhook.failed", "webhook.dead"})


def new_secret() -> str:
    """A fresh signing secret: ``whsec_`` and 32 random bytes, URL-safe base64."""
    return "whsec_" + secrets.token_urlsafe(32)


def new_subscription_id(now: datetime) -> str:
    """``sub_<uuidv7>``."""
    return "sub_" + uuid7(int(now.timestamp() * 1000))


def delivery_id(event_id: str, event_time: datetime, subscription_id: str) -> str:
    """``del_<uuidv7>`` determined by the event and the subscription: the same pair always
    gives the same id (stable across retries and across replicas routing the same event)."""
    ms = int(event_time.timestamp() * 1000)
    return "del_" + deterministic_uuid7(ms, "webhook-delivery", event_id, subscription_id)


@attrs.frozen(kw_only=True)
class Subscription:
    """A registration of an endpoint for the events it selects.

    ``secret`` signs every delivery; after a rotation ``previous_secret`` signs too until
    ``previous_until``. Neither is ever shown by :meth:`to_wire` unless asked (the create and
    rotate answers). ``timeout_ms`` replaces the server's request timeout for this endpoint
    (spec §7.3). ``tenant_id`` (multi-tenancy, spec §9.3): a subscription created by a
    tenant-scoped request receives only events carrying that tenant's ``tenant_id``."""

    id: str
    url: str
    events: tuple[str, ...]
    queues: tuple[str, ...] = ()
    job_types: tuple[str, ...] = ()
    active: bool = True
    metadata: Mapping[str, Any] = attrs.field(factory=dict)
    created_at: datetime
    updated_at: datetime
    secret: str = attrs.field(repr=False)
    previous_secret: str | None = attrs.field(default=None, repr=False)
    previous_until: datetime | None = None
    tenant_id: str | None = None
    timeout_ms: int | None = None

    def signing_secrets(self, now: datetime) -> list[str]:
        """The secrets a delivery made at ``now`` is signed with: the current one, and the
        previous one during the rotation overlap."""
        out = [self.secret]
        if self.previous_secret and self.previous_until and now < self.previous_until:
            out.append(self.previous_secret)
        return out

    def matches(self, event: Event) -> bool:
        """Whether this subscription delivers ``event``: active, created no later than the
        event, its type selected, and its queue and job type within the filter (if any)."""
        if not self.active or event.time < self.created_at or event.type in OUTCOME_EVENTS:
            return False
        if self.tenant_id is not None and event.data.get("tenant_id") != self.tenant_id:
            return False
        if not any(event_type_matches(p, event.type) for p in self.events):
            return False
        if self.queues and event.data.get("queue") not in self.queues:
            return False
        return not (self.job_types and event.data.get("job_type") not in self.job_types)

    def rotated(self, now: datetime) -> Subscription:
        """This subscription with a new secret; the old one signs for :data:`ROTATION_OVERLAP`."""
        return attrs.evolve(
            self,
            secret=new_secret(),
            previous_secret=self.secret,
            previous_until=now + ROTATION_OVERLAP,
            updated_at=now,
        )

    def to_wire(self, *, with_secret: bool = False) -> dict[str, Any]:
        """The API form; the secret only when ``with_secret`` (create and rotate answers)."""
        out: dict[str, Any] = {
            "id": self.id,
            "url": self.url,
            "events": list(self.events),
            "active": self.active,
            "metadata": dict(self.metadata),
            "created_at": format_ts(self.created_at),
            "updated_at": format_ts(self.updated_at),
        }
        flt: dict[str, Any] = {}
        if self.queues:
            flt["queues"] = list(self.queues)
        if self.job_types:
            flt["job_types"] = list(self.job_types)
        if flt:
            out["filter"] = flt
        if self.tenant_id is not None:
            out["tenant_id"] = self.tenant_id
        if self.timeout_ms is not None:
            out["timeout_ms"] = self.timeout_ms
        if self.previous_until is not None:
            out["previous_secret_expires_at"] = format_ts(self.previous_until)
        if with_secret:
            out["secret"] = self.secret
        return out

    def to_record(self) -> dict[str, Any]:
        """The stored form (secrets included: the store must be protected like the server)."""
        out = self.to_wire(with_secret=True)
        out["previous_secret"] = self.previous_secret
        out.pop("previous_secret_expires_at", None)
        out["previous_until"] = format_ts(self.previous_until) if self.previous_until else None
        return out

    @classmethod
    def from_record(cls, raw: Mapping[str, Any]) -> Subscription:
        """Read back :meth:`to_record`'s form."""
        flt = raw.get("filter") or {}
        until = raw.get("previous_until")
        return cls(
            id=raw["id"],
            url=raw["url"],
            events=tuple(raw["events"]),
            queues=tuple(flt.get("queues") or ()),
            job_types=tuple(flt.get("job_types") or ()),
            active=bool(raw.get("active", True)),
            metadata=dict(raw.get("metadata") or {}),
            created_at=parse_ts(raw["created_at"]),
            updated_at=parse_ts(raw.get("updated_at") or raw["created_at"]),
            secret=raw["secret"],
            previous_secret=raw.get("previous_secret"),
            previous_until=parse_ts(until) if until else None,
            tenant_id=raw.get("tenant_id"),
            timeout_ms=raw.get("timeout_ms"),
        )


@attrs.frozen(kw_only=True)
class Delivery:
    """One event on its way to one subscription, across all its attempts.

    ``attempt`` is the number of attempts made so far (a claimed delivery is about to make
    attempt ``attempt + 1``); ``next_at`` when the next one is due; ``status`` one of
    :data:`DELIVERY_STATUSES`; ``last_status_code`` and ``last_error`` describe the last
    attempt. ``event`` is the event's wire envelope, the body sent."""

    id: str
    subscription_id: str
    event: Mapping[str, Any]
    created_at: datetime
    next_at: datetime
    attempt: int = 0
    status: str = "pending"
    last_status_code: int | None = None
    last_error: str | None = None
    updated_at: datetime | None = None

    @property
    def event_type(self) -> str:
        """The delivered event's type."""
        return str(self.event.get("type", ""))

    def to_wire(self) -> dict[str, Any]:
        """The API (and stored) form."""
        return {
            "id": self.id,
            "subscription_id": self.subscription_id,
            "event_id": self.event.get("id"),
            "event_type": self.event_type,
            "status": self.status,
            "attempt": self.attempt,
            "next_at": format_ts(self.next_at) if self.status == "pending" else None,
            "last_status_code": self.last_status_code,
            "last_error": self.last_error,
            "created_at": format_ts(self.created_at),
            "updated_at": format_ts(self.updated_at or self.created_at),
        }

    def to_record(self) -> dict[str, Any]:
        """The stored form: the wire form with the event and the exact ``next_at``."""
        out = self.to_wire()
        out["event"] = dict(self.event)
        out["next_at"] = format_ts(self.next_at)
        return out

    @classmethod
    def from_record(cls, raw: Mapping[str, Any]) -> Delivery:
        """Read back :meth:`to_record`'s form."""
        updated = raw.get("updated_at")
        return cls(
            id=raw["id"],
            subscription_id=raw["subscription_id"],
            event=dict(raw.get("event") or {}),
            created_at=parse_ts(raw["created_at"]),
            next_at=parse_ts(raw["next_at"]),
            attempt=int(raw.get("attempt", 0)),
            status=str(raw.get("status", "pending")),
            last_status_code=raw.get("last_status_code"),
            last_error=raw.get("last_error"),
            updated_at=parse_ts(updated) if updated else None,
        )


def deliveries_for(
    event: Event, subscriptions: Sequence[Subscription], now: datetime
) -> list[Delivery]:
    """A pending delivery, due now, of ``event`` to each subscription that matches it."""
    wire: dict[str, Any] | None = None
    out = []
    for sub in subscriptions:
        if not sub.matches(event):
            continue
        if wire is None:
            wire = event_to_wire(event)
            wire.pop("seq", None)
        out.append(
            Delivery(
                id=delivery_id(event.id, event.time, sub.id),
                subscription_id=sub.id,
                event=wire,
                created_at=now,
                next_at=now,
                updated_at=now,
            )
        )
    return out


# -- request validation ----------------------------------------------------------------------


def parse_events(value: Any, path: str = "events") -> tuple[str, ...]:
    """A non-empty list of event-type patterns (``job.completed``, ``job.*``, ``*``)."""
    if not isinstance(value, list) or not value:
        raise ValidationError("must be a non-empty array of event types", path=path)
    if len(value) > MAX_EVENTS:
        raise ValidationError(f"must hold at most {MAX_EVENTS} event types", path=path)
    out: list[str] = []
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item:
            raise ValidationError("must be a non-empty string", path=f"{path}[{i}]")
        if not EVENT_PATTERN.match(item):
            raise ValidationError(
                "must be an event type (job.completed), a prefix wildcard (job.*) or *",
                path=f"{path}[{i}]",
            )
        if item not in out:
            out.append(item)
    return tuple(out)


def parse_filter(value: Any, path: str = "filter") -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``{"queues": [...], "job_types": [...]}`` (both optional) as ``(queues, job_types)``."""
    if value is None:
        return (), ()
    if not isinstance(value, Mapping):
        raise ValidationError("must be an object", path=path)
    unknown = sorted(set(value) - {"queues", "job_types"})
    if unknown:
        raise ValidationError(
            "unknown field (queues and job_types only)", path=f"{path}.{unknown[0]}"
        )
    lists: list[tuple[str, ...]] = []
    for key in ("queues", "job_types"):
        items = value.get(key)
        if items is None:
            lists.append(())
            continue
        where = f"{path}.{key}"
        if not isinstance(items, list) or len(items) > MAX_FILTER_VALUES:
            raise ValidationError(f"must be an array of at most {MAX_FILTER_VALUES}", path=where)
        for i, item in enumerate(items):
            if not isinstance(item, str) or not item or len(item) > 256:
                raise ValidationError("must be a non-empty string", path=f"{where}[{i}]")
        lists.append(tuple(dict.fromkeys(items)))
    return lists[0], lists[1]


def parse_metadata(value: Any, path: str = "metadata") -> dict[str, Any]:
    """An object of at most :data:`MAX_METADATA_BYTES` as JSON."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValidationError("must be an object", path=path)
    if len(jsonio.dumps(dict(value), default=str)) > MAX_METADATA_BYTES:
        raise ValidationError(f"must be at most {MAX_METADATA_BYTES} bytes as JSON", path=path)
    return dict(value)


def parse_timeout(value: Any, path: str = "timeout_ms") -> int | None:
    """A subscription's request timeout in milliseconds, within the spec's recommended
    5-60 s (``None``: the server's)."""
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValidationError("must be an integer number of milliseconds", path=path)
    if not MIN_TIMEOUT_MS <= value <= MAX_TIMEOUT_MS:
        raise ValidationError(
            f"must be between {MIN_TIMEOUT_MS} and {MAX_TIMEOUT_MS} ms", path=path
        )
    return value
