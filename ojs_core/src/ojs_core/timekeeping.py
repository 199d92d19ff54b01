"""Time-driven work of a service: the timer pass (promotions, visibility and execution
timeouts, expiry, retention ends) and the retention the timers do not cover (the dead letter's
size cap, workers that stopped heartbeating)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from . import lifecycle
from .backend import JobFilter
from .errors import NotFoundError
from .model import Job
from .ratelog import RateLimitedLog
from .states import JobState

if TYPE_CHECKING:
    from .service import JobService

__all__ = ["Timekeeping", "still_dead"]

# The service's logger: operators filter on the name.
log = logging.getLogger("ojs.service")
_TIMER_CONCURRENCY = 64
#: Dead-letter jobs read per page when the size cap is applied.
_PRUNE_PAGE = 500


def still_dead(job: Job) -> bool:
    """Whether ``job`` is still in the dead letter (a removal's condition)."""
    return job.dead_letter and job.state is JobState.DISCARDED


class Timekeeping:
    """The timer pass and the retention pass of one service (``JobService.timekeeping``)."""

    def __init__(self, service: JobService) -> None:
        self._svc = service
        self._timer_log = RateLimitedLog(log, service.clock)

    # -- timers ---------------------------------------------------------------------------

    async def run_timers(self, limit: int = 500) -> int:
        """Apply every due timer (promotion, visibility, execution timeout, expiry, the end of
        a retention); returns how many changed something."""
        svc = self._svc
        now = svc.now()
        ids = await svc.backend.due_jobs(now, limit)

        async def fire(job_id: str) -> bool:
            try:
                before, after = await svc.update_job(
                    job_id, lambda j: lifecycle.on_timer(j, now, svc.rng), now
                )
            except NotFoundError:
                return False
            if after is before:
                if after.workflow_pending and after.workflow_id and after.state.terminal:
                    # The process that finished this job died before advancing its workflow.
                    await svc.advance_workflow(after.workflow_id)
                    await svc._settled(after)
                    return True
                if after.state.terminal and after.retain_until and after.retain_until <= now:
                    return await self.remove(after)
                return False
            await svc._after(before, after, now)
            return True

        # Timers of different jobs are independent compare-and-swaps: apply them concurrently
        # (in bounded groups) so a burst of due jobs is not paid one round trip at a time.
        # One failing timer (a poison job, a store error) never blocks the others.
        done = 0
        for start in range(0, len(ids), _TIMER_CONCURRENCY):
            group = ids[start : start + _TIMER_CONCURRENCY]
            outcomes = await asyncio.gather(*(fire(j) for j in group), return_exceptions=True)
            for job_id, outcome in zip(group, outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    if not isinstance(outcome, Exception):
                        raise outcome  # cancellation, KeyboardInterrupt: not a timer failure
                    self._timer_log.warning(
                        job_id, "timer of job %s failed: %r", job_id, outcome, exc=outcome
                    )
                elif outcome:
                    done += 1
        return done

    # -- retention ------------------------------------------------------------------------

    async def remove(self, job: Job) -> bool:
        """Remove a terminal job whose retention ended (and its workflow with its last job).

        The removal is conditional on the stored version still being that terminal job: a
        dead-letter retry that came first is never undone."""
        backend = self._svc.backend
        state, until = job.state, job.retain_until

        def still_due(current: Job) -> bool:
            return current.state is state and current.retain_until == until

        if not await backend.delete_job(job.id, only_if=still_due):
            return False
        if job.workflow_id:
            await self._remove_finished_workflow(job.workflow_id)
        return True

    async def _remove_finished_workflow(self, workflow_id: str) -> None:
        backend = self._svc.backend
        workflow = await backend.get_workflow(workflow_id)
        if workflow is None:
            return
        remaining = await backend.get_jobs([node.job_id for node in workflow.nodes])
        if all(job is None for job in remaining):
            await backend.delete_workflow(workflow_id)

    async def prune(self) -> dict[str, int]:
        """Apply the retention that timers do not: the dead letter's size cap and the records
        of workers that stopped heartbeating. Returns how many of each were removed."""
        svc = self._svc
        backend = svc.backend
        now = svc.now()
        removed = {"dead_letter": 0, "workers": 0}
        cap = svc.retention.dead_letter_max_count
        if cap is not None:
            # The listing is newest first: what lies beyond the cap is the oldest.
            while True:
                page = await backend.list_jobs(
                    JobFilter(dead_letter=True, limit=_PRUNE_PAGE, offset=cap)
                )
                if not page.items:
                    break
                gone = 0
                for job in page.items:
                    if await backend.delete_job(job.id, only_if=still_dead):
                        gone += 1
                removed["dead_letter"] += gone
                if gone == 0 or len(page.items) < _PRUNE_PAGE:
                    break
        keep = svc.retention.workers
        if keep is not None:
            cutoff = now - keep
            for worker in await backend.list_workers():
                if worker.last_seen < cutoff and await backend.delete_worker(worker.worker_id):
                    removed["workers"] += 1
        if any(removed.values()):
            log.info("retention removed %s", removed)
        return removed
