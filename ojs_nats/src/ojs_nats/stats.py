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

from ojs_core import jsonio
from ojs_core.backend import EventFilter
from ojs_core.events import event_type_matches
from ojs_core.model import Event, Job
from ojs_core.states import JobState
from ojs_core.timeutil import format_ts, parse_ts

from . import names
from .connection import Connection
from .jetstream import direct_get_batch, last_values, publish

__all__ = ["Counters", "EventLog", "decode_event"]

#: Transitions are summed for this long, then flushed as one increment per counter.
FLUSH_DELAY_S = 0.005
#: Events read per request, and at most per listing (the filter may reject most).
_EVENT_PULL = 500
_EVENT_SCAN_MAX = 20_000


class Counters:
    """Deltas of this replica's transitions, flushed to the counter stream a few ms later."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._deltas: dict[str, int] = {}
        self._flush_task: asyncio.Task[None] | None = None
        #: A subject published without acknowledgement since the last acknowledged flush.
        self._unacked: str | None = None

    def count(self, before: Job | None, after: Job | None) -> None:
        """Account a transition (``None``: the job did not exist, or was deleted).

        A burst of transitions costs a handful of publishes.
        """
        if (
            before is not None
            and after is not None
            and before.state is after.state
            and before.queue == after.queue
            and before.type == after.type
            and before.meta.get("tenant_id") == after.meta.get("tenant_id")
        ):
            return
        deltas = self._deltas
        for job, delta in ((before, -1), (after, 1)):
            if job is not None:
                state = job.state.value
                key = names.counter_subject(job.queue, state)
                deltas[key] = deltas.get(key, 0) + delta
                key = names.type_counter_subject(job.type, job.queue, state)
                deltas[key] = deltas.get(key, 0) + delta
                tenant = job.meta.get("tenant_id")
                if isinstance(tenant, str):
                    key = names.tenant_counter_subject(tenant, job.queue, state)
                    deltas[key] = deltas.get(key, 0) + delta
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
                    self._unacked = None
                else:
                    await self.conn.nc.publish(subject, b"", headers=headers)
                    self._unacked = subject

    async def sync(self) -> None:
        """Make this replica's transitions so far visible to a read that follows: pending
        deltas are published with acknowledgement; increments a flush already sent without
        one are stored before an acknowledged ``+0`` sent after them on this connection."""
        task = self._flush_task
        if task is not None and not task.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(task)
        if self._deltas:
            await self._flush(wait=True)
        subject = self._unacked
        if subject is not None:
            with contextlib.suppress(Exception):
                await publish(self.conn.js, subject, b"", headers={names.INCR: "+0"})
            self._unacked = None

    async def total(self, state: str | None, queue: str | None, job_type: str | None) -> int:
        """The number of jobs in ``state``, ``queue`` and of ``job_type`` (``None``: any),
        summed from the counters: one batched direct get of the last value of each counter
        subject that matches (``multi_last``), whatever the number of jobs."""
        await self.sync()
        state_token = state or "*"
        queue_token = names.queue_token(queue) if queue is not None else "*"
        if job_type is None:
            subject = f"{names.COUNTER_PREFIX}.{queue_token}.{state_token}"
        else:
            subject = f"{names.TYPE_COUNTER_PREFIX}.{names.type_token(job_type)}"
            subject += f".{queue_token}.{state_token}"
        total = 0
        for msg in await last_values(self.conn.nc, names.COUNTER_STREAM, subject):
            with contextlib.suppress(ValueError, TypeError):
                total += max(0, int(json.loads(msg.data or b"{}").get("val", "0")))
        return total

    async def tenant_counts(self, tenant: str, queue: str | None) -> dict[JobState, int]:
        """Per-state counts of one tenant's jobs (multi-tenancy): the last value of each of
        its counter subjects (``multi_last``), summed over queues."""
        await self.sync()
        out = dict.fromkeys(JobState, 0)
        for msg in await last_values(
            self.conn.nc, names.COUNTER_STREAM, names.tenant_counter_filter(tenant, queue)
        ):
            with contextlib.suppress(ValueError, TypeError, KeyError):
                subject = (msg.headers or {})[names.DIRECT_SUBJECT]
                state = JobState(subject.rsplit(".", 1)[1])
                out[state] += max(0, int(json.loads(msg.data or b"{}").get("val", "0")))
        return out

    async def counts(self, queue: str) -> dict[JobState, int]:
        """Per-state counts of one queue: one direct read per state, no scan. This
        replica's own transitions are flushed first, so they are visible."""
        await self.sync()
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
        lazy = self.conn.lazy  # with the next write (ojs_nats.lazy): nobody waits for them
        for event in events:
            body = {
                "id": event.id,
                "type": event.type,
                "time": format_ts(event.time),
                "subject": event.subject,
                "data": event.data,
            }
            await lazy.publish(names.event_subject(event.type), jsonio.dumps(body, default=str))

    async def read(self, flt: EventFilter) -> list[Event]:
        """Events after sequence ``flt.after``, read with batched direct gets (no consumer is
        created, so polling costs the server no consumer churn)."""
        exact = len(flt.types) == 1 and not flt.types[0].endswith("*")
        subject = names.event_subject(flt.types[0]) if exact else names.EVENT_SUBJECTS
        out: list[Event] = []
        seq = flt.after + 1
        scanned = 0
        while len(out) < flt.limit and scanned < _EVENT_SCAN_MAX:
            msgs = await direct_get_batch(
                self.conn.nc,
                names.EVENTS_STREAM,
                {"seq": seq, "next_by_subj": subject, "batch": _EVENT_PULL},
            )
            if not msgs:
                break
            scanned += len(msgs)
            for msg in msgs:
                headers = msg.headers or {}
                seq = int(headers.get(names.DIRECT_SEQUENCE, seq)) + 1
                event = decode_event(msg.data, seq - 1)
                if event is None or (
                    flt.types and not any(event_type_matches(p, event.type) for p in flt.types)
                ):
                    continue
                if flt.queues and event.data.get("queue") not in flt.queues:
                    continue
                if flt.job_id and event.data.get("job_id") != flt.job_id:
                    continue
                out.append(event)
                if len(out) >= flt.limit:
                    break
        return out


def decode_event(data: bytes, seq: int) -> Event | None:
    """An event as :meth:`EventLog.publish` wrote it, numbered ``seq``; ``None`` if not one."""
    try:
        raw = jsonio.loads(data)
        return Event(
            id=raw["id"],
            type=raw["type"],
            time=parse_ts(raw["time"]),
            subject=raw.get("subject"),
            data=raw.get("data") or {},
            seq=seq,
        )
    except (ValueError, KeyError, TypeError):
        return None  # not an event this server wrote
