"""Timers: one message schedule per job, a local heap of near deadlines, the fired-timer pull.

A job's timer deadline (:func:`ojs_core.lifecycle.timer_deadline`) is stored as an ``@at``
message schedule on ``ojs.tsched.<id>`` that fires into ``ojs.tfire.<id>``; the shared durable
consumer hands each fired timer to whichever replica pulls first. The schedule is published
*before* the write that needs it, and it is the durable backstop. The server's scheduler fires
up to ~250 ms late, so the replica that writes a deadline less than a minute ahead also keeps
it in a local heap and applies it itself when due (precise to the timer pass).

An idle replica does not ask the server for fired timers at every pass: after a pull that
found none, the next one is *held* (one message, :data:`TIMER_HOLD_S`), and passes look at it
without waiting until the server answers with a fired timer (then the next passes pull in
batches again) or lets it expire. One request per hold instead of one per pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any

import nats.errors
from nats.aio.msg import Msg

from ojs_core.lifecycle import timer_deadline
from ojs_core.timeutil import format_ts

from . import names
from .connection import Connection
from .jetstream import Op
from .pulls import pull_held, pull_now
from .records import RecordStore

__all__ = ["Timers", "redelivery_delay", "schedule_op"]

log = logging.getLogger("ojs.nats")

#: Deadlines closer than this are also kept in the local heap (bounded) for precision.
SOON_HORIZON_S = 60.0
SOON_MAX = 100_000
#: How long a timer pass that has local deadlines to apply waits for the server's fired timers.
TIMER_PULL_WAIT_S = 0.02
#: How long the server holds the pull of an idle replica (see the module's docstring).
TIMER_HOLD_S = 30.0
#: Backoff of a fired timer (or hint) whose job could not be updated.
REDELIVERY_BASE_S = 0.1
REDELIVERY_MAX_S = 30.0


def schedule_op(job_id: str, deadline: datetime) -> Op:
    """The message schedule that fires a job's timer at ``deadline`` (one per job)."""
    at = deadline.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return (
        names.timer_schedule_subject(job_id),
        format_ts(deadline).encode(),
        {names.SCHEDULE: f"@at {at}", names.SCHEDULE_TARGET: names.timer_fire_subject(job_id)},
    )


def redelivery_delay(msg: Msg) -> float:
    """Seconds before a message that failed ``n`` times comes back: at once the first time,
    then doubling from 0.1 s up to :data:`REDELIVERY_MAX_S` (a poison job costs little)."""
    n = msg.metadata.num_delivered or 1
    return 0.0 if n <= 1 else min(REDELIVERY_BASE_S * 2 ** min(n - 2, 16), REDELIVERY_MAX_S)


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark a background task's outcome as seen (a dropped one may still fail)."""
    if not task.cancelled():
        task.exception()


