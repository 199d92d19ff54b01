"""Storing new jobs for a service: tenancy and rate admission, schema checks, tracing,
bounded-queue admission, and unique-key conflicts resolved by each job's policy
(``JobService.enqueue*`` parse and prepare the jobs, then call :meth:`Inserting.insert`)."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import TYPE_CHECKING, Any

import attrs

from . import lifecycle
from .backend import ConflictFn
from .backpressure import Pressure
from .errors import ConflictError, DuplicateJobError, InvalidStateTransitionError, NotFoundError
from .model import Job
from .states import JobState
from .unique import is_conflict

if TYPE_CHECKING:
    from .service import JobService

__all__ = ["EnqueueOutcome", "Inserting"]

S = JobState


@attrs.frozen
class EnqueueOutcome:
    """The stored job, and whether it is new (``False`` when a unique ``ignore`` deduplicated)."""

    job: Job
    created: bool = True
    #: Schema registry warnings (``warn`` mode): the job was stored although its ``args``
    #: do not match its schema.
    warnings: tuple[str, ...] = ()
    #: The job's queue's fill once it was admitted, when the queue has a bound.
    pressure: Pressure | None = None


class Inserting:
    """The storing half of ENQUEUE of one service (``JobService.inserting``)."""

    def __init__(self, service: JobService) -> None:
        self._svc = service

    def _conflict_fn(self, now: datetime) -> ConflictFn:
        def check(new: Job, existing: Job) -> bool:
            return new.unique is not None and is_conflict(existing, new.unique, now)

        return check

    async def insert(self, jobs: list[Job], block_s: float = 0.0) -> list[EnqueueOutcome]:
        """Store prepared jobs (``JobService._prepare``) atomically, or none; per job its
        outcome, in order."""
        svc = self._svc
        if svc.tenancy.untouched(jobs):
            return await self._insert_admitted(jobs, block_s)
        async with svc.tenancy.admitting(jobs) as jobs:
            return await self._insert_admitted(jobs, block_s)

    async def _insert_admitted(self, jobs: list[Job], block_s: float) -> list[EnqueueOutcome]:
        svc = self._svc
        warnings = await svc.schemas.check(jobs)
        store = functools.partial(self._store_new, block_s=block_s)
        if svc.tracer is not None:
            outcomes: list[EnqueueOutcome] = await svc.tracer.enqueue(jobs, store)
        else:
            outcomes = await store(jobs)
        if any(warnings):
            outcomes = [
                attrs.evolve(o, warnings=tuple(w)) if w else o
                for o, w in zip(outcomes, warnings, strict=True)
            ]
        return outcomes

    async def _store_new(self, jobs: list[Job], block_s: float = 0.0) -> list[EnqueueOutcome]:
        svc = self._svc
        results: dict[int, EnqueueOutcome] = {}
        pending = dict(enumerate(jobs))
        for _ in range(8):
            now = svc.now()
            order = sorted(pending)
            batch = [pending[i] for i in order]
            # Admitted around the insert only: the reservation ends once the jobs are stored
            # (and so counted), and a retry after a unique conflict is admitted again.
            async with svc.gate.admit(batch, block_s) as pressures:
                conflicts = await svc.backend.insert_jobs(batch, self._conflict_fn(now))
            if not conflicts:
                by_queue = {p.queue: p for p in pressures}
                for i in order:
                    results[i] = EnqueueOutcome(
                        pending[i], True, pressure=by_queue.get(pending[i].queue)
                    )
                    await svc._after(None, pending[i], now)
                return [results[i] for i in range(len(jobs))]
            for conflict in conflicts:
                index = order[conflict.index]
                job, existing = pending[index], conflict.existing
                policy = job.unique.on_conflict if job.unique else "reject"
                if policy == "ignore":
                    results[index] = EnqueueOutcome(existing, False)
                    del pending[index]
                elif policy in ("replace", "replace_except_schedule"):
                    await self._replace(existing, now)
                    if policy == "replace_except_schedule" and existing.scheduled_at:
                        pending[index] = _reschedule(job, existing.scheduled_at, now)
                else:
                    details: dict[str, Any] = {
                        "existing_job_id": existing.id,
                        "existing_job_state": existing.state.value,
                        "unique_key": job.unique_key,
                    }
                    if len(jobs) > 1:
                        details["index"] = index
                    raise DuplicateJobError(
                        f"A job with the same unique key exists: {existing.id} "
                        f"({existing.state.value})",
                        details=details,
                    )
            if not pending:
                return [results[i] for i in range(len(jobs))]
        raise ConflictError("unique-key conflict could not be resolved; try again")

    async def _replace(self, existing: Job, now: datetime) -> None:
        svc = self._svc
        try:
            before, after = await svc.update_job(
                existing.id, lambda j: lifecycle.cancel(j, now), now
            )
        except (InvalidStateTransitionError, NotFoundError):
            return
        await svc._after(before, after, now)


def _reschedule(job: Job, scheduled_at: datetime, now: datetime) -> Job:
    if scheduled_at > now:
        return attrs.evolve(job, scheduled_at=scheduled_at, state=S.SCHEDULED, enqueued_at=None)
    return attrs.evolve(job, scheduled_at=scheduled_at)
