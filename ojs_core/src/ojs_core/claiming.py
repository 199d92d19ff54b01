"""The claim of FETCH (``JobService.fetch``): what hands available jobs to a worker, with
versions, tenants, rate limits, pools and fair scheduling applied to what the backend claims,
and without stranding a claim whose fetch was cancelled."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

import attrs

from . import lifecycle
from .errors import OJSError
from .events import job_event, started_event
from .model import Event, Job, JobError
from .pools import Route
from .queue_strategy import QueuePlan
from .rate_limiting import HeldBack
from .states import JobState
from .tenancy import shard_of
from .timeutil import format_ts
from .versioning import Declaration

if TYPE_CHECKING:
    from .service import JobService

__all__ = ["ClaimArgs", "Claiming"]

S = JobState
#: A fetch's queues served left to right (the core's FETCH, and the default).
_LIST_ORDER = QueuePlan()


@attrs.frozen
class ClaimArgs:
    """Who claims and how: the worker, its visibility timeout, the tenant it is scoped to,
    where held-back candidates are reported, the versions it accepts."""

    worker_id: str | None = None
    visibility_ms: int | None = None
    tenant: str | None = None
    held: HeldBack | None = None
    versions: Declaration | None = None


class Claiming:
    """The claim of one service's fetches (``JobService.claiming``)."""

    def __init__(self, service: JobService) -> None:
        self._svc = service

    async def claim_shielded(self, route: Route, count: int, args: ClaimArgs) -> list[Job]:
        """Claim, such that cancelling the caller never strands what was claimed.

        A fetch cancelled while its claim is in flight (a worker stopping, a client gone) lets
        the claim finish and hands the jobs straight back (``requeue``: no attempt consumed);
        otherwise they would sit ``active`` until their visibility timeout.
        """

        def one(qs: Sequence[str], n: int) -> Awaitable[list[Job]]:
            return self._claim(qs, n, args, route)

        svc = self._svc
        queues = route.queues
        claim = asyncio.ensure_future(
            svc.scheduler.claim(queues, count, route.plan or _LIST_ORDER, one, key=route.key)
            if len(queues) > 1
            else one(queues, count)
        )
        try:
            return await asyncio.shield(claim)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                returned = JobError(
                    code="cancelled", message="fetch cancelled before delivery", retryable=True
                )
                for job in await claim:
                    with contextlib.suppress(OJSError):
                        await svc.nack(job.id, returned, args.worker_id, requeue=True)
            raise

    async def _claim(
        self, queues: Sequence[str], count: int, args: ClaimArgs, route: Route | None = None
    ) -> list[Job]:
        svc = self._svc
        worker_id, visibility_ms, versions = args.worker_id, args.visibility_ms, args.versions
        now = svc.now()
        # The pool whose concurrency each claimed attempt takes a slot of (``Job.pool``).
        pool = svc.pools.limiting(route)
        default_vt = svc.default_visibility_ms
        await svc.tenancy.refresh_default()
        dispatch = svc.tenancy.dispatch(args.tenant)

        def startable(job: Job) -> bool:
            """Whether this fetch would start the job, limits aside (only those take a slot):
            of a version its worker accepts, of a tenant it may take, not expired."""
            return (
                (versions is None or versions.accepts(job))
                and dispatch.allows(shard_of(job))
                and not (job.expires_at is not None and job.expires_at <= now)
            )

        extra = svc.pools.admission_keys(route) if route is not None else []
        admission = svc.rate_limits.admission(now, startable, extra)
        limited = admission.needs

        def activate(job: Job) -> Job | None:
            if versions is not None and not versions.accepts(job):
                return None  # another worker's version: it stays available (VER-004/005)
            if not dispatch.allows(shard_of(job)):
                return None  # another tenant's job (a backend without shards): it stays
            if job.expires_at is not None and job.expires_at <= now:
                return lifecycle.expire(job, now)
            if limited(job) and not admission.decide(job).admitted:
                rl = job.rate_limit
                if rl is None or rl.on_limit == "wait":
                    return None
                return lifecycle.rate_limited(job, now, rl.on_limit, admission.until(job))
            vt = visibility_ms or job.visibility_timeout_ms or default_vt
            claimed = lifecycle.claim(job, now, worker_id, vt)
            return claimed if claimed.pool == pool else attrs.evolve(claimed, pool=pool)

        activate.admit = admission.admit  # type: ignore[attr-defined]
        activate.limited = limited  # type: ignore[attr-defined]
        activate.dispatch = dispatch  # type: ignore[attr-defined]
        if versions is not None:
            activate.lanes = versions.accepts_lane  # type: ignore[attr-defined]
        stored = await svc.backend.claim_jobs(queues, count, activate)
        await admission.finish(stored, args.held)
        claimed: list[Job] = []
        events: list[Event] = []
        for job in stored:
            if job.state is S.ACTIVE:
                claimed.append(job)
                started = started_event(job, now, worker_id)
                if route is not None and route.pool_name is not None:
                    # Fair scheduling: the fetching worker's pool (dispatch metrics by pool).
                    started.data["pool"] = route.pool_name
                events.append(started)
            elif job.id in admission.refused:
                events.append(_held_back_event(job, now))
            else:
                events.append(job_event("job.expired", job, now, expired_at=format_ts(now)))
        await svc.emit(events)
        return claimed


def _held_back_event(job: Job, now: datetime) -> Event:
    """The event of a job its rate limit moved on (``on_limit``): rescheduled or dropped."""
    if job.state is S.SCHEDULED and job.scheduled_at is not None:
        return job_event("job.scheduled", job, now, scheduled_at=format_ts(job.scheduled_at))
    err = job.error
    return job_event(
        "job.discarded",
        job,
        now,
        total_attempts=job.attempt,
        last_error=None if err is None else {"code": err.code, "message": err.message},
        dead_letter=job.dead_letter,
    )
