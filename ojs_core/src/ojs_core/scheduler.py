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

    Every replica may run one: each timer is applied by compare-and-swap and each cron tick has a
    deterministic job id, so concurrent schedulers never double-apply.
    """

    def __init__(
        self, service: JobService, *, interval: float = 0.05, cron_interval: float = 0.5
    ) -> None:
        self.service = service
        self.interval = interval
        self.cron_interval = cron_interval
        self._task: asyncio.Task[None] | None = None

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

    async def _run(self) -> None:
        clock = self.service.clock
        last_cron = 0.0
        loop = asyncio.get_running_loop()
        while True:
            try:
                while (n := await self.service.run_timers()) >= 500:
                    log.debug("applied %d timers", n)
                if loop.time() - last_cron >= self.cron_interval:
                    last_cron = loop.time()
                    await self.service.run_crons()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("scheduler pass failed; retrying")
            await clock.sleep(self.interval)

    def start(self) -> None:
        """Start the loop on the running event loop (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="ojs-scheduler")

    async def stop(self) -> None:
        """Stop the loop and wait for it."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
