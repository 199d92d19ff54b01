"""Background loops stop for good even when a cancellation is swallowed once, as Python 3.11's
``asyncio.wait_for`` (used by nats-py for every request) does when what it awaits completes in
the loop iteration of the ``cancel()``: the scheduler's ``stop`` used to wait for such a loop
forever, and ``ojs-server`` with it after SIGTERM."""

from __future__ import annotations

import asyncio
import logging

import pytest

from ojs_core.scheduler import Scheduler
from ojs_core.service import JobService
from ojs_core.tasks import cancel_and_wait
from ojs_memory import MemoryBackend


async def _swallowing_once(entered: asyncio.Event) -> None:
    """A loop whose first cancellation is lost, as in a ``wait_for`` racing its reply."""
    swallowed = False
    while True:
        entered.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            if swallowed:
                raise
            swallowed = True


async def test_cancel_and_wait_stops_a_task_that_swallows_a_cancellation() -> None:
    entered = asyncio.Event()
    task = asyncio.ensure_future(_swallowing_once(entered))
    await entered.wait()
    stopping = asyncio.ensure_future(cancel_and_wait(task, None))
    done, _ = await asyncio.wait({stopping}, timeout=5)
    assert stopping in done
    assert task.cancelled()


async def test_cancel_and_wait_logs_a_failure_without_raising_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    task = asyncio.ensure_future(fails())
    await asyncio.sleep(0)  # it fails on its own before the stop
    with caplog.at_level(logging.WARNING, logger="ojs.tasks"):
        await asyncio.wait_for(cancel_and_wait(task), 5)
    assert isinstance(task.exception(), RuntimeError)
    assert any("boom" in r.getMessage() for r in caplog.records)


class SwallowingService(JobService):
    """A service whose timer pass loses the first cancellation that reaches it."""

    def __init__(self) -> None:
        super().__init__(MemoryBackend())
        self.in_pass = asyncio.Event()
        self.swallowed = 0

    async def run_timers(self, limit: int = 500) -> int:
        self.in_pass.set()
        if self.swallowed:
            return await super().run_timers(limit)
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.swallowed += 1
        return 0


async def test_scheduler_stop_ends_a_loop_that_swallowed_its_cancellation() -> None:
    service = SwallowingService()
    scheduler = Scheduler(service, interval=0.01)
    scheduler.start()
    await service.in_pass.wait()
    # asyncio.wait, not wait_for: a wait_for would cancel the stop and, through it, the loop.
    stopping = asyncio.ensure_future(scheduler.stop())
    done, _ = await asyncio.wait({stopping}, timeout=5)
    assert stopping in done  # waited forever before
    assert service.swallowed == 1
