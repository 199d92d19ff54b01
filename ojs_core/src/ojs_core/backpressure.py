"""Bounded queues (the backpressure extension, ``ojs-backpressure.md``).

A queue may carry a :class:`~ojs_core.model.Backpressure` bound, stored by the backend with
the queue's other flags (the optional :class:`~ojs_core.backend.QueueBounds` capability). Every
way jobs enter a queue (enqueue, batch, workflow, cron tick) passes :meth:`Gate.admit` first:

* the **depth** of a queue is the number of jobs it holds *waiting*: ``available``,
  ``scheduled``, ``retryable`` and ``pending``. ``active`` jobs are not counted: they are
  being consumed, and counting them would make the bound depend on how many workers run;
* the depth is read from the backend's per-queue counters (:meth:`Backend.queue_stats`, never a
  scan), and only for a queue that has a bound: an unbounded queue costs one lookup in the
  backend's watched copy of the queue flags;
* within one process the check is exact: admissions to one queue are checked one at a time,
  and jobs admitted but not yet stored are counted (``_admitting``). Across processes it is
  approximate: two replicas may each admit the last free slot, so a queue may exceed its
  bound by up to (replicas - 1) x the largest admitted request, and by the counters' lag
  (a few milliseconds on NATS);
* a request is admitted whole or refused whole: a batch (and a workflow) that does not fit in
  every queue it writes to is refused with nothing stored (spec §9.3), and one larger than a
  bound is refused even when the queue is empty.

A refusal raises :class:`~ojs_core.errors.QueueFullError` (429 ``queue_full``) and emits
``backpressure.rejected``; an admission that takes a queue over its warning threshold emits
``backpressure.warning``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import attrs

from .backend import Backend, QueueBounds
from .errors import QueueFullError, UnsupportedError, ValidationError
from .events import make_event
from .model import Backpressure, Event, Job
from .states import JobState

__all__ = [
    "DEPTH_STATES",
    "STRATEGIES",
    "Gate",
    "Pressure",
    "backpressure_to_wire",
    "parse_backpressure",
]

#: The states whose jobs count towards a queue's depth.
DEPTH_STATES = (JobState.AVAILABLE, JobState.SCHEDULED, JobState.RETRYABLE, JobState.PENDING)
#: Strategies a bound may name; ``drop_oldest`` is the spec's third, refused (see docs).
STRATEGIES = ("reject", "block")
#: How often a blocked enqueue looks at the depth again.
BLOCK_POLL_S = 0.05
#: Longest wait for admissions in flight before a refusal is reconsidered (a safety net: their
#: end wakes the waiter at once).
_SETTLE_WAIT_S = 1.0
#: Upper bound of ``retry_after_s``.
MAX_RETRY_AFTER_S = 3600

Emit = Callable[[Sequence[Event]], Awaitable[None]]


def _int(raw: Mapping[str, Any], name: str, path: str, default: int, lo: int, hi: int) -> int:
    value = raw.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError("must be an integer", path=f"{path}.{name}")
    if not lo <= value <= hi:
        raise ValidationError(f"must be between {lo} and {hi}", path=f"{path}.{name}")
    return value


def parse_backpressure(raw: Any, path: str = "backpressure") -> Backpressure | None:
    """A bound from the admin API's ``backpressure`` object (``None``, or ``max_depth: 0``,
    removes the bound). Strategies and bounds this server cannot enforce are refused with
    422 ``unsupported`` rather than stored and silently ignored."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise ValidationError("must be an object", path=path)
    max_depth = _int(raw, "max_depth", path, 0, 0, 2**53)
    size = _int(raw, "max_size_bytes", path, 0, 0, 2**53)
    if size:
        raise UnsupportedError(
            "max_size_bytes is not supported: queue sizes in bytes are not counted; "
            "bound the depth with max_depth",
            details={"field": f"{path}.max_size_bytes"},
        )
    strategy = raw.get("strategy", "reject")
    if strategy == "drop_oldest":
        raise UnsupportedError(
            "the drop_oldest strategy is not supported; use reject or block",
            details={"field": f"{path}.strategy"},
        )
    if strategy not in STRATEGIES:
        raise ValidationError("must be reject or block", path=f"{path}.strategy")
    threshold = raw.get("warning_threshold", 0.8)
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, int | float)
        or not 0.0 <= threshold <= 1.0
    ):
        raise ValidationError("must be a number from 0.0 to 1.0", path=f"{path}.warning_threshold")
    retry_after = _int(raw, "retry_after_s", path, 5, 1, MAX_RETRY_AFTER_S)
    if max_depth == 0:
        return None
    return Backpressure(
        max_depth=max_depth,
        strategy=strategy,
        warning_threshold=float(threshold),
        retry_after_s=retry_after,
    )


def backpressure_to_wire(bound: Backpressure | None) -> dict[str, Any]:
    """The bound as the admin API shows it (``max_depth: 0`` when there is none)."""
    bound = bound or Backpressure()
    return {
        "max_depth": bound.max_depth,
        "max_size_bytes": bound.max_size_bytes,
        "strategy": bound.strategy,
        "warning_threshold": bound.warning_threshold,
        "retry_after_s": bound.retry_after_s,
    }


@attrs.frozen
class Pressure:
    """A bounded queue's depth once a request was admitted, for the warning headers."""

    queue: str
    depth: int
    bound: int
    threshold: float

    @property
    def ratio(self) -> float:
        """Depth over bound, 0.0-1.0 (the ``X-OJS-Queue-Pressure`` header)."""
        return min(1.0, self.depth / self.bound) if self.bound else 0.0

    @property
    def warning(self) -> bool:
        """Whether the queue is at or over its warning threshold."""
        return self.ratio >= self.threshold


