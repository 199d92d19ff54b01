"""Scheduling statistics (fair-scheduling §10.2, FS-R004): dispatches per queue over the last
minute, their share, the mean wait before dispatch, and the active jobs.

The dispatch figures are fed by the ``job.started`` events this process's
:class:`~ojs_core.service.JobService` publishes (an :mod:`ojs_core.observe` observer), kept in
one-second buckets for a minute: they are **per process**, like queue stats' throughput
(:mod:`ojs_core.activity`), so with several replicas each reports the dispatches it made.
``active_jobs`` comes from the backend's counters and is global. The wait is a first
attempt's time from when it could run (enqueued, or its ``scheduled_at``) to its dispatch.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from .backend import Backend
from .model import Event
from .states import JobState

__all__ = ["WINDOW_S", "SchedulingStats"]

#: The window of the statistics (``"window": "PT1M"``).
WINDOW_S = 60
#: Queues tracked at most (bounded memory whatever queue names clients use).
MAX_QUEUES = 1000


class _Second:
    __slots__ = ("count", "second", "wait_ms", "waits")

    def __init__(self, second: int) -> None:
        self.second = second
        self.count = 0
        self.wait_ms = 0.0
        self.waits = 0


class SchedulingStats:
    """Per-queue dispatch counters of one process (call :meth:`observe` with events)."""

    def __init__(self, backend: Backend, now: Callable[[], datetime]) -> None:
        self._backend = backend
        self._now = now
        self._queues: dict[str, deque[_Second]] = {}

    def observe(self, events: Sequence[Event]) -> None:
        """Count the dispatches (``job.started``) of one published batch."""
        for event in events:
            if event.type != "job.started":
                continue
            queue = event.data.get("queue")
            if not isinstance(queue, str):
                continue
            seconds = self._queues.get(queue)
            if seconds is None:
                if len(self._queues) >= MAX_QUEUES:
                    continue
                seconds = self._queues[queue] = deque()
            second = int(event.time.timestamp())
            if not seconds or seconds[-1].second != second:
                seconds.append(_Second(second))
                self._trim(seconds, second)
            bucket = seconds[-1]
            bucket.count += 1
            wait = event.data.get("queue_time_ms")
            if isinstance(wait, int | float):
                bucket.wait_ms += wait
                bucket.waits += 1

    @staticmethod
    def _trim(seconds: deque[_Second], now_s: int) -> None:
        while seconds and seconds[0].second <= now_s - WINDOW_S:
            seconds.popleft()

    def _window(self, now_s: int) -> dict[str, tuple[int, float | None]]:
        out: dict[str, tuple[int, float | None]] = {}
        for queue, seconds in list(self._queues.items()):
            self._trim(seconds, now_s)
            if not seconds:
                del self._queues[queue]
                continue
            count = sum(b.count for b in seconds)
            waits = sum(b.waits for b in seconds)
            wait = sum(b.wait_ms for b in seconds) / waits if waits else None
            out[queue] = (count, wait)
        return out

    async def view(self) -> dict[str, Any]:
        """``GET /ojs/v1/admin/scheduling/stats``: every known queue, by name."""
        now_s = int(self._now().timestamp())
        window = self._window(now_s)
        names = sorted({q.name for q in await self._backend.list_queues()} | set(window))
        stats = await asyncio.gather(*(self._backend.queue_stats(q) for q in names))
        total = sum(count for count, _ in window.values())
        queues = []
        for name, st in zip(names, stats, strict=True):
            count, wait = window.get(name, (0, None))
            queues.append(
                {
                    "name": name,
                    "dispatch_count_1m": count,
                    "dispatch_ratio_1m": round(count / total, 4) if total else 0.0,
                    "avg_wait_ms": 0 if wait is None else round(wait),
                    "active_jobs": st.counts.get(JobState.ACTIVE, 0),
                }
            )
        return {"queues": queues, "window": "PT1M"}

    def reset(self) -> None:
        """Forget every counter (a reset)."""
        self._queues.clear()
