"""Live events for streaming clients: one backend subscription per process, fanned out.

The :class:`EventHub` of a process (shared by the HTTP binding's SSE and WebSocket streams and
the gRPC binding's ``StreamEvents``) holds *one* subscription to the backend's live feed
(:class:`~ojs_core.backend.EventFeed`; NATS: one core subscription per process, whatever the
number of clients) or, for a backend without the capability, polls the event log. Each event
it hears goes to every :class:`Subscription` whose channels match, into a bounded queue: a
client that does not keep up is dropped (its stream ends; it resumes with ``Last-Event-ID``
from the log), never buffered without bound.

Events are numbered by the log (``Event.seq``), the same number on every replica. The hub keeps
the last number it fanned out (its *cursor*); when the feed skips numbers (core NATS delivers at
most once) it reads the skipped events from the log before going on, so subscribers see every
event, in log order. A resuming client is served from the log (:meth:`EventHub.replay`) up to
where its live queue starts, and the overlap is dropped by number: no gap, no duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Iterable

import attrs

from .backend import Backend, EventFeed, EventFilter, Unsubscribe
from .envelope import validate_queue
from .errors import OJSError, ValidationError
from .limits import MAX_ID_LENGTH
from .model import Event
from .tasks import cancel_and_wait

__all__ = [
    "TERMINAL_EVENTS",
    "Channel",
    "EventHub",
    "SlowConsumerError",
    "StreamEndedError",
    "Subscription",
    "TooManyStreamsError",
    "parse_channel",
]

# The logger it has always used (it moved from ojs_http): operators filter on the name.
log = logging.getLogger("ojs.http")

#: The events after which a job's stream ends: the job reached a terminal state.
TERMINAL_EVENTS = frozenset({"job.completed", "job.cancelled", "job.discarded", "job.expired"})
#: Events read per log request (replays, gap repairs, polling).
PAGE = 500
#: Events the hub holds between the feed and the fan-out; beyond it, they are read back from
#: the log (the feed's callback must never block, and memory must stay bounded).
INBOX_LIMIT = 10_000
#: How long a replay or repair waits for the log to show events the feed already delivered
#: (a stream replica that serves reads may lag its leader by a moment).
LAG_WAIT_S = 2.0
_LAG_STEP_S = 0.05
#: A feed quiet this long is checked against the log (one read) while streams are open.
IDLE_CHECK_S = 5.0


class TooManyStreamsError(OJSError):
    """The process serves as many event streams as it may (503, retry later)."""

    code = "too_many_streams"
    status = 503
    retryable = True

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"this server process already serves {limit} event streams (its limit); "
            "retry later or on another replica",
            details={"max_event_streams": limit},
        )
        self.retry_after_s = 5


class StreamEndedError(Exception):
    """The subscription ended: the server is shutting down (the client resumes elsewhere)."""


class SlowConsumerError(StreamEndedError):
    """A subscriber's queue overflowed: its stream must end (the client resumes from the log)."""


@attrs.frozen
class Channel:
    """What a subscriber hears: one job (``job:<id>``), one queue (``queue:<name>``) or ``all``."""

    kind: str
    name: str = ""

    def matches(self, event: Event) -> bool:
        """Whether ``event`` belongs to this channel."""
        if self.kind == "all":
            return True
        key = "job_id" if self.kind == "job" else "queue"
        return event.data.get(key) == self.name

    def __str__(self) -> str:
        return self.kind if self.kind == "all" else f"{self.kind}:{self.name}"


def parse_channel(raw: object, path: str = "channel") -> Channel:
    """``job:<id>``, ``queue:<name>`` or ``all``; a 400 naming ``path`` otherwise."""
    if not isinstance(raw, str) or not raw:
        raise ValidationError("must be job:<id>, queue:<name> or all", path=path)
    if raw == "all":
        return Channel("all")
    kind, sep, name = raw.partition(":")
    if sep and kind == "job" and 0 < len(name) <= MAX_ID_LENGTH and name.isprintable():
        return Channel("job", name)
    if sep and kind == "queue":
        return Channel("queue", validate_queue(name, path))
    raise ValidationError("must be job:<id>, queue:<name> or all", path=path)


class Subscription:
    """One client's channels and its bounded queue of live events."""

    def __init__(self, channels: Iterable[Channel], max_pending: int, start: int | None) -> None:
        self.channels: set[Channel] = set(channels)
        self.max_pending = max_pending
        #: The hub's cursor when this subscription began: every later event is queued here.
        self.start = start
        self.dropped = False
        self.ended = False
        self._queue: deque[Event] = deque()
        self._wake = asyncio.Event()

    def matches(self, event: Event) -> bool:
        """Whether any of the channels wants ``event``."""
        return any(c.matches(event) for c in self.channels)

    def offer(self, event: Event) -> None:
        """Queue ``event`` if a channel wants it; drop the subscriber when its queue is full."""
        if self.dropped or not self.matches(event):
            return
        if len(self._queue) >= self.max_pending:
            self.dropped = True
            self._queue.clear()
        else:
            self._queue.append(event)
        self._wake.set()

    def poke(self) -> None:
        """Wake a pending :meth:`next` (which then returns ``None`` early)."""
        self._wake.set()

    def end(self) -> None:
        """End the subscription: its reader gets :class:`StreamEndedError`."""
        self.ended = True
        self._wake.set()

    async def next(self, timeout_s: float) -> Event | None:
        """The next live event, or ``None`` after ``timeout_s`` without one (time for a
        heartbeat). Raises :class:`SlowConsumerError` once the subscriber was dropped and
        :class:`StreamEndedError` once it was ended."""
        if not self._queue and not self.dropped and not self.ended:
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout_s)
        if self.dropped:
            raise SlowConsumerError
        if self.ended:
            raise StreamEndedError
        return self._queue.popleft() if self._queue else None


