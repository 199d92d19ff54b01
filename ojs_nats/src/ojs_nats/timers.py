"""Timers: message schedules (a job's own, or one a claim batch shares), a local heap of near
deadlines, the fired-timer pull.

A job's timer deadline (:func:`ojs_core.lifecycle.timer_deadline`) is stored as an ``@at``
message schedule on ``ojs.tsched.<id>`` that fires into ``ojs.tfire.<id>``; the shared durable
consumer hands each fired timer to whichever replica pulls first. The schedule is published
*before* the write that needs it, and it is the durable backstop. The server's scheduler fires
up to ~250 ms late, so the replica that writes a deadline less than a minute ahead also keeps
it in a local heap and applies it itself when due (precise to the timer pass).

A claim batch's visibility deadlines, one for many jobs, share one schedule
(:func:`schedule_ops`): ``ojs.tsched.b-<uuid>`` naming every job of the batch after its
deadline line. It fires once; each job it names is then judged on its own record, like a job's
own timer (due: applied; later: its own schedule armed; none: nothing), and the fired message
is acked once all of them are settled. The job's own schedule subject is left as it was.

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
from collections.abc import Awaitable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import nats.errors
from nats.aio.msg import Msg

from ojs_core.ids import uuid7
from ojs_core.lifecycle import timer_deadline
from ojs_core.model import Job
from ojs_core.states import JobState
from ojs_core.timeutil import format_ts

from . import names
from .connection import Connection
from .jetstream import Op
from .pulls import pull_held, pull_now
from .records import RecordStore

__all__ = ["Timers", "fired_jobs", "redelivery_delay", "schedule_op", "schedule_ops"]

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
#: Jobs one shared schedule names at most (a claim batch of more gets several).
BATCH_SCHEDULE_MAX = 500
#: Deadlines a fired timer re-arms beyond :data:`SOON_HORIZON_S` (retention ends, mostly;
#: a visibility deadline a heartbeat pushed on, a retry's backoff) share a schedule with those
#: this close after them: each fires at most this late.
REARM_WINDOW = timedelta(seconds=1)


def schedule_op(job_id: str, deadline: datetime) -> Op:
    """The message schedule that fires a job's timer at ``deadline`` (one per job)."""
    return _schedule(job_id, deadline, format_ts(deadline).encode())


def _schedule(name: str, deadline: datetime, data: bytes) -> Op:
    """An ``@at`` schedule on ``ojs.tsched.<name>`` firing ``data`` into ``ojs.tfire.<name>``."""
    at = deadline.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return (
        names.timer_schedule_subject(name),
        data,
        {names.SCHEDULE: f"@at {at}", names.SCHEDULE_TARGET: names.timer_fire_subject(name)},
    )


def schedule_ops(
    deadlines: Sequence[tuple[str, datetime]], window: timedelta = timedelta(0)
) -> list[Op]:
    """The schedules of many jobs' deadlines: one shared by the jobs whose deadlines lie
    within ``window`` of each other, firing at the latest of them (a claim batch's visibility
    deadlines are one: ``window`` 0); a job's own when it is alone in its group."""
    groups: list[list[tuple[str, datetime]]] = []
    for pair in sorted(deadlines, key=lambda p: p[1]):
        group = groups[-1] if groups else None
        if group is None or pair[1] - group[0][1] > window or len(group) >= BATCH_SCHEDULE_MAX:
            groups.append([pair])
        else:
            group.append(pair)
    ops: list[Op] = []
    for group in groups:
        deadline = group[-1][1]  # the latest: every job of the group is due then
        ids = [job_id for job_id, _ in group]
        if len(ids) == 1:
            ops.append(schedule_op(ids[0], deadline))
            continue
        named = f"{format_ts(deadline)}\n{' '.join(ids)}".encode()
        ops.append(_schedule(f"b-{uuid7()}", deadline, named))
    return ops


def fired_jobs(msg: Msg) -> list[str]:
    """The jobs a fired timer is for: those a shared schedule names after its deadline line,
    else the job of its subject."""
    _, newline, named = (msg.data or b"").partition(b"\n")
    if newline:
        return named.decode(errors="replace").split()
    return [names.timer_job_id(msg.subject)]


def redelivery_delay(msg: Msg) -> float:
    """Seconds before a message that failed ``n`` times comes back: at once the first time,
    then doubling from 0.1 s up to :data:`REDELIVERY_MAX_S` (a poison job costs little)."""
    n = msg.metadata.num_delivered or 1
    return 0.0 if n <= 1 else min(REDELIVERY_BASE_S * 2 ** min(n - 2, 16), REDELIVERY_MAX_S)


