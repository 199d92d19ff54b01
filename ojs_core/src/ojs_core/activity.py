"""Recent activity per queue: the throughput figures of queue stats.

``completed_last_hour``, ``failed_last_hour``, ``avg_duration_ms``, ``avg_wait_ms`` and
``throughput_per_second`` are computed from the lifecycle events this process's
:class:`~ojs_core.service.JobService` publishes (an :mod:`ojs_core.observe` observer), kept in
ten-second buckets for an hour. The per-state counts come from the backend and are global; these
figures are **per process**: with several server processes or replicas, each reports what went
through it. Reading them back from the persisted event log instead would need a time index that
the event log (a bounded, sequence-ordered stream) does not have.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from datetime import datetime

import attrs

from .model import Event, QueueStats

__all__ = ["QueueActivity"]

#: Width of one bucket, and how long buckets are kept.
BUCKET_S = 10
WINDOW_S = 3600
#: Throughput is measured over the last minute.
THROUGHPUT_S = 60


class _Bucket:
    __slots__ = ("completed", "failed", "run_ms", "runs", "start", "wait_ms", "waits")

    def __init__(self, start: int) -> None:
        self.start = start
        self.completed = 0
        self.failed = 0
        self.run_ms = 0.0
        self.runs = 0
        self.wait_ms = 0.0
        self.waits = 0


class QueueActivity:
    """Per-queue rolling counters fed by lifecycle events (call :meth:`observe` with them).

    ``failed`` counts jobs that failed for good (``job.discarded``), as the
    ``ojs_job_failed_total`` metric does; durations are those of every finished attempt
    (``job.completed`` and ``job.failed``); waits are first-attempt queue times
    (``job.started`` on attempt 1). At most ``max_queues`` queues are tracked: events of
    further queues are not counted, so memory stays bounded whatever queue names clients use.
    """

    def __init__(self, max_queues: int = 1000) -> None:
        self.max_queues = max_queues
        self._queues: dict[str, deque[_Bucket]] = {}

    def _bucket(self, queue: str, when: datetime) -> _Bucket | None:
        buckets = self._queues.get(queue)
        if buckets is None:
            if len(self._queues) >= self.max_queues:
                return None
            buckets = self._queues[queue] = deque()
        start = int(when.timestamp()) // BUCKET_S * BUCKET_S
        # Events of concurrent operations can arrive slightly out of order: a late one joins
        # the newest bucket rather than reopening an older one.
        if buckets and buckets[-1].start >= start:
            return buckets[-1]
        buckets.append(_Bucket(start))
        while buckets and buckets[0].start <= start - WINDOW_S:
            buckets.popleft()
        return buckets[-1]

    def observe(self, events: Sequence[Event]) -> None:
        """Count the lifecycle events of one published batch."""
        for event in events:
            kind = event.type
            if kind not in ("job.completed", "job.failed", "job.discarded", "job.started"):
                continue
            data = event.data
            queue = data.get("queue")
            if not isinstance(queue, str):
                continue
            bucket = self._bucket(queue, event.time)
            if bucket is None:
                continue
            if kind == "job.started":
                wait = data.get("queue_time_ms")
                if isinstance(wait, int | float):
                    bucket.wait_ms += wait
                    bucket.waits += 1
                continue
            if kind == "job.discarded":
                bucket.failed += 1
                continue
            if kind == "job.completed":
                bucket.completed += 1
            duration = data.get("duration_ms")
            if isinstance(duration, int | float):
                bucket.run_ms += duration
                bucket.runs += 1

    def fill(self, stats: QueueStats, now: datetime) -> QueueStats:
        """``stats`` with the recent-activity fields computed as of ``now``."""
        buckets = self._queues.get(stats.name)
        if not buckets:
            return stats
        t = now.timestamp()
        hour = [b for b in buckets if b.start > t - WINDOW_S]
        recent = sum(b.completed + b.failed for b in hour if b.start > t - THROUGHPUT_S)
        runs = sum(b.runs for b in hour)
        waits = sum(b.waits for b in hour)
        return attrs.evolve(
            stats,
            completed_last_hour=sum(b.completed for b in hour),
            failed_last_hour=sum(b.failed for b in hour),
            avg_duration_ms=round(sum(b.run_ms for b in hour) / runs, 3) if runs else 0.0,
            avg_wait_ms=round(sum(b.wait_ms for b in hour) / waits, 3) if waits else 0.0,
            throughput_per_second=round(recent / THROUGHPUT_S, 3),
        )