class Gate:
    """Admits jobs into bounded queues; one per :class:`~ojs_core.service.JobService`."""

    def __init__(self, backend: Backend, now: Callable[[], datetime], emit: Emit) -> None:
        self.backend = backend
        #: The backend as a bound store, or ``None``: decided once (an ``isinstance`` against a
        #: runtime-checkable protocol walks its members: ~10 µs on every enqueue otherwise).
        self._bounds: QueueBounds | None = backend if isinstance(backend, QueueBounds) else None
        self._now = now
        self._emit = emit
        #: Jobs this process admitted that are not stored yet (not in the counters), by queue.
        self._admitting: Counter[str] = Counter()
        #: One check at a time per bounded queue: otherwise two requests could both read the
        #: same depth and both take the last slot, within one process.
        self._locks: dict[str, asyncio.Lock] = {}
        #: Set (and replaced) whenever an admission to the queue ends; see :meth:`_reserve`.
        self._released: dict[str, asyncio.Event] = {}

    @property
    def supported(self) -> bool:
        """Whether the backend stores bounds."""
        return self._bounds is not None

    async def bound(self, queue: str) -> Backpressure | None:
        """The queue's bound, or ``None`` (always ``None`` without the capability)."""
        bounds = self._bounds
        if bounds is None:
            return None
        return await bounds.get_backpressure(queue)

    async def depth(self, queue: str) -> int:
        """The queue's waiting jobs, from the backend's counters."""
        stats = await self.backend.queue_stats(queue)
        return sum(stats.counts.get(s, 0) for s in DEPTH_STATES)

    @contextlib.asynccontextmanager
    async def admit(
        self, jobs: Sequence[Job], block_s: float = 0.0
    ) -> AsyncIterator[list[Pressure]]:
        """Reserve room for ``jobs`` in their queues for the duration of the block (which
        stores them), or raise :class:`QueueFullError` with nothing reserved.

        ``block_s`` is how long a queue whose strategy is ``block`` may be waited for (the
        ``OJS-Block-Timeout`` header); 0 refuses at once. Yields the pressure of each bounded
        queue after admission.
        """
        wanted = Counter(job.queue for job in jobs)
        bounds: dict[str, Backpressure] = {}
        for queue in wanted:
            bound = await self.bound(queue)
            if bound is not None and bound.max_depth > 0:
                bounds[queue] = bound
        if not bounds:
            yield []
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, block_s)
        reserved: Counter[str] = Counter()
        pressures: list[Pressure] = []
        try:
            # Sorted: two batches over the same queues take the locks in the same order.
            for queue in sorted(bounds):
                types = [job.type for job in jobs if job.queue == queue]
                pressures.append(
                    await self._reserve(queue, bounds[queue], wanted[queue], types, deadline)
                )
                reserved[queue] = wanted[queue]
            yield pressures
        finally:
            for queue, n in reserved.items():
                self._release(queue, n)

    async def _reserve(
        self, queue: str, bound: Backpressure, n: int, types: list[str], deadline: float
    ) -> Pressure:
        lock = self._locks.setdefault(queue, asyncio.Lock())
        loop = asyncio.get_running_loop()
        while True:
            released: asyncio.Event | None = None
            async with lock:
                # Taken before the read: an admission that ends during it is then counted
                # (twice at worst), never missed.
                inflight = self._admitting[queue]
                depth = await self.depth(queue) + inflight
                if depth + n <= bound.max_depth:
                    self._admitting[queue] += n
                    pressure = Pressure(queue, depth + n, bound.max_depth, bound.warning_threshold)
                    crossing = bound.max_depth * bound.warning_threshold
                    if depth < crossing <= depth + n:
                        await self._event("backpressure.warning", pressure)
                    return pressure
                if self._admitting[queue]:
                    # Jobs admitted here and stored already are counted twice until their
                    # insert returns, and an admission may yet fail: decide once they settle.
                    released = self._released.setdefault(queue, asyncio.Event())
            if released is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(released.wait(), _SETTLE_WAIT_S)
                continue
            if inflight:
                continue  # they ended during the read, perhaps counted twice: read again
            left = deadline - loop.time()
            # A request larger than the bound never fits: waiting for it would only hold the
            # connection until the timeout.
            if bound.strategy != "block" or left <= 0 or n > bound.max_depth:
                refused = Pressure(queue, depth, bound.max_depth, bound.warning_threshold)
                await self._event("backpressure.rejected", refused, job_type=types[0])
                raise QueueFullError(
                    queue,
                    depth,
                    bound.max_depth,
                    strategy=bound.strategy,
                    retry_after_s=bound.retry_after_s,
                    details={"requested": n},
                )
            await asyncio.sleep(min(BLOCK_POLL_S, left))

    def _release(self, queue: str, n: int) -> None:
        self._admitting[queue] -= n
        if self._admitting[queue] <= 0:
            del self._admitting[queue]
        event = self._released.pop(queue, None)
        if event is not None:
            event.set()

    async def _event(self, kind: str, pressure: Pressure, **extra: Any) -> None:
        data: dict[str, Any] = {
            "queue": pressure.queue,
            "depth": pressure.depth,
            "bound": pressure.bound,
            **extra,
        }
        await self._emit([make_event(kind, self._now(), data, subject=pressure.queue)])
