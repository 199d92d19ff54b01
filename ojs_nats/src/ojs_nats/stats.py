"""Per-queue, per-state counters (queue stats without a scan) and the event log.

Counters live in ``OJS_COUNTERS`` (``allow_msg_counter``): each transition adds -1 to the
state it leaves and +1 to the one it enters. Events are published with core NATS on
``ojs.events.<type>`` and kept by ``OJS_EVENTS`` for polling; they never enter a work stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence

import nats.js.errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from ojs_core import jsonio
from ojs_core.backend import EventFilter
from ojs_core.model import Event, Job
from ojs_core.states import JobState
from ojs_core.timeutil import format_ts, parse_ts

from . import names
from .connection import Connection
from .jetstream import publish, pull_now

__all__ = ["Counters", "EventLog"]

#: Transitions are summed for this long, then flushed as one increment per counter.
FLUSH_DELAY_S = 0.005
#: A reading consumer of the event log is removed by the server after this long unused.
_EVENT_CONSUMER_INACTIVE_S = 10.0
#: Events pulled per request, and at most per listing (the filter may reject most).
_EVENT_PULL = 500
_EVENT_SCAN_MAX = 20_000


class Counters:
    """Deltas of this replica's transitions, flushed to the counter stream a few ms later."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._deltas: dict[str, int] = {}
        self._flush_task: asyncio.Task[None] | None = None

    def count(self, before: Job | None, after: Job | None) -> None:
        """Account a transition (``None``: the job did not exist, or was deleted).

        A burst of transitions costs a handful of publishes.
        """
        if (
            before is not None
            and after is not None
            and before.state is after.state
            and before.queue == after.queue
        ):
            return
        deltas = self._deltas
        if before is not None:
            key = names.counter_subject(before.queue, before.state.value)
            deltas[key] = deltas.get(key, 0) - 1
        if after is not None:
            key = names.counter_subject(after.queue, after.state.value)
            deltas[key] = deltas.get(key, 0) + 1
        if self._flush_task is None or self._flush_task.done():
            self._flush_task = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self, *, wait: bool = False) -> None:
        if not wait:
            await asyncio.sleep(FLUSH_DELAY_S)
        deltas, self._deltas = self._deltas, {}
        with contextlib.suppress(Exception):
            for subject, delta in deltas.items():
                if not delta:
                    continue
                headers = {names.INCR: f"{delta:+d}"}
                if wait:  # acknowledged: a read that follows sees it
                    await publish(self.conn.js, subject, b"", headers=headers)
                else:
                    await self.conn.nc.publish(subject, b"", headers=headers)

    async def counts(self, queue: str) -> dict[JobState, int]:
        """Per-state counts of one queue: one direct read per state, no scan. This
        replica's own transitions are flushed first, so they are visible."""
        if self._deltas:
            await self._flush(wait=True)
        js = self.conn.js

        async def read(state: JobState) -> int:
            try:
                msg = await js.get_last_msg(
                    names.COUNTER_STREAM, names.counter_subject(queue, state.value)
                )
            except nats.js.errors.NotFoundError:
                return 0
            return max(0, int(json.loads(msg.data or b"{}").get("val", "0")))

        values = await asyncio.gather(*(read(s) for s in JobState))
        return dict(zip(JobState, values, strict=True))


class EventLog:
    """Events on core NATS, read back from the events stream."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def publish(self, events: Sequence[Event]) -> None:
        """Core-NATS publish to ``ojs.events.<type>`` (the events stream keeps them a day)."""
        nc = self.conn.nc
        for event in events:
            body = {
                "id": event.id,
                "type": event.type,
                "time": format_ts(event.time),
                "subject": event.subject,
                "data": event.data,
            }
            await nc.publish(names.event_subject(event.type), jsonio.dumps(body, default=str))

    async def read(self, flt: EventFilter) -> list[Event]:
        """Read the events stream from ``after`` with an ephemeral consumer."""
        js = self.conn.js
        subjects = [names.event_subject(t) for t in flt.types] or [names.EVENT_SUBJECTS]
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE if flt.after else DeliverPolicy.ALL,
            opt_start_seq=flt.after + 1 if flt.after else None,
            ack_policy=AckPolicy.NONE,
            inactive_threshold=_EVENT_CONSUMER_INACTIVE_S,
            filter_subjects=subjects if len(subjects) > 1 else None,
            filter_subject=subjects[0] if len(subjects) == 1 else None,
        )
        info = await js.add_consumer(names.EVENTS_STREAM, config)
        out: list[Event] = []
        try:
            scanned = 0
            while len(out) < flt.limit and scanned < _EVENT_SCAN_MAX:
                msgs = await pull_now(self.conn.nc, names.EVENTS_STREAM, info.name, _EVENT_PULL)
                if not msgs:
                    break
                scanned += len(msgs)
                for msg in msgs:
                    raw = json.loads(msg.data)
                    data = raw.get("data") or {}
                    if flt.queues and data.get("queue") not in flt.queues:
                        continue
                    if flt.job_id and data.get("job_id") != flt.job_id:
                        continue
                    out.append(
                        Event(
                            id=raw["id"],
                            type=raw["type"],
                            time=parse_ts(raw["time"]),
                            subject=raw.get("subject"),
                            data=data,
                            seq=msg.metadata.sequence.stream,
                        )
                    )
                    if len(out) >= flt.limit:
                        break
        finally:
            with contextlib.suppress(Exception):
                await js.delete_consumer(names.EVENTS_STREAM, info.name)
        return out
