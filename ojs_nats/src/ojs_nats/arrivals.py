"""Wake-ups for long-polling fetches, across processes and replicas, with no polling.

A write that makes jobs available is followed (once JetStream acknowledged it, so the job can
be claimed) by a core-NATS message on ``ojs.notify.<queue>``: no storage, a few microseconds of
server work. It carries the records just stored (while they are few and small,
:data:`MAX_CARRIED_BYTES`), so that the process whose fetch wakes claims them without reading
them back: one round trip less between an enqueue in one process and the handler in another.
A carried record is only a guess at the stored version, like the version cache it feeds: the
claim is a compare-and-swap on its revision, so a stale one costs a re-read, never a wrong
write. (A forged one could only come from whoever may publish on ``ojs.notify``, and NATS
permissions that allow that allow writing the job bucket itself.)

A fetch waiting on a queue subscribes to its subject (one subscription per queue per process,
shared by every waiter, kept for later waits). A message says how many jobs became available
(``<count>\n`` before the records), and wakes that many of the process's waiters, the longest
waiting first, not all of them: four long-polls of one server process each pulling for one
job, three in vain, cost that process more than the job. A woken waiter whose claim found
nothing (another process took the job, or its filters of versions, tenants or pools do not
take it) hands the wake-up on to the next waiter when it waits again, at most once per waiter
the arrival found. A message without a count (a resumed queue; an older replica's empty
message) wakes every waiter. A message can be lost (a reconnect); the service still polls now
and then, so that costs latency, never a job.

The process that made the jobs available wakes its own waiters at once, without waiting for its
message to come back from the server (half a round trip, on the path of every in-process and
same-server long-poll); the message's reply subject names the sending process, so that its own
subscription skips what it already counted. Nobody replies to it.

Each of its waiters it wakes so is handed one of the jobs (:meth:`Arrivals.take`): its claim
compares-and-swaps that record directly instead of first pulling the job's ready hint, one round
trip less between an enqueue and the handler; the hint stays behind and is found stale by the
next pull. The notification then announces only the jobs no waiter of this process was handed,
so other processes do not wake for them (their claims would race the handed one). Only a fetch
that found its queues empty, waited and was woken takes a handed job, so it does not pass over
older ones. Jobs are handed only in the process that stored them: across processes every
woken waiter would race for the same job.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from . import names
from .connection import Connection

__all__ = ["MAX_CARRIED_BYTES", "Arrivals", "Hear", "frame", "parse_count", "unframe"]

#: Queues with a subscription kept between waits, at most (the oldest idle ones go first).
MAX_SUBSCRIBED = 1024
#: Bytes of records one notification carries at most; the records of a bigger burst are read
#: back by whoever claims them, as before.
MAX_CARRIED_BYTES = 16 * 1024

#: What hears carried records: ``(job id, revision, record bytes)``.
Hear = Callable[[str, int, bytes], None]
#: Per fetch (its task's context): ``("woken", job)`` when an arrival woke its last wait
#: (handing it ``job``, or ``None``), ``("claiming", job)`` once it took a new mark after that
#: (its claim takes the job; a wait that follows finds its claim came back empty). The claim
#: may run in a task of its own: it copies the context.
_PHASE: contextvars.ContextVar[tuple[str, str | None] | None] = contextvars.ContextVar(
    "ojs_arrival_phase", default=None
)


def frame(job_id: str, revision: int, data: bytes) -> bytes:
    """One carried record: ``<id> <revision> <length>\n<bytes>``."""
    return b"%s %d %d\n%s" % (job_id.encode(), revision, len(data), data)


def unframe(payload: bytes) -> Iterator[tuple[str, int, bytes]]:
    """The records of a notification; stops at the first malformed frame."""
    pos, end = 0, len(payload)
    while pos < end:
        nl = payload.find(b"\n", pos)
        if nl < 0:
            return
        head = payload[pos:nl].split(b" ")
        if len(head) != 3 or not head[1].isdigit() or not head[2].isdigit():
            return
        start, size = nl + 1, int(head[2])
        if start + size > end:
            return
        yield head[0].decode("ascii", "replace"), int(head[1]), payload[start : start + size]
        pos = start + size


class _Queue:
    __slots__ = ("count", "handovers", "sub", "waiters")

    def __init__(self) -> None:
        self.count = 0
        self.sub: Subscription | None = None
        #: Waiters in the order they began to wait (a dict as an ordered set); each is woken
        #: with the job it is handed, or ``None``.
        self.waiters: dict[asyncio.Future[str | None], None] = {}
        #: Hand-overs the last arrival still allows (one per waiter it found asleep).
        self.handovers = 0

    def arrived(self, count: int | None, ids: Sequence[str] = ()) -> int:
        """An arrival of ``count`` jobs (``None``: unknown); the waiters it wakes are handed
        ``ids`` (jobs this process stored), one each. Returns how many were handed."""
        self.count += 1
        asleep = sum(1 for w in self.waiters if not w.done())
        handed = self.wake(count, ids)
        self.handovers = max(0, asleep - (count or asleep))
        return handed

    def wake(self, n: int | None, ids: Sequence[str] = ()) -> int:
        """Wake the ``n`` longest waiting (``None``: every waiter), handing them ``ids`` one
        each while they last; returns how many were handed."""
        handed = 0
        for waiter in self.waiters:
            if n is not None and n <= 0:
                break
            if not waiter.done():
                job_id = ids[handed] if handed < len(ids) else None
                waiter.set_result(job_id)
                handed += job_id is not None
                if n is not None:
                    n -= 1
        return handed


def parse_count(payload: bytes) -> tuple[int | None, bytes]:
    """The job count a notification announces (``None``: unknown) and the records after it."""
    nl = payload.find(b"\n")
    if nl <= 0 or not payload[:nl].isdigit():
        return None, b""
    return int(payload[:nl]), payload[nl + 1 :]


class Arrivals:
    """Publishes and hears job arrivals per queue."""

    def __init__(self, conn: Connection, hear: Hear | None = None) -> None:
        self.conn = conn
        #: Where carried records go (the record store's version cache for claims).
        self.hear = hear
        #: The reply subject of this process's notifications (see the module's docstring).
        self.origin = f"_OJS.origin.{uuid.uuid4().hex}"
        self._queues: OrderedDict[str, _Queue] = OrderedDict()
        #: Queues to announce at the end of this event-loop turn (one message per queue per
        #: turn, however many writes of the turn made jobs available in it), with how many
        #: jobs became available (``None``: unknown).
        self._due: dict[str, int | None] = {}
        #: Per queue, the records this turn's message carries (and their size so far).
        self._carried: dict[str, tuple[list[bytes], int]] = {}
        #: Per queue, the jobs this turn made available that this process stored.
        self._named: dict[str, list[str]] = {}
        self._flush: asyncio.Handle | None = None
        self._sending: set[asyncio.Future[None]] = set()

    async def notify(self, queues: Iterable[str], *, counted: bool = True) -> None:
        """Tell waiters (in any process) that jobs became available in ``queues`` (one entry per
        job; ``counted=False``: an unknown number, e.g. a resumed queue): sent once the writes
        that are done in this turn of the event loop have all asked, so a burst of enqueues
        costs one message per queue, not one per job."""
        due = self._due
        for queue in queues:
            if not counted:
                due[queue] = None
            elif queue not in due:
                due[queue] = 1
            else:
                n = due[queue]
                due[queue] = None if n is None else n + 1
        if due and self._flush is None:
            self._flush = asyncio.get_running_loop().call_soon(self._send)

    def carry(self, queue: str, job_id: str, revision: int, data: bytes) -> None:
        """Have this turn's notification of ``queue`` carry a record just stored (dropped
        when the message is full: the claimer then reads it back)."""
        self._named.setdefault(queue, []).append(job_id)
        frames, size = self._carried.get(queue) or ([], 0)
        framed = frame(job_id, revision, data)
        if size + len(framed) <= MAX_CARRIED_BYTES:
            frames.append(framed)
            self._carried[queue] = (frames, size + len(framed))

    def _send(self) -> None:
        self._flush = None
        due, self._due = self._due, {}
        carried, self._carried = self._carried, {}
        named, self._named = self._named, {}
        for q, n in due.items():  # this process's waiters at once
            state = self._queues.get(q)
            if state is not None:
                handed = state.arrived(n, named.get(q, ()))
                if n is not None:
                    due[q] = n - handed  # the others wake only for the jobs left
        try:
            nc = self.conn.nc
        except Exception:
            return  # closed meanwhile
        messages = [
            (q, b"" if n is None else b"%d\n" % n + b"".join(carried[q][0] if q in carried else ()))
            for q, n in due.items()
        ]
        task = asyncio.ensure_future(self._publish(nc, messages, self.origin))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    @staticmethod
    async def _publish(nc: Any, messages: list[tuple[str, bytes]], origin: str) -> None:
        for queue, payload in messages:
            with contextlib.suppress(Exception):  # a lost wake-up costs latency only
                await nc.publish(names.notify_subject(queue), payload, reply=origin)

    async def mark(self, queues: Sequence[str]) -> int:
        """The number of arrivals heard on ``queues`` so far (subscribing to them first, so
        that every arrival from now on is heard)."""
        phase = _PHASE.get()
        _PHASE.set(("claiming", phase[1]) if phase is not None and phase[0] == "woken" else None)
        return sum([(await self._subscribed(q)).count for q in dict.fromkeys(queues)])

    def take(self) -> str | None:
        """The job handed to the fetch whose claim this is (see the module's docstring), once;
        ``None`` for any other claim (it pulls hints in order)."""
        phase = _PHASE.get()
        if phase is None or phase[0] != "claiming" or phase[1] is None:
            return None
        _PHASE.set(("claiming", None))
        return phase[1]

    async def wait(self, queues: Sequence[str], mark: int, timeout_s: float) -> None:
        """Until an arrival on ``queues`` after ``mark``, or ``timeout_s``."""
        states = [await self._subscribed(q) for q in dict.fromkeys(queues)]
        phase = _PHASE.get()
        _PHASE.set(None)
        if phase is not None and phase[0] == "claiming":
            # Woken for a job, this caller's claim found none: the next waiter may take it.
            for state in states:
                if state.handovers > 0:
                    state.handovers -= 1
                    state.wake(1)
        if sum(s.count for s in states) != mark:
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[str | None] = loop.create_future()
        for state in states:
            state.waiters[waiter] = None
        try:
            # Not wait_for: on Python 3.11 it swallows a cancellation that comes after the
            # waiter was woken, and the cancelled fetch would go on.
            async with asyncio.timeout(timeout_s):
                handed = await waiter
            _PHASE.set(("woken", handed))
        except TimeoutError:
            pass
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # Woken, then cancelled before it could claim (a client gone, a worker
                # stopping): the wake-up (and the job it was handed) is not lost with it.
                handed = waiter.result()
                for state in states:
                    state.wake(1, () if handed is None else (handed,))
            raise
        finally:
            for state in states:
                state.waiters.pop(waiter, None)

    async def _subscribed(self, queue: str) -> _Queue:
        state = self._queues.get(queue)
        if state is None:
            state = self._queues[queue] = _Queue()
            await self._evict()
        self._queues.move_to_end(queue)
        if state.sub is None:
            nc = self.conn.nc

            async def heard(msg: Msg, state: _Queue = state) -> None:
                if msg.reply == self.origin:
                    return  # this process's own: counted when it was sent
                count, records = parse_count(msg.data)
                if records and self.hear is not None:
                    for job_id, revision, data in unframe(records):
                        self.hear(job_id, revision, data)
                state.arrived(count)

            state.sub = await nc.subscribe(names.notify_subject(queue), cb=heard)
            # The server has the subscription once a flush returns: arrivals from now on are
            # heard (a mark is taken before the claim that may find nothing).
            await nc.flush()
        return state

    async def _evict(self) -> None:
        while len(self._queues) > MAX_SUBSCRIBED:
            idle = next((q for q, s in self._queues.items() if not s.waiters), None)
            if idle is None:
                return
            sub = self._queues.pop(idle).sub
            if sub is not None:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()

    def waiting(self) -> int:
        """How many waits are in progress (over all queues)."""
        return len({w for state in self._queues.values() for w in state.waiters})

    def forget_all(self) -> None:
        """Drop every subscription (the connection is closing)."""
        self._queues.clear()
