"""The background loops that move time-driven state: timers and cron ticks."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from .service import JobService

__all__ = ["Scheduler"]

log = logging.getLogger("ojs.scheduler")


class Scheduler:
    """Runs :meth:`JobService.run_timers` every ``interval`` and cron every ``cron_interval``.

    Timers and cron run as two independent loops, so a slow cron pass never delays a retry or a
    scheduled job. Every replica may run one: each timer is applied by compare-and-swap and each
    cron tick has a deterministic job id, so concurrent schedulers never double-apply.
    """

    def __init__(
        self, service: JobService, *, interval: float = 0.02, cron_interval: float = 0.5
    ) -> None:
        self.service = service
        self.interval = interval
        self.cron_interval = cron_interval
        self._tasks: list[asyncio.Task[None]] = []

    async def tick(self) -> int:
        """One pass of timers and cron; returns how many things changed."""
        changed = 0
        while True:
            n = await self.service.run_timers()
            changed += n
            if n < 500:
                break
        changed += await self.service.run_crons()
        return changed

    async def _timers(self) -> None:
        clock = self.service.clock
        while True:
            try:
                while (n := await self.service.run_timers()) >= 500:
                    log.debug("applied %d timers", n)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("timer pass failed; retrying")
            await clock.sleep(self.interval)

    async def _crons(self) -> None:
        clock = self.service.clock
        while True:
            try:
                await self.service.run_crons()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("cron pass failed; retrying")
            await clock.sleep(self.cron_interval)

    def start(self) -> None:
        """Start both loops on the running event loop (idempotent)."""
        if self._tasks and not all(t.done() for t in self._tasks):
            return
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._timers(), name="ojs-timers"),
            loop.create_task(self._crons(), name="ojs-cron"),
        ]

    async def stop(self) -> None:
        """Stop both loops and wait for them."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
