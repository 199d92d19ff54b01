"""Injectable clocks: all time-dependent logic asks a :class:`Clock` instead of the system."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Protocol

from .timeutil import utc_ms

__all__ = ["Clock", "ManualClock", "SystemClock"]


class Clock(Protocol):
    """Source of the current time, and a way to wait for some of it to pass."""

    def now(self) -> datetime:
        """The current time, UTC, truncated to milliseconds."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        ...


class SystemClock:
    """The real wall clock."""

    def now(self) -> datetime:
        """The current UTC time in whole milliseconds."""
        return utc_ms(datetime.now(UTC))

    async def sleep(self, seconds: float) -> None:
        """Sleep on the event loop."""
        await asyncio.sleep(seconds)


class ManualClock:
    """A clock that moves only when told to; for tests.

    ``sleep`` returns once :meth:`advance` has moved the clock far enough, so loops driven by
    this clock can be stepped deterministically.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._now = utc_ms(start or datetime(2026, 1, 1, tzinfo=UTC))
        self._waiters: list[tuple[datetime, asyncio.Future[None]]] = []

    def now(self) -> datetime:
        """The clock's current time."""
        return self._now

    def advance(self, seconds: float = 0.0, *, ms: int = 0) -> datetime:
        """Move time forward and wake sleepers whose deadline has passed."""
        self._now = utc_ms(self._now + timedelta(seconds=seconds, milliseconds=ms))
        still: list[tuple[datetime, asyncio.Future[None]]] = []
        for when, fut in self._waiters:
            if when <= self._now:
                if not fut.done():
                    fut.set_result(None)
            else:
                still.append((when, fut))
        self._waiters = still
        return self._now

    async def sleep(self, seconds: float) -> None:
        """Wait until the clock has been advanced by ``seconds``."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((self._now + timedelta(seconds=seconds), fut))
        await fut
