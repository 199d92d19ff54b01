"""The webhooks storage capability on JetStream (:class:`~ojs_core.webhook_store.WebhookStore`).

========================= ====================================================================
``OJS_WEBHOOKS`` (KV)     subscriptions, one key per id (secrets included: protect the account)
``ojs_webhook_events``    durable consumer on ``OJS_EVENTS`` shared by the replicas: each event
                          is routed by one replica and acknowledged once its deliveries are
                          stored; created by the first :meth:`put_subscription` (so it sees
                          every event stored from then on)
``OJS_WEBHOOK_DELIVERIES`` work queue of pending deliveries, ``ojs.whq.<subscription>``; the
                          delivery id is the ``Nats-Msg-Id``, so an event routed again (a
                          replica died before its ack) adds nothing within the 10 min window
``ojs_webhooks``          durable consumer of deliveries shared by the replicas: a pull claims
                          a delivery for 120 s; a retry is a negative acknowledgement delayed
                          until the next attempt; the attempt number is the delivery count
``OJS_WEBHOOK_LOG``       each attempt's outcome, ``ojs.whlog.<subscription>.recent|dead``:
                          the last 100 of each per subscription, a week at most; a dead one
                          keeps its event, for a replay (``redeliver``: the message id
                          ``<delivery id>.replay.<key>`` queues each replay once)
========================= ====================================================================
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime

import attrs
import nats.js.errors
from nats.aio.msg import Msg

from ojs_core import jsonio
from ojs_core.errors import ConflictError, NotFoundError, PayloadTooLargeError
from ojs_core.model import Event
from ojs_core.webhook_store import EventBatch
from ojs_core.webhooks import Delivery, Subscription

from . import names, provision
from .connection import Connection
from .jetstream import ConsumerGoneError, Op, commit, direct_get_batch, last_values
from .pulls import pull_now
from .records import Codec, RecordStore
from .stats import decode_event

__all__ = ["WebhookQueue"]

log = logging.getLogger("ojs.nats")

#: Log records read per listing (a subscription keeps at most 100 of each kind).
_LOG_BATCH = 250
_DELETED = ("DEL", "PURGE")


class _SubscriptionCodec(Codec[Subscription]):
    """A subscription record as JSON (its ``to_record`` form)."""

    def __init__(self) -> None:
        super().__init__(Subscription)

    def encode(self, value: object) -> bytes:
        assert isinstance(value, Subscription)
        return jsonio.dumps(value.to_record())

    def decode(self, data: bytes) -> Subscription:
        return Subscription.from_record(jsonio.loads(data))


_SUBSCRIPTION = _SubscriptionCodec()


class WebhookQueue:
    """Subscriptions, the event intake and the delivery queue of one replica."""

    def __init__(self, conn: Connection, store: RecordStore) -> None:
        self.conn = conn
        self.store = store
        #: Claimed deliveries by id, settled by acknowledging (or delaying) their message.
        #: Claimed messages by delivery id, with when they were claimed: a claim that was
        #: never settled (a failed send, a stop) is dropped once the server has taken it back.
        self._claimed: dict[str, tuple[Msg, float]] = {}

    def forget_all(self) -> None:
        """Drop what refers to the old streams (a reset, a close)."""
        self._claimed.clear()

    # -- subscriptions ----------------------------------------------------------------------

    async def put_subscription(self, subscription: Subscription) -> None:
        """Store the subscription, after making sure events are routed from now on."""
        with contextlib.suppress(nats.js.errors.BadRequestError):  # it exists already
            await self.conn.js.add_consumer(
                names.EVENTS_STREAM, provision.webhook_events_consumer_config()
            )
        data = jsonio.dumps(subscription.to_record())
        op: Op = (names.kv_subject(names.WEBHOOKS_BUCKET, subscription.id), data, {})
        await commit(self.conn.nc, self.conn.js, [op])

    async def get_subscription(self, subscription_id: str) -> Subscription | None:
        """One subscription (``None`` for an id that cannot be a key)."""
        if not names.is_kv_key(subscription_id):
            return None
        got = await self.store.get(names.WEBHOOKS_BUCKET, subscription_id)
        return Subscription.from_record(jsonio.loads(got[0])) if got else None

    async def change_subscription(
        self, subscription_id: str, fn: Callable[[Subscription], Subscription]
    ) -> Subscription | None:
        """Compare-and-swap on the subscription's key: a concurrent change is re-read and
        ``fn`` applied again, and a deleted subscription stays deleted."""
        if not names.is_kv_key(subscription_id):
            return None
        try:
            _, after, _ = await self.store.swap_existing(
                names.WEBHOOKS_BUCKET,
                subscription_id,
                _SUBSCRIPTION,
                fn,
                "subscription",
                subscription_id,
            )
        except NotFoundError:
            return None
        return after

    async def list_subscriptions(self) -> list[Subscription]:
        """Every subscription: one batched read of the bucket's last values."""
        msgs = await last_values(
            self.conn.nc,
            names.kv_stream(names.WEBHOOKS_BUCKET),
            names.kv_subject(names.WEBHOOKS_BUCKET, ">"),
        )
        horizon = time.monotonic() - provision.WEBHOOK_CLAIM_S
        for stale in [k for k, (_, at) in self._claimed.items() if at < horizon]:
            del self._claimed[stale]
        out = []
        for msg in msgs:
            if (msg.headers or {}).get(names.KV_OPERATION) in _DELETED or not msg.data:
                continue
            out.append(Subscription.from_record(jsonio.loads(msg.data)))
        out.sort(key=lambda s: (s.created_at, s.id))
        return out

    async def delete_subscription(self, subscription_id: str) -> bool:
        """Remove a subscription (its queued deliveries are cancelled when claimed)."""
        if await self.get_subscription(subscription_id) is None:
            return False
        purge: Op = (
            names.kv_subject(names.WEBHOOKS_BUCKET, subscription_id),
            b"",
            {names.KV_OPERATION: "PURGE", names.ROLLUP: "sub"},
        )
        await commit(self.conn.nc, self.conn.js, [purge])
        if "." not in subscription_id:  # its outcomes go with it
            with contextlib.suppress(nats.js.errors.Error):
                await self.conn.js.purge_stream(
                    names.WEBHOOK_LOG_STREAM,
                    subject=names.webhook_log_subject(subscription_id, "*"),
                )
        return True

    # -- routing -----------------------------------------------------------------------------

    async def take_webhook_events(self, limit: int) -> EventBatch:
        """Events this replica routes (each handed to one replica until acknowledged)."""
        try:
            msgs = await pull_now(
                self.conn.nc, names.EVENTS_STREAM, names.WEBHOOK_EVENTS_CONSUMER, limit
            )
        except ConsumerGoneError:
            return EventBatch([])  # no subscription was ever created (or since a reset)
        events: list[Event] = []
        for msg in msgs:
            event = decode_event(msg.data, msg.metadata.sequence.stream)
            if event is not None:
                events.append(event)

        async def ack() -> None:
            for msg in msgs:
                await msg.ack()

        return EventBatch(events, ack)

    async def add_deliveries(self, deliveries: Sequence[Delivery]) -> None:
        """Queue deliveries, each once: its id is its message id. One the stream refuses for
        good (its subscription's queue is full, it is too large) is logged dead, not retried:
        the event is still acknowledged, so one endpoint cannot hold up the others."""
        ops: list[Op] = [
            (
                names.webhook_subject(d.subscription_id),
                jsonio.dumps(d.to_record()),
                {"Nats-Msg-Id": d.id},
            )
            for d in deliveries
        ]
        outcomes = await self.conn.pipe.publish_each(ops)
        for delivery, outcome in zip(deliveries, outcomes, strict=True):
            if not isinstance(outcome, BaseException):
                continue
            if not isinstance(outcome, (nats.js.errors.APIError, PayloadTooLargeError)):
                raise outcome  # NATS unreachable: route the event again later
            why = (
                "the subscription's queue is full"
                if "maximum" in str(outcome).lower()
                else (f"refused by the store: {type(outcome).__name__}")
            )
            await self._log(attrs.evolve(delivery, status="dead", last_error=why))

    # -- sending -----------------------------------------------------------------------------

    async def claim_deliveries(self, now: datetime, limit: int) -> list[Delivery]:
        """Due deliveries, each claimed for this replica (due: not delayed any more)."""
        try:
            msgs = await pull_now(self.conn.nc, names.WEBHOOK_STREAM, names.WEBHOOK_CONSUMER, limit)
        except ConsumerGoneError:
            with contextlib.suppress(nats.js.errors.BadRequestError):
                await self.conn.js.add_consumer(
                    names.WEBHOOK_STREAM, provision.webhook_consumer_config()
                )
            return []
        horizon = time.monotonic() - provision.WEBHOOK_CLAIM_S
        for stale in [k for k, (_, at) in self._claimed.items() if at < horizon]:
            del self._claimed[stale]
        out = []
        for msg in msgs:
            try:
                delivery = Delivery.from_record(jsonio.loads(msg.data))
            except (ValueError, KeyError, TypeError):
                await msg.term()  # not a delivery this server wrote
                continue
            # Attempts made so far: every earlier delivery of the message (a retry, or a claim
            # whose replica died mid-attempt).
            attempt = max(0, (msg.metadata.num_delivered or 1) - 1)
            delivery = attrs.evolve(delivery, attempt=attempt, next_at=now)
            self._claimed[delivery.id] = (msg, time.monotonic())
            out.append(delivery)
        return out

    async def settle_delivery(self, delivery: Delivery) -> None:
        """Delay the message until the next attempt, or acknowledge it; log the outcome."""
        claimed = self._claimed.pop(delivery.id, None)
        if claimed is not None:
            msg = claimed[0]
            if delivery.status == "pending":
                # The delay the outcome chose (``next_at`` is counted from ``updated_at``),
                # not read from this process's clock, which a test may control.
                since = delivery.updated_at or delivery.next_at
                delay = (delivery.next_at - since).total_seconds()
                await msg.nak(delay=max(0.0, delay))
            else:
                await msg.ack()
        await self._log(delivery)

    async def redeliver(self, delivery: Delivery, key: str) -> bool:
        """Queue a replay of a dead delivery; its message id makes two replays of the same
        dead version (``key``), through any replicas, one message."""
        try:
            ack = await self.conn.js.publish(
                names.webhook_subject(delivery.subscription_id),
                jsonio.dumps(delivery.to_record()),
                headers={"Nats-Msg-Id": f"{delivery.id}.replay.{key}"},
            )
        except nats.js.errors.APIError as exc:  # refused for good: not the caller's to retry
            if "maximum" in str(exc).lower():
                raise ConflictError(
                    "the subscription's delivery queue is full; retry once it has drained"
                ) from exc
            raise
        if ack.duplicate:
            return False
        await self._log(delivery)
        return True

    async def _log(self, delivery: Delivery) -> None:
        """Append a delivery's outcome to its subscription's log (recent or dead)."""
        kind = "dead" if delivery.status == "dead" else "recent"
        record = delivery.to_record()
        if kind != "dead":  # the log keeps outcomes; a dead delivery's payload, for a replay
            record.pop("event", None)
        record["event_type"] = delivery.event_type
        record["event_id"] = delivery.event.get("id")
        await self.conn.publish_all(
            [(names.webhook_log_subject(delivery.subscription_id, kind), jsonio.dumps(record), {})]
        )

    async def list_deliveries(self, subscription_id: str, limit: int) -> list[Delivery]:
        """The last outcome of each logged delivery, the most recently updated first."""
        if not names.is_kv_key(subscription_id) or "." in subscription_id:
            return []
        latest: dict[str, tuple[int, Delivery]] = {}
        for kind in ("recent", "dead"):
            msgs = await direct_get_batch(
                self.conn.nc,
                names.WEBHOOK_LOG_STREAM,
                {
                    "seq": 1,
                    "next_by_subj": names.webhook_log_subject(subscription_id, kind),
                    "batch": _LOG_BATCH,
                },
            )
            for msg in msgs:
                seq = int((msg.headers or {}).get(names.DIRECT_SEQUENCE, "0"))
                try:
                    raw = jsonio.loads(msg.data)
                    event = raw.get("event") or {
                        "id": raw.get("event_id"),
                        "type": raw.get("event_type"),
                    }
                    delivery = Delivery.from_record({**raw, "event": event})
                except (ValueError, KeyError, TypeError):
                    continue
                if delivery.id not in latest or latest[delivery.id][0] < seq:
                    latest[delivery.id] = (seq, delivery)
        found = [d for _, d in latest.values()]
        found.sort(key=lambda d: d.updated_at or d.created_at, reverse=True)
        return found[:limit]
