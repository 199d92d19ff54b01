"""The background loops that move time-driven state: timers, cron ticks and retention."""

from __future__ import annotations

import asyncio
import logging

from .service import JobService
from .tasks import cancel_and_wait

__all__ = ["Scheduler"]

log = logging.getLogger("ojs.scheduler")


class Scheduler:
    """Runs :meth:`JobService.run_timers` every ``interval``, cron every ``cron_interval``
    and :meth:`JobService.prune` every ``service.retention.prune_interval``.

    The three run as independent loops, so a slow cron pass or prune never delays a retry or a
    scheduled job. Every replica may run one: each timer is applied by compare-and-swap, each
    cron tick has a deterministic job id and each removal is conditional, so concurrent
    schedulers never double-apply.
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

    async def _prune(self) -> None:
        clock = self.service.clock
        while True:
            await clock.sleep(self.service.retention.prune_interval.total_seconds())
            try:
                await self.service.prune()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("retention pass failed; retrying")

    def start(self) -> None:
        """Start the loops on the running event loop (idempotent)."""
        if self._tasks and not all(t.done() for t in self._tasks):
            return
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._timers(), name="ojs-timers"),
            loop.create_task(self._crons(), name="ojs-cron"),
            loop.create_task(self._prune(), name="ojs-retention"),
        ]

    async def stop(self) -> None:
        """Stop the loops and wait for them."""
        tasks, self._tasks = self._tasks, []
        await cancel_and_wait(*tasks)
