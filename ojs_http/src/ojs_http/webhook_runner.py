"""The webhooks loops of one server process: route events to deliveries, send due deliveries.

Both run as background tasks of the app's lifespan, next to the scheduler, and only read and
write the backend's :class:`~ojs_core.webhook_store.WebhookStore`: job processing never waits
for them (fail-open: a failing endpoint or a failing loop costs webhook latency, never a job).

* The router takes appended events (each batch handed to one process), matches them against
  the subscriptions, adds a delivery per match and acknowledges the batch. A crash before the
  acknowledgement hands the batch out again; the deliveries it adds again have the same ids
  and are ignored.
* The sender claims due deliveries (each by one process), posts them with at most
  ``concurrency`` in flight, and settles each: delivered, dead, or pending until the next step
  of the schedule. A delivery whose subscription is gone or inactive is cancelled unsent.
  Each settled attempt publishes ``webhook.delivered``, ``webhook.failed`` or ``webhook.dead``
  (spec §11.1, ``ojs_core.webhook_events``) through ``emit``, which never raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

import attrs

from ojs_core import jsonio
from ojs_core.clock import Clock, SystemClock
from ojs_core.codec import event_to_wire
from ojs_core.errors import OJSError
from ojs_core.events import make_event
from ojs_core.ids import uuid7
from ojs_core.model import Event
from ojs_core.tasks import cancel_and_wait
from ojs_core.webhook_delivery import (
    DEFAULT_SCHEDULE,
    Outcome,
    after_attempt,
    classify,
    delivery_headers,
)
from ojs_core.webhook_events import outcome_event
from ojs_core.webhook_store import WebhookStore
from ojs_core.webhooks import Delivery, Subscription, deliveries_for

from .webhook_sender import SendResult, WebhookSender

__all__ = ["Emit", "WebhookRunner"]

#: Publishes events (``JobService.emit``: logged, never raised).
Emit = Callable[[Sequence[Event]], Awaitable[None]]


async def _no_emit(events: Sequence[Event]) -> None:
    return None


log = logging.getLogger("ojs.webhooks")

#: Events routed per batch.
ROUTE_BATCH = 256
#: How long a loop that failed waits before trying again.
ERROR_BACKOFF_S = 1.0
#: An idle loop polls less and less often, down to once per this many seconds (a server
#: without webhook traffic then costs NATS one request per loop every two seconds), or ten
#: poll intervals if that is less.
IDLE_MAX_S = 2.0


def idle_delay(poll_s: float, empty_rounds: int) -> float:
    """How long a loop waits after ``empty_rounds`` rounds in a row found nothing: ``poll_s``
    doubling to :data:`IDLE_MAX_S` (or ten times ``poll_s``, if less)."""
    cap = min(IDLE_MAX_S, poll_s * 10)
    return min(cap, poll_s * float(2 ** min(empty_rounds, 16)))


class WebhookRunner:
    """Routes and sends this process's share of webhook deliveries."""

    def __init__(
        self,
        store: WebhookStore,
        sender: WebhookSender,
        *,
        user_agent: str,
        clock: Clock | None = None,
        schedule: Sequence[float] = DEFAULT_SCHEDULE,
        poll_s: float = 0.2,
        concurrency: int = 16,
        emit: Emit = _no_emit,
    ) -> None:
        self.store = store
        self.emit = emit
        self.sender = sender
        self.user_agent = user_agent
        self.clock: Clock = clock or SystemClock()
        self.schedule = tuple(schedule)
        self.poll_s = poll_s
        self.concurrency = concurrency
        self._tasks: list[asyncio.Task[None]] = []
        self._sending: set[asyncio.Task[None]] = set()
        #: Set when this process added deliveries: the sender need not wait for its poll.
        self._wake = asyncio.Event()

    def start(self) -> None:
        """Start both loops (idempotent)."""
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._route_loop(), name="ojs-webhooks-route"),
                asyncio.create_task(self._send_loop(), name="ojs-webhooks-send"),
            ]

    def wake(self) -> None:
        """Look for due deliveries now (a replay was just queued), not at the next poll."""
        self._wake.set()

    async def stop(self) -> None:
        """Stop the loops; sends in flight are cancelled (their claims expire and come back)."""
        tasks = [*self._tasks, *self._sending]
        self._tasks = []
        await cancel_and_wait(*tasks)
        await self.sender.close()

    # -- routing -------------------------------------------------------------------------

    async def route_once(self) -> int:
        """Route one batch of events; how many events it held."""
        batch = await self.store.take_webhook_events(ROUTE_BATCH)
        if batch.events:
            subs = [s for s in await self.store.list_subscriptions() if s.active]
            now = self.clock.now()
            deliveries = [d for e in batch.events for d in deliveries_for(e, subs, now)]
            if deliveries:
                await self.store.add_deliveries(deliveries)
                self._wake.set()
        await batch.ack()
        return len(batch.events)

    async def _route_loop(self) -> None:
        empty = 0
        while True:
            try:
                if await self.route_once():
                    empty = 0
                else:
                    await asyncio.sleep(idle_delay(self.poll_s, empty))
                    empty += 1
            except asyncio.CancelledError:
                raise
            except OJSError as exc:  # the backend is unreachable: no traceback each second
                log.warning("webhook routing failed (%s); trying again", exc)
                await asyncio.sleep(ERROR_BACKOFF_S)
            except Exception:
                log.exception("webhook routing failed; trying again")
                await asyncio.sleep(ERROR_BACKOFF_S)

    # -- sending -------------------------------------------------------------------------

    async def _send_loop(self) -> None:
        empty = 0
        while True:
            try:
                free = self.concurrency - len(self._sending)
                claimed: list[Delivery] = []
                if free > 0:
                    self._wake.clear()
                    claimed = await self.store.claim_deliveries(self.clock.now(), free)
                for delivery in claimed:
                    task = asyncio.create_task(self._deliver_logged(delivery))
                    self._sending.add(task)
                    task.add_done_callback(self._sending.discard)
                if claimed:
                    empty = 0
                else:  # this process's new deliveries and freed slots wake it at once
                    # ``asyncio.timeout``, not ``wait_for``: on Python 3.11 ``wait_for`` can
                    # swallow a cancellation that races the wake-up, and stop() then waits on
                    # a loop that goes on forever.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(idle_delay(self.poll_s, empty)):
                            await self._wake.wait()
                    empty = 0 if self._wake.is_set() else empty + 1
            except asyncio.CancelledError:
                raise
            except OJSError as exc:
                log.warning("claiming webhook deliveries failed (%s); trying again", exc)
                await asyncio.sleep(ERROR_BACKOFF_S)
            except Exception:
                log.exception("claiming webhook deliveries failed; trying again")
                await asyncio.sleep(ERROR_BACKOFF_S)

    async def _deliver_logged(self, delivery: Delivery) -> None:
        try:
            await self.deliver(delivery)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The claim expires and the delivery comes back: at least once.
            log.exception("webhook delivery %s failed to settle", delivery.id)
        finally:
            self._wake.set()  # a slot is free

    async def deliver(self, delivery: Delivery) -> Delivery:
        """Make the next attempt of a claimed delivery and settle it; the settled version."""
        sub = await self.store.get_subscription(delivery.subscription_id)
        now = self.clock.now()
        elapsed: int | None = None
        if sub is None or not sub.active:
            settled = attrs.evolve(
                delivery,
                status="cancelled",
                last_error="subscription deleted" if sub is None else "subscription inactive",
                updated_at=now,
            )
        else:
            result = await self._post(sub, delivery.id, delivery.event, now)
            outcome = self._outcome(result)
            settled = after_attempt(delivery, outcome, self.clock.now(), self.schedule)
            elapsed = result.elapsed_ms
            if settled.status == "dead":
                log.warning(
                    "webhook delivery %s to subscription %s is dead: %s",
                    delivery.id,
                    sub.id,
                    settled.last_error,
                )
        await self.store.settle_delivery(settled)
        if settled.status != "cancelled":
            event = outcome_event(settled, self.clock.now(), elapsed)
            if event is not None:
                await self.emit([event])
        if settled.status == "pending":  # wake for the retry this process scheduled
            delay = max(0.0, (settled.next_at - self.clock.now()).total_seconds())
            asyncio.get_running_loop().call_later(delay, self._wake.set)
        return settled

    def _outcome(self, result: SendResult) -> Outcome:
        if result.refused:
            return Outcome(kind="dead", error=result.error)
        return classify(
            result.status_code, error=result.error, headers=result.headers, now=self.clock.now()
        )

    async def _post(
        self, sub: Subscription, delivery_id: str, event: Any, now: datetime
    ) -> SendResult:
        body = jsonio.dumps(event, default=str)
        headers = delivery_headers(
            delivery_id=delivery_id,
            subscription_id=sub.id,
            event_type=str(event.get("type", "")),
            secrets=sub.signing_secrets(now),
            timestamp=int(now.timestamp()),
            body=body,
            user_agent=self.user_agent,
        )
        timeout = sub.timeout_ms / 1000 if sub.timeout_ms is not None else None
        return await self.sender.post(sub.url, headers, body, timeout_s=timeout)

    async def test(self, sub: Subscription) -> dict[str, Any]:
        """Send a synthetic ``webhook.test`` event now (not queued, not retried); what came
        back."""
        now = self.clock.now()
        event = make_event("webhook.test", now, {"subscription_id": sub.id, "test": True})
        wire = event_to_wire(event)
        delivery_id = "del_" + uuid7(int(now.timestamp() * 1000))
        result = await self._post(sub, delivery_id, wire, now)
        code = result.status_code
        return {
            "success": code is not None and 200 <= code < 300,
            "status_code": code,
            "response_time_ms": result.elapsed_ms,
            "response_body": result.body,
            "error": result.error,
            "delivery_id": delivery_id,
        }