class EventHub:
    """The process's live events, fanned out to at most ``max_streams`` subscriptions."""

    def __init__(
        self,
        backend: Backend,
        *,
        max_streams: int = 1000,
        max_pending: int = 1000,
        poll_interval_s: float = 0.5,
    ) -> None:
        self.backend = backend
        self.max_streams = max_streams
        self.max_pending = max_pending
        self.poll_interval_s = poll_interval_s
        self.idle_check_s = IDLE_CHECK_S
        #: The number of the last event fanned out (``None``: none yet).
        self.cursor: int | None = None
        self._subs: set[Subscription] = set()
        self._inbox: deque[Event] = deque()
        self._overflowed = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe: Unsubscribe | None = None
        self._starting = asyncio.Lock()
        self._closing = False

    @property
    def streams(self) -> int:
        """Subscriptions being served."""
        return len(self._subs)

    async def subscribe(self, channels: Iterable[Channel]) -> Subscription:
        """A new subscription, hearing every event the hub fans out from now on. Raises
        :class:`TooManyStreamsError` beyond ``max_streams``."""
        await self._start()
        # Checked after the (first) start, which awaits: concurrent first streams count too.
        if len(self._subs) >= self.max_streams or self._closing:
            raise TooManyStreamsError(self.max_streams)
        sub = Subscription(channels, self.max_pending, self.cursor)
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Stop feeding ``sub`` (idempotent)."""
        self._subs.discard(sub)

    async def replay(self, sub: Subscription, after: int) -> AsyncIterator[Event]:
        """The logged events after number ``after`` that ``sub`` wants, up to (at least)
        where its live queue starts; the caller drops live events it already sent by number."""
        cursor = after
        deadline = asyncio.get_running_loop().time() + LAG_WAIT_S
        while True:
            page = await self.backend.read_events(EventFilter(after=cursor, limit=PAGE))
            for event in page:
                cursor = event.seq
                if sub.matches(event):
                    yield event
            if len(page) == PAGE:
                continue
            if sub.start is None or cursor >= sub.start:
                return
            if asyncio.get_running_loop().time() > deadline:
                log.warning("event log still ends at %d, before %d", cursor, sub.start)
                return
            await asyncio.sleep(_LAG_STEP_S)

    async def _start(self) -> None:
        async with self._starting:
            if self._task is not None:
                return
            if isinstance(self.backend, EventFeed):
                self._unsubscribe = await self.backend.subscribe_events(self._heard)
                self._task = asyncio.get_running_loop().create_task(self._run_feed())
            else:
                self.cursor = await self._log_end()
                self._task = asyncio.get_running_loop().create_task(self._run_polling())

    def end_all(self) -> None:
        """End every subscription (the server is shutting down: streams must not hold it up)."""
        self._closing = True
        for sub in tuple(self._subs):
            sub.end()

    async def close(self) -> None:
        """Stop hearing events (the app is shutting down); subscribers get nothing more."""
        self.end_all()
        if self._unsubscribe is not None:
            with contextlib.suppress(Exception):
                await self._unsubscribe()
            self._unsubscribe = None
        task, self._task = self._task, None
        await cancel_and_wait(task)

    # -- feeding --------------------------------------------------------------------------

    def _heard(self, event: Event) -> None:
        if len(self._inbox) >= INBOX_LIMIT:
            self._overflowed = True  # read back from the log by the next pass
        else:
            self._inbox.append(event)
        self._wake.set()

    async def _run_feed(self) -> None:
        while True:
            woken = True
            try:
                await asyncio.wait_for(self._wake.wait(), self.idle_check_s)
            except TimeoutError:
                woken = False
            self._wake.clear()
            try:
                while self._inbox:
                    await self._deliver(self._inbox.popleft())
                if self._overflowed or (not woken and self._subs):
                    # An overflow, or a quiet feed: an event the feed lost just before the
                    # quiet would otherwise wait for the next one to reveal the gap.
                    self._overflowed = False
                    await self._repair(None)
            except asyncio.CancelledError:
                raise
            except Exception:  # the backend failed a read: go on with what comes next
                log.exception("event fan-out failed")

    async def _deliver(self, event: Event) -> None:
        cursor = self.cursor
        if cursor is not None and event.seq > cursor + 1:
            await self._repair(event.seq - 1)
        # A number at or below the cursor only comes after the log restarted (a reset).
        self._fan_out(event)

    async def _repair(self, upto: int | None) -> None:
        """Fan out the logged events after the cursor (up to ``upto``; all when ``None``)."""
        if self.cursor is None:
            return
        deadline = asyncio.get_running_loop().time() + LAG_WAIT_S
        while upto is None or self.cursor < upto:
            page = await self.backend.read_events(EventFilter(after=self.cursor, limit=PAGE))
            for event in page:
                if upto is not None and event.seq > upto:
                    return
                self._fan_out(event)
            if len(page) == PAGE:
                continue
            if upto is None:
                return
            if asyncio.get_running_loop().time() > deadline:
                log.warning("events %d..%d never reached the log", self.cursor + 1, upto)
                return
            await asyncio.sleep(_LAG_STEP_S)

    def _fan_out(self, event: Event) -> None:
        self.cursor = event.seq
        for sub in tuple(self._subs):
            sub.offer(event)

    async def _log_end(self) -> int:
        cursor = 0
        while page := await self.backend.read_events(EventFilter(after=cursor, limit=PAGE)):
            cursor = page[-1].seq
        return cursor

    async def _run_polling(self) -> None:
        while True:
            try:
                await self._repair(None)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("event polling failed")
            await asyncio.sleep(self.poll_interval_s)
