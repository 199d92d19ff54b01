"""Moving time in contract tests, for backends on an injected clock and on real time alike.

Some backends follow the service's :class:`~ojs_core.clock.Clock` completely: their timer index
is keyed by job deadlines and :meth:`~ojs_core.service.JobService.run_timers` asks it what is due
at ``clock.now()``. Those run on a :class:`~ojs_core.clock.ManualClock` ("manual" mode): moving
time is instant and exact to the millisecond. Others keep timers in the store and fire them on
the store's own (real) clock - the NATS backend's message schedules - so the service must run on
the system clock ("real" mode) and tests wait for real time to pass.

A :class:`TimeControl` hides the difference. Tests are written once:

* ``await t.advance_to(deadline)`` - move time to ``deadline`` (manual: set the clock; real:
  sleep in short steps), running timers on the way;
* ``await t.until(predicate)`` - poll, running timers, until ``predicate`` holds (bounded; the
  test fails with a message naming what it waited for). In manual mode the first poll normally
  decides; in real mode it absorbs the store's latency;
* ``if t.before(deadline): assert ...`` - a "not yet" assertion, made only while the deadline
  has not passed (always, in manual mode; in real mode only if the test is quick enough);
* ``await t.just_before(deadline)`` - manual: move to one millisecond before ``deadline``;
  real: only run timers (real time is already before it).

Delays in the kit are short (about a second) so a real-time run stays quick.
"""

from __future__ import annotations

import asyncio
import inspect
import time as _time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar, overload

import pytest

from ..clock import ManualClock
from ..service import JobService
from ..timeutil import format_ts

__all__ = ["TimeControl", "TimeMode"]

T = TypeVar("T")
#: ``"manual"``: the service runs on a ManualClock; ``"real"``: on the system clock.
TimeMode = Literal["manual", "real"]
_MS = timedelta(milliseconds=1)


class TimeControl:
    """Moves time for one test; see the module docstring for the two modes.

    ``service`` is the test's :class:`JobService`: its clock is the test's clock (other services
    of the test share it) and it runs the timers. ``step`` is the polling interval in real
    seconds, ``within`` the default bound of :meth:`until` (2 s manual, 10 s real).
    """

    def __init__(
        self,
        service: JobService,
        mode: TimeMode,
        *,
        step: float = 0.02,
        within: float | None = None,
    ) -> None:
        if mode == "manual" and not isinstance(service.clock, ManualClock):
            raise TypeError("manual time needs a service on a ManualClock")
        if mode == "real" and isinstance(service.clock, ManualClock):
            raise TypeError("real time needs a service on a real clock, not a ManualClock")
        self.service = service
        self.mode: TimeMode = mode
        self.step = step
        #: Manual time needs no waiting: a poll that fails for 2 s is a bug, not latency.
        self.within = within if within is not None else (2.0 if mode == "manual" else 10.0)

    @property
    def manual(self) -> bool:
        """Whether time moves only when told to (and exactly)."""
        return self.mode == "manual"

    def now(self) -> datetime:
        """The service clock's current time."""
        return self.service.now()

    def at(self, seconds: float) -> str:
        """An RFC 3339 timestamp ``seconds`` from now (for ``scheduled_at``, ``expires_at``)."""
        return format_ts(self.now() + timedelta(seconds=seconds))

    def before(self, when: datetime) -> bool:
        """Whether ``when`` is still in the future: guards "not yet" assertions in real mode."""
        return self.now() < when

    async def run_timers(self) -> int:
        """Apply every due timer (repeatedly, until a pass finds none); returns how many."""
        total = 0
        while (n := await self.service.run_timers()) > 0:
            total += n
        return total

    async def advance(self, seconds: float, *, timers: bool = True) -> None:
        """Let ``seconds`` pass, then (unless ``timers`` is false) run timers."""
        await self.advance_to(self.now() + timedelta(seconds=seconds), timers=timers)

    async def advance_to(self, when: datetime, *, timers: bool = True) -> None:
        """Let time reach ``when``; with ``timers``, run them on the way and once it is there.

        With ``timers=False`` nothing but time moves (a test can then race a timer against
        another operation, or check that an operation notices a deadline by itself).
        """
        clock = self.service.clock
        if isinstance(clock, ManualClock):
            if when > clock.now():
                clock.advance(ms=(when - clock.now()) // _MS)
        else:
            while (remaining := (when - self.now()).total_seconds()) > 0:
                await asyncio.sleep(min(self.step, remaining + 0.001))
                if timers:
                    await self.run_timers()
        if timers:
            await self.run_timers()

    async def just_before(self, when: datetime) -> None:
        """Manual: move to one millisecond before ``when`` and run timers. Real: run timers."""
        if self.manual:
            await self.advance_to(when - _MS)
        else:
            await self.run_timers()

    @overload
    async def until(
        self,
        predicate: Callable[[], Awaitable[T | None]],
        *,
        within: float | None = None,
        what: str | Callable[[], str] | None = None,
        timers: bool = True,
    ) -> T: ...

    @overload
    async def until(
        self,
        predicate: Callable[[], T | None],
        *,
        within: float | None = None,
        what: str | Callable[[], str] | None = None,
        timers: bool = True,
    ) -> T: ...

    async def until(
        self,
        predicate: Callable[[], Any],
        *,
        within: float | None = None,
        what: str | Callable[[], str] | None = None,
        timers: bool = True,
    ) -> Any:
        """Poll ``predicate`` (plain or async), running timers first, until it is truthy.

        Returns the truthy value. Fails the test when ``within`` real seconds (default
        :attr:`within`) pass first, naming ``what`` (a string, or a function called then) and
        the last value seen. Time on a manual
        clock does not move while polling; the polls only absorb a store's own latency.
        """
        bound = self.within if within is None else within
        started = _time.monotonic()
        polls = 0
        while True:
            polls += 1
            if timers:
                await self.run_timers()
            value = predicate()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value
            elapsed = _time.monotonic() - started
            if elapsed >= bound:
                name = (what() if callable(what) else what) or getattr(
                    predicate, "__name__", repr(predicate)
                )
                pytest.fail(
                    f"{name!r} did not hold within {bound} s ({polls} polls, {self.mode} time); "
                    f"last value: {value!r}"
                )
            await asyncio.sleep(self.step)
