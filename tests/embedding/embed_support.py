"""Helpers shared by the embedding tests (imported as a plain module; not a test module)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from ojs_core import Client, JobService, ManualClock, Worker
from ojs_core.model import Job
from ojs_core.states import JobState
from ojs_memory import MemoryBackend


async def eventually(
    predicate: Callable[[], Any],
    *,
    within: float = 10.0,
    interval: float = 0.005,
    step: Callable[[], Awaitable[None] | None] | None = None,
    what: str | None = None,
) -> Any:
    """Call ``predicate`` until it returns something truthy and return that.

    Between calls, ``step`` runs (e.g. advancing a ManualClock) and the loop yields for
    ``interval`` seconds. Fails the test with the last value when ``within`` seconds pass.
    """
    deadline = time.monotonic() + within
    last: Any = None
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        last = value
        if time.monotonic() >= deadline:
            name = what or getattr(predicate, "__name__", repr(predicate))
            pytest.fail(f"condition {name!r} not met within {within} s; last value: {last!r}")
        if step is not None:
            stepped = step()
            if inspect.isawaitable(stepped):
                await stepped
        await asyncio.sleep(interval)


class Harness:
    """A MemoryBackend, a ManualClock, one shared JobService and a Client over it."""

    def __init__(self) -> None:
        self.clock = ManualClock()
        self.backend = MemoryBackend()
        self.service = JobService(self.backend, clock=self.clock)
        self.client = Client(self.service)
        self.workers: list[Worker] = []

    def worker(self, queues: list[str] | str = "default", **options: Any) -> Worker:
        """A worker over the shared service (stopped at teardown if still running)."""
        options.setdefault("heartbeat_interval", 5.0)
        worker = Worker(self.service, queues, **options)
        self.workers.append(worker)
        return worker

    async def tick(self, seconds: float = 1.0) -> None:
        """Advance the clock and apply due timers (what the Scheduler would do)."""
        self.clock.advance(seconds)
        await self.service.run_timers()

    async def job(self, job_id: str) -> Job:
        """The job as stored now."""
        return await self.service.get(job_id)

    async def state(self, job_id: str) -> JobState:
        """The job's state now."""
        return (await self.service.get(job_id)).state

    async def wait_state(
        self, job_id: str, state: JobState, *, tick: float | None = None, within: float = 10.0
    ) -> Job:
        """Wait until the job is in ``state`` (advancing the clock by ``tick`` between polls)."""

        async def reached() -> Job | None:
            job = await self.service.get(job_id)
            return job if job.state is state else None

        step = (lambda: self.tick(tick)) if tick else None
        job: Job = await eventually(
            reached, within=within, step=step, what=f"{job_id} {state.value}"
        )
        return job

    async def close(self) -> None:
        """Stop every worker still running."""
        for worker in self.workers:
            if worker.state not in ("new", "stopped"):
                await worker.stop(grace=0)
