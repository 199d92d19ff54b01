"""Helpers shared by the NATS and gRPC test modules (a plain module on the tests' path).

The backend-neutral helpers (``push``, ``fetch_one``, ``events_of`` and ``fail``, the kit's
``job_error``) come from :mod:`ojs_core.testing` and are re-exported for these modules.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest

from ojs_core.model import Job
from ojs_core.service import JobService
from ojs_core.testing import events_of, fetch_one, push
from ojs_core.testing import job_error as fail

__all__ = [
    "drain",
    "events_of",
    "eventually",
    "fail",
    "fetch_one",
    "push",
    "utcnow",
]

T = TypeVar("T")


async def eventually(
    predicate: Callable[[], Awaitable[T] | T],
    within: float = 10.0,
    interval: float = 0.02,
    what: str | None = None,
) -> T:
    """Call ``predicate`` every ``interval`` s until it returns something truthy; return that.

    Fails the test with a clear message (what was awaited, for how long, the last value) when
    ``within`` s pass first. The predicate may be a plain function or a coroutine function.
    """
    started = time.monotonic()
    deadline = started + within
    attempts = 0
    last: Any = None
    while True:
        attempts += 1
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        last = value
        if time.monotonic() >= deadline:
            name = what or getattr(predicate, "__name__", repr(predicate))
            pytest.fail(
                f"condition {name!r} not met within {within} s "
                f"({attempts} attempts over {time.monotonic() - started:.2f} s); "
                f"last value: {last!r}"
            )
        await asyncio.sleep(interval)


def utcnow() -> datetime:
    return datetime.now(UTC)


async def drain(
    svc: JobService, queues: list[str], expected: int, within: float = 10.0
) -> list[Job]:
    """Fetch until ``expected`` jobs came out (bounded), then check nothing else is left."""
    got: list[Job] = []

    async def enough() -> bool:
        got.extend(await svc.fetch(queues, count=min(1000, max(1, expected - len(got)))))
        return len(got) >= expected

    await eventually(enough, within=within, what=f"fetch {expected} jobs from {queues}")
    assert await svc.fetch(queues, count=100) == []
    return got
