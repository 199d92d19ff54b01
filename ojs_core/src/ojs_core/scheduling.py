"""Fair scheduling at fetch (fair-scheduling extension): the strategy across the queues of one
fetch, applied around the backend's claim.

:class:`Scheduler` keeps one :class:`~ojs_core.queue_strategy.Rotation` per schedule (a pool's
name, or a fetch's queues, strategy and weights) in this process, asks it which queues should
serve the next dispatches, claims from them through the service's claim (the backend's atomic
``claim_jobs``: FS-001 is untouched), and tells the rotation what was served.

A fetch of one queue, or with today's list order and no starvation prevention, goes straight
to the claim: no state, no extra I/O.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

from .backend import Backend
from .events import make_event
from .model import Event, Job, WorkerInfo
from .queue_strategy import QueuePlan, Rotation
from .states import JobState
from .timeutil import format_duration

__all__ = ["ClaimFn", "Scheduler", "at_capacity"]

#: Claims up to ``n`` jobs from ``queues`` (left to right): the service's claim.
ClaimFn = Callable[[Sequence[str], int], Awaitable[list[Job]]]
EmitFn = Callable[[Sequence[Event]], Awaitable[None]]
#: Schedules kept per process, at most (the least recently used is forgotten: a fetch with
#: ever-changing queue lists must not grow memory).
_MAX_ROTATIONS = 1024


def at_capacity(plan: QueuePlan | None, worker: WorkerInfo | None) -> bool:
    """``least-loaded`` (§7.2): a worker whose last heartbeat reported as many active jobs
    as its declared ``concurrency`` gets none (the count is the heartbeat's, so it lags by
    up to one heartbeat)."""
    return (
        plan is not None
        and plan.strategy == "least-loaded"
        and worker is not None
        and worker.concurrency is not None
        and worker.concurrency > 0
        and len(worker.active_jobs) >= worker.concurrency
    )


class Scheduler:
    """The strategies of one :class:`~ojs_core.service.JobService` (state per process)."""

    def __init__(self, backend: Backend, now: Callable[[], datetime], emit: EmitFn) -> None:
        self._backend = backend
        self._now = now
        self._emit = emit
        self._rotations: OrderedDict[Any, Rotation] = OrderedDict()

    def _rotation(self, key: Any, plan: QueuePlan, queues: Sequence[str], now_ms: int) -> Rotation:
        rotation = self._rotations.get(key)
        if rotation is None or rotation.plan != plan or rotation.queues != tuple(queues):
            # A new schedule, or its pool changed (``scheduling.rebalanced``): state anew.
            rotation = Rotation(plan, queues, now_ms)
            self._rotations[key] = rotation
            while len(self._rotations) > _MAX_ROTATIONS:
                self._rotations.popitem(last=False)
        else:
            self._rotations.move_to_end(key)
        return rotation

    async def claim(
        self,
        queues: Sequence[str],
        count: int,
        plan: QueuePlan,
        claim: ClaimFn,
        *,
        key: Any = None,
    ) -> list[Job]:
        """Claim up to ``count`` jobs from ``queues`` in the order ``plan`` gives.

        ``key`` names the schedule whose state this fetch shares (a pool's name); by default
        the queues, strategy and weights themselves."""
        if len(queues) < 2 or plan.trivial:
            return await claim(queues, count)
        now = self._now()
        now_ms = int(now.timestamp() * 1000)
        rotation = self._rotation(
            key if key is not None else (tuple(queues), plan), plan, queues, now_ms
        )
        depth = await self._depths(queues) if plan.strategy == "least-loaded" else None
        picks = rotation.picks(count, now_ms, depth)
        if count == 1:
            jobs = await claim(rotation.order(picks[0]), 1)
        else:
            jobs = []
            short: set[str] = set()
            grants: dict[str, int] = {}
            for q in picks:
                grants[q] = grants.get(q, 0) + 1
            for q, n in grants.items():
                got = await claim([q], n)
                jobs.extend(got)
                if len(got) < n:
                    short.add(q)
            remaining = count - len(jobs)
            if remaining > 0:
                rest = [q for q in rotation.order(picks[0]) if q not in short]
                if rest:
                    jobs.extend(await claim(rest, remaining))
        served: dict[str, int] = {}
        for job in jobs:
            served[job.queue] = served.get(job.queue, 0) + 1
        starved = rotation.settle(picks, served, now_ms)
        if starved:
            await self._starved(starved, now)
        return jobs

    async def _depths(self, queues: Sequence[str]) -> dict[str, int]:
        """Available jobs per queue (``least-loaded``: one stats read per queue)."""
        stats = await asyncio.gather(*(self._backend.queue_stats(q) for q in queues))
        return {q: s.counts.get(JobState.AVAILABLE, 0) for q, s in zip(queues, stats, strict=True)}

    async def _starved(self, starved: Sequence[tuple[str, int]], now: datetime) -> None:
        depths = await self._depths([q for q, _ in starved])
        events = [
            make_event(
                "scheduling.queue_starved",
                now,
                {
                    "queue": queue,
                    "duration": format_duration(waited),
                    # The jobs still waiting after this fetch served one.
                    "available_count": depths.get(queue, 0),
                },
            )
            for queue, waited in starved
        ]
        await self._emit(events)

    def reset(self) -> None:
        """Forget every rotation (a reset)."""
        self._rotations.clear()