class _Fired:
    """A fired timer handed out, and what it still waits for before it is acked: its jobs'
    updates, and the schedules it re-arms."""

    __slots__ = ("msg", "rearming", "waiting")

    def __init__(self, msg: Msg) -> None:
        self.msg = msg
        self.waiting: set[str] = set()
        self.rearming = False

    @property
    def settled(self) -> bool:
        return not self.waiting and not self.rearming


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
        #: The deadline each job in :attr:`soon` was last given by this replica; an entry for
        #: another one is stale (:meth:`moved`), and is dropped without reading its record.
        self._latest: dict[str, datetime] = {}
        #: Active jobs whose pending schedule this replica armed on the job's own subject
        #: (:meth:`owns`), oldest first, at most :data:`SOON_MAX`.
        self._own: dict[str, None] = {}
        #: Set by :meth:`soon_add`: a timer pass waiting for the server wakes for a new local
        #: deadline, which may be due before the server answers.
        self._soon_changed = asyncio.Event()
        #: Fired timers handed out by :meth:`due_jobs` by job, acked once their jobs were
        #: updated (a shared one is under each of its jobs).
        self._inflight: dict[str, _Fired] = {}
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
            self._latest[job_id] = deadline
            self._soon_changed.set()

    def armed_own(self, job_id: str) -> None:
        """This replica armed the active job's deadline on the job's own schedule subject."""
        own = self._own
        own.pop(job_id, None)
        own[job_id] = None
        if len(own) > SOON_MAX:
            del own[next(iter(own))]

    def owns(self, job_id: str) -> bool:
        """Whether the job's pending schedule is, as far as this replica knows, its own
        (armed by this replica for the job while active; not one a claim batch shares). An
        ack then arms the job's retention at once, replacing it: left pending, it would fire
        and cost a delivery, a record read and a re-arm to arm the same deadline."""
        return job_id in self._own

    def disown(self, job_id: str) -> None:
        """The job's pending schedule is not (or no longer known to be) its own."""
        self._own.pop(job_id, None)

    def stored(self, job: Job) -> None:
        """This replica stored ``job``: a local entry for another deadline than its own now is
        stale. Without this, every job acked within its visibility timeout cost a timer pass
        a record read when that timeout came (it found nothing due); the stored schedule
        stays the backstop either way."""
        job_id = job.id
        latest = self._latest.get(job_id)
        if latest is not None and latest != timer_deadline(job):
            del self._latest[job_id]
        if job.state is not JobState.ACTIVE:
            self._own.pop(job_id, None)

    def done(self, job_id: str) -> None:
        """A job was updated: ack the fired timer that asked for it, once it asked for
        nothing else."""
        fired = self._inflight.pop(job_id, None)
        if fired is not None:
            fired.waiting.discard(job_id)
            if fired.settled:
                self._spawn(fired.msg.ack())

    async def due_jobs(self, now: datetime, limit: int) -> list[str]:
        """Jobs whose timer is due: from the local heap, then the server's fired timers.

        A fired timer is acked once its jobs are updated (:meth:`done`), not here: if an
        update never lands, it is redelivered, even for a job the local heap reported."""
        failed = {id(f): f for f in self._inflight.values()}
        self._inflight.clear()
        for fired in failed.values():  # an update failed: try again, backing off
            with contextlib.suppress(Exception):
                await fired.msg.nak(delay=redelivery_delay(fired.msg))
        due: list[str] = []
        soon = self.soon
        latest = self._latest
        while soon and soon[0][0] <= now and len(due) < limit:
            at, job_id = heapq.heappop(soon)
            if latest.get(job_id) != at:
                continue  # the job's deadline moved since (or it was due already)
            del latest[job_id]
            due.append(job_id)
        if len(due) >= limit:
            return due
        if due:
            wait_s: float | None = TIMER_PULL_WAIT_S
        else:
            wait_s = (soon[0][0] - now).total_seconds() if soon else None
        msgs = await self._fired(limit - len(due), wait_s)
        if not msgs:
            return due
        named = [(msg, fired_jobs(msg)) for msg in msgs]
        ids = list(dict.fromkeys(job_id for _, jobs in named for job_id in jobs))
        recs = dict(zip(ids, await self.store.read_jobs(ids), strict=True))  # one batched read
        settled: list[Awaitable[Any]] = []
        for msg, jobs in named:
            if len(due) >= limit:  # a shared schedule names many: the rest waits its turn
                settled.append(msg.nak())
                continue
            fired = _Fired(msg)
            rearm: list[tuple[str, datetime]] = []
            for job_id in jobs:
                rec = recs[job_id]
                deadline = timer_deadline(rec.job) if rec else None
                if deadline is None or job_id in self._inflight:
                    continue  # nothing to do, or another fired timer has it in hand
                if deadline <= now:
                    assert rec is not None
                    self.store.put_fresh(rec)  # the update that follows need not read again
                    self._inflight[job_id] = fired
                    fired.waiting.add(job_id)
                    if job_id not in due:
                        due.append(job_id)
                else:
                    # Fired early (clock skew) or the deadline moved: re-arm for the current one.
                    rearm.append((job_id, deadline))
            if rearm:
                fired.rearming = True
                settled.append(self._rearm(fired, rearm, now))
            elif fired.settled:
                settled.append(msg.ack())
        for outcome in await asyncio.gather(*settled, return_exceptions=True):
            if isinstance(outcome, Exception):  # that timer is redelivered after its ack wait
                log.debug("settling a fired timer failed: %r", outcome)
        return due

    async def _rearm(
        self, fired: _Fired, deadlines: list[tuple[str, datetime]], now: datetime
    ) -> None:
        """Arm each job's schedule for its current deadline (far ones, such as the retention
        of the jobs a claim batch's visibility schedule named, shared within
        :data:`REARM_WINDOW`), then ack the fired timer if its due jobs are updated already
        (else the last update acks it)."""
        horizon = now + timedelta(seconds=SOON_HORIZON_S)
        ops = [schedule_op(job_id, at) for job_id, at in deadlines if at <= horizon]
        far = [(job_id, at) for job_id, at in deadlines if at > horizon]
        # Shared only the first time: a redelivered timer (one of its jobs failed to update)
        # arms each job's own schedule, which replaces the one armed before, where a new
        # shared one would pile up beside it at every redelivery.
        first = (fired.msg.metadata.num_delivered or 1) <= 1
        ops += schedule_ops(far, REARM_WINDOW) if first else [schedule_op(*d) for d in far]
        await self.conn.publish_all(ops)
        fired.rearming = False
        if fired.settled:
            await fired.msg.ack()

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
        self._latest.clear()
        self._own.clear()
        self.drop_pull()

    def _spawn(self, aw: Awaitable[Any]) -> None:
        """Run a fire-and-forget operation, keeping a reference until it finishes."""
        task = asyncio.ensure_future(aw)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(_retrieve)
