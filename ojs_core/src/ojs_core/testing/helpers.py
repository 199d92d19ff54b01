"""Small helpers the contract tests share; handy in a backend's own tests too."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..backend import EventFilter
from ..model import Event, Job, JobError
from ..service import JobService
from ..states import JobState
from .timecontrol import TimeControl

__all__ = [
    "NO_JITTER",
    "events_of",
    "expect_events",
    "expect_stats",
    "fetch_one",
    "fetch_when_ready",
    "job_error",
    "push",
    "run_one",
]

#: Merge into a retry policy to make backoff delays exact.
NO_JITTER: dict[str, Any] = {"jitter": False}


async def push(
    service: JobService,
    jtype: str = "test.job",
    args: list[Any] | None = None,
    **options: Any,
) -> Job:
    """Enqueue a job of ``jtype`` with binding-style ``options``; asserts it was created."""
    body: dict[str, Any] = {"type": jtype, "args": [] if args is None else args}
    if options:
        body["options"] = options
    outcome = await service.enqueue(body)
    assert outcome.created, f"expected a new job, got the existing {outcome.job.id}"
    return outcome.job


async def fetch_one(service: JobService, queue: str = "default", **kwargs: Any) -> Job:
    """Fetch from ``queue`` and assert exactly one job came back."""
    jobs = await service.fetch([queue], **kwargs)
    assert len(jobs) == 1, f"expected one job from {queue!r}, got {jobs!r}"
    return jobs[0]


async def fetch_when_ready(
    t: TimeControl, service: JobService, queue: str = "default", **kwargs: Any
) -> Job:
    """Fetch from ``queue`` until one job comes back (running timers; bounded by ``t``)."""

    async def attempt() -> Job | None:
        jobs = await service.fetch([queue], **kwargs)
        assert len(jobs) <= 1, f"expected at most one job from {queue!r}, got {jobs!r}"
        return jobs[0] if jobs else None

    return await t.until(attempt, what=f"a job to fetch from {queue!r}")


async def run_one(service: JobService, queue: str = "default", result: Any = None) -> Job:
    """Fetch one job and acknowledge it with ``result``; returns the completed job."""
    job = await fetch_one(service, queue)
    return await service.ack(job.id, result)


def job_error(message: str = "boom", **fields: Any) -> JobError:
    """A handler error as a worker would report it to ``nack``."""
    code = fields.pop("code", "handler_error")
    return JobError(code=code, message=message, **fields)


async def events_of(
    service: JobService, *types: str, job_id: str | None = None, after: int = 0
) -> list[Event]:
    """Every stored event of ``types`` (patterns like ``job.*`` allowed), oldest first."""
    return await service.events(
        EventFilter(types=tuple(types), job_id=job_id, after=after, limit=10_000)
    )


async def expect_events(
    t: TimeControl,
    service: JobService,
    expected: Sequence[str],
    *types: str,
    job_id: str | None = None,
) -> list[Event]:
    """Wait until as many events of ``types`` as ``expected`` are readable; assert their types.

    Event publication may lag a transition (a backend may buffer), so this waits (bounded)
    for the count, then checks the exact sequence - extra events fail the assertion.
    """

    async def enough() -> list[Event] | None:
        got = await events_of(service, *types, job_id=job_id)
        return got if len(got) >= len(expected) else None

    got = await t.until(enough, what=f"{len(expected)} event(s) of {types or 'any type'}")
    assert [e.type for e in got] == list(expected)
    return got


async def expect_stats(
    t: TimeControl, service: JobService, queue: str, **counts: int
) -> dict[JobState, int]:
    """Wait until ``queue``'s stats show ``counts`` (state name -> n; others 0); returns them.

    Stats may be maintained asynchronously by a backend, hence the bounded wait.
    """
    expected = {s: counts.get(s.value, 0) for s in JobState}
    unknown = set(counts) - {s.value for s in JobState}
    if unknown:
        raise ValueError(f"unknown states {sorted(unknown)}")

    last: dict[JobState, int] = {}

    async def matches() -> bool:
        last.update((await service.queue_stats(queue)).counts)
        return last == expected

    def what() -> str:
        seen = {s.value: n for s, n in last.items() if n}
        return f"stats of {queue!r} == {counts} (last seen {seen})"

    await t.until(matches, what=what)
    return expected
