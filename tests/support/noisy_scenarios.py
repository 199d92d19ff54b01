"""Noisy-neighbour detection scenarios over real services (``ojs_core.noisy_neighbors``),
shared by the memory suite (one service, a manual clock) and the NATS suite (two replicas:
the jobs go through one, the detector runs on the other)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from ojs_core.backend import EventFilter
from ojs_core.envelope import parse_job_error
from ojs_core.noisy_neighbors import Assessment, NoisyNeighbors, Thresholds
from ojs_core.service import JobService

__all__ = ["assess_until", "push", "run_to_failure", "signals_of"]


async def push(svc: JobService, tenant: str, queue: str, n: int = 1) -> list[str]:
    """Enqueue ``n`` jobs of ``tenant``; their ids."""
    out = []
    for _ in range(n):
        body: dict[str, Any] = {
            "type": "noisy.job",
            "args": [],
            "options": {"queue": queue, "retry": {"max_attempts": 1, "on_exhaustion": "discard"}},
            "meta": {"tenant_id": tenant},
        }
        out.append((await svc.enqueue(body)).job.id)
    return out


async def run_to_failure(svc: JobService, tenant: str, queue: str, n: int, *, fail: bool) -> None:
    """Enqueue ``n`` jobs of ``tenant``, fetch them and fail (or complete) every one."""
    await push(svc, tenant, queue, n)
    jobs = await svc.fetch([queue], n, "w", tenant=tenant)
    assert len(jobs) == n
    for job in jobs:
        if fail:
            await svc.nack(job.id, parse_job_error({"message": "boom"}))
        else:
            await svc.ack(job.id, None)


def signals_of(found: dict[str, Assessment], tenant: str) -> list[str]:
    """The names of the signals that hold for ``tenant``."""
    return [s.name for s in found[tenant].signals] if tenant in found else []


async def assess_until(
    detector: NoisyNeighbors,
    predicate: Callable[[dict[str, Assessment]], bool],
    within: float = 10.0,
) -> dict[str, Assessment]:
    """Assess until ``predicate`` holds (counters may lag their writes on NATS)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        found = await detector.assess()
        if predicate(found):
            return found
        assert loop.time() < deadline, f"not reached: {found}"
        await asyncio.sleep(0.02)


async def events_of(svc: JobService, kind: str) -> list[Any]:
    """The logged events of ``kind``."""
    return await svc.events(EventFilter(types=(kind,), limit=1000))


Scenario = Callable[[JobService, JobService], Awaitable[None]]
NO_DEPTH = Thresholds(depth_ratio=1e9)