class Timers:
    """This replica's view of the timer index: what it arms, what is due, what it applies."""

    def __init__(self, conn: Connection, store: RecordStore) -> None:
        self.conn = conn
        self.store = store
        #: ``(deadline, job_id)``; stale entries are harmless (the timer finds nothing due).
        self.soon: list[tuple[datetime, str]] = []
        #: Set by :meth:`soon_add`: a timer pass waiting for the server wakes for a new local
        #: deadline, which may be due before the server answers.
        self._soon_changed = asyncio.Event()
        #: Fired timers handed out by :meth:`due_jobs`, acked once their job was updated.
        self._inflight: dict[str, Msg] = {}
        self._pull: asyncio.Task[list[Msg]] | None = None
        #: The pull in flight is held by the server (:func:`~ojs_nats.pulls.pull_held`).
        self._pull_held = False
        #: The last pull found no fired timer: the next one is held.
        self._quiet = False
        self._background: set[asyncio.Future[Any]] = set()

    def soon_add(self, job_id: str, deadline: datetime) -> None:
        """Remember a near deadline locally; the stored schedule stays the durable backstop
        (any replica, after a crash)."""
        if (
            len(self.soon) < SOON_MAX
            and (deadline - datetime.now(UTC)).total_seconds() < SOON_HORIZON_S
        ):
            heapq.heappush(self.soon, (deadline, job_id))
            self._soon_changed.set()

    def done(self, job_id: str) -> None:
        """A job was updated: ack the fired timer that asked for it, if any."""
        msg = self._inflight.pop(job_id, None)
        if msg is not None:
            self._spawn(msg.ack())

    async def due_jobs(self, now: datetime, limit: int) -> list[str]:
        """Jobs whose timer is due: from the local heap, then the server's fired timers.

        A fired timer is acked once its job is updated (:meth:`done`), not here: if the update
        never lands, it is redelivered, even for a job the local heap reported."""
        for msg in self._inflight.values():  # their update failed: try again, backing off
            with contextlib.suppress(Exception):
                await msg.nak(delay=redelivery_delay(msg))
        self._inflight.clear()
        due: list[str] = []
        soon = self.soon
        while soon and soon[0][0] <= now and len(due) < limit:
            job_id = heapq.heappop(soon)[1]
            if job_id not in due:
                due.append(job_id)
        if len(due) >= limit:
            return due
        if due:
            wait_s: float | None = TIMER_PULL_WAIT_S
        else:
            wait_s = (soon[0][0] - now).total_seconds() if soon else None
        fired = await self._fired(limit - len(due), wait_s)
        if not fired:
            return due
        ids = [names.timer_job_id(msg.subject) for msg in fired]
        recs = await self.store.read_jobs(ids)  # one batched read for the whole pull
        settled: list[Awaitable[Any]] = []
        for msg, job_id, rec in zip(fired, ids, recs, strict=True):
            deadline = timer_deadline(rec.job) if rec else None
            if deadline is None:
                settled.append(msg.ack())
            elif deadline <= now:
                if job_id in self._inflight:
                    settled.append(msg.ack())
                else:
                    assert rec is not None
                    self.store.put_fresh(rec)  # the update that follows need not read again
                    self._inflight[job_id] = msg
                    if job_id not in due:
                        due.append(job_id)
            else:
                # Fired early (clock skew) or the deadline moved: re-arm for the current one.
                settled.append(self._rearm(msg, job_id, deadline))
        for outcome in await asyncio.gather(*settled, return_exceptions=True):
            if isinstance(outcome, Exception):  # that timer is redelivered after its ack wait
                log.debug("settling a fired timer failed: %r", outcome)
        return due

    async def _rearm(self, msg: Msg, job_id: str, deadline: datetime) -> None:
        await self.conn.commit([schedule_op(job_id, deadline)])
        await msg.ack()

    async def _fired(self, batch: int, wait_s: float | None) -> list[Msg]:
        """The server's fired timers, waiting for them at most ``wait_s`` (``None``: as long as
        the pull takes), and never past the moment a new local deadline is added. A held pull
        (after a pull that found none) is not waited for: it is looked at, and it stays in
        flight until the server answers.

        The pull runs as a task of its own that a later pass picks up if this one stops
        waiting. Its answer normally takes well under a millisecond, but one may never come
        (its consumer deleted by a reset while the request was in flight, a reply lost in a
        reconnect) and then the pull lasts its whole timeout: local deadlines due meanwhile
        must not wait for it.
        """
        task = self._pull
        if task is None:
            nc, stream, consumer = self.conn.nc, names.TIMER_STREAM, names.TIMER_CONSUMER
            self._pull_held = self._quiet
            if self._quiet:
                pull = pull_held(nc, stream, consumer, TIMER_HOLD_S)
            else:
                pull = pull_now(nc, stream, consumer, batch)
            task = asyncio.ensure_future(pull)
            task.add_done_callback(_retrieve)
            self._pull = task
        if not task.done() and not self._pull_held:
            self._soon_changed.clear()
            waiters: set[asyncio.Future[Any]] = {
                task,
                asyncio.ensure_future(self._soon_changed.wait()),
            }
            try:
                await asyncio.wait(
                    waiters,
                    timeout=None if wait_s is None else max(wait_s, 0.0),
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                for waiter in waiters - {task}:
                    waiter.cancel()
        if not task.done() or self._pull is not task:
            return []  # still running, or taken by a concurrent pass (or dropped by a reset)
        self._pull = None
        if task.cancelled():
            return []
        exc = task.exception()
        if exc is not None:
            if not isinstance(exc, nats.errors.TimeoutError):
                log.debug("timer pull failed: %r", exc)
            return []
        fired = task.result()
        self._quiet = not fired
        return fired

    def drop_pull(self) -> None:
        """Abandon the pull in flight; fired timers it received go back to the server."""
        task, self._pull = self._pull, None
        if task is None:
            return
        if not task.done():
            task.cancel()  # what it would have received is redelivered after the ack wait
        elif not task.cancelled() and task.exception() is None:
            for msg in task.result():  # received, never looked at: give them back now
                self._spawn(msg.nak())

    def forget_all(self) -> None:
        """Forget local deadlines and fired timers (after a reset)."""
        self._inflight.clear()
        self.soon.clear()
        self.drop_pull()

    def _spawn(self, aw: Awaitable[Any]) -> None:
        """Run a fire-and-forget operation, keeping a reference until it finishes."""
        task = asyncio.ensure_future(aw)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(_retrieve)
