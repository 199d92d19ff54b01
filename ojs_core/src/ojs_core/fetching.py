"""Fetching: the long-poll loop of FETCH and the claim that hands jobs to a worker
(``JobService.fetch``), with pools, versions, tenants, rate limits and fair scheduling applied
to what the backend claims."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

import attrs

from . import lifecycle
from .envelope import validate_queue
from .errors import OJSError, ValidationError
from .events import job_event, started_event
from .limits import check_count
from .model import Event, Job, JobError
from .pools import Route, parse_pool_name
from .queue_strategy import QueuePlan, check_weights
from .rate_limiting import HeldBack
from .scheduling import at_capacity
from .shutdown import accepts_jobs
from .states import JobState
from .tenancy import shard_of
from .timeutil import format_ts
from .versioning import Declaration, stored_declaration

if TYPE_CHECKING:
    from .service import JobService

__all__ = ["Fetching"]

S = JobState
#: A long-polling fetch looks again this often: on a backend without wake-ups (the same
#: process's arrivals wake it at once), and, as a backstop for a lost wake-up, with them.
POLL_S = 0.05
#: A fetch's queues served left to right (the core's FETCH, and the default).
_LIST_ORDER = QueuePlan()


class Fetching:
    """The FETCH operation of one service (``JobService.fetching``)."""

    def __init__(self, service: JobService) -> None:
        self._svc = service

    async def fetch(
        self,
        queues: Sequence[str],
        count: int = 1,
        worker_id: str | None = None,
        visibility_ms: int | None = None,
        wait_ms: int = 0,
        tenant: str | None = None,
        held: HeldBack | None = None,
        versions: Declaration | None = None,
        plan: QueuePlan | None = None,
        pool: str | None = None,
    ) -> list[Job]:
        """FETCH: claim up to ``count`` jobs; with ``wait_ms`` wait that long for one to arrive.

        ``tenant`` (multi-tenancy): only that tenant's jobs. ``held`` learns what rate limit
        held candidates back (for response headers). ``versions`` (job versioning): only jobs
        whose version it accepts; without it, the declaration the worker's heartbeats stored,
        if any. ``plan`` (fair scheduling): the strategy across ``queues``; by default list
        order. ``pool``: the worker's pool (else the one its heartbeats declared); a defined
        pool's queues and strategy replace ``queues`` and ``plan`` (:mod:`ojs_core.pools`)."""
        svc = self._svc
        if pool is not None:
            parse_pool_name(pool, "pool")
        elif not queues:
            raise ValidationError("must list at least one queue", path="queues")
        check_count(len(queues), svc.limits.max_fetch_queues, "queues", "queues")
        for i, q in enumerate(queues):
            validate_queue(q, f"queues[{i}]")
        check_weights(plan, queues)
        check_count(count, svc.limits.max_fetch_count, "count", "jobs")
        count = max(1, count)
        deadline = svc.clock.now().timestamp() + wait_ms / 1000
        arrivals = svc._arrivals
        await svc.pools.current()  # this process's snapshot: no I/O after the first fetch
        while True:
            svc._job_arrived.clear()
            worker = None if worker_id is None else await svc.workers_gate.record(worker_id)
            route = svc.pools.route(queues, plan, pool, worker)
            if not queues and route.pool is None:
                raise ValidationError(
                    f"must list at least one queue (pool '{route.pool_name}' is not defined)",
                    path="queues",
                )
            waiting_on = route.queues or tuple(queues)
            mark = (
                await arrivals.arrivals_mark(waiting_on) if arrivals is not None and wait_ms else 0
            )
            if not accepts_jobs(worker) or not route.queues or at_capacity(route.plan, worker):
                # Quiet or terminating (graceful shutdown, ojs_core.shutdown): no job, but the
                # long-poll is still honoured, so a client that fetches anyway does not spin.
                jobs = []
            else:
                declared = versions or stored_declaration(worker.versions if worker else None)
                jobs = await self.claim_shielded(
                    route, count, worker_id, visibility_ms, tenant, held, declared
                )
            remaining = deadline - svc.clock.now().timestamp()
            if jobs or remaining <= 0:
                return jobs
            if arrivals is not None:
                await arrivals.wait_for_arrivals(
                    waiting_on, mark, min(remaining, svc.arrival_poll_s)
                )
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(svc._job_arrived.wait(), timeout=min(remaining, POLL_S))

    async def claim_shielded(
        self,
        route: Route,
        count: int,
        worker_id: str | None,
        visibility_ms: int | None,
        tenant: str | None = None,
        held: HeldBack | None = None,
        versions: Declaration | None = None,
    ) -> list[Job]:
        """Claim, such that cancelling the caller never strands what was claimed.

        A fetch cancelled while its claim is in flight (a worker stopping, a client gone) lets
        the claim finish and hands the jobs straight back (``requeue``: no attempt consumed);
        otherwise they would sit ``active`` until their visibility timeout.
        """

        def one(qs: Sequence[str], n: int) -> Awaitable[list[Job]]:
            return self._claim(qs, n, worker_id, visibility_ms, tenant, held, versions, route)

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
                        await svc.nack(job.id, returned, worker_id, requeue=True)
            raise

    async def _claim(
        self,
        queues: Sequence[str],
        count: int,
        worker_id: str | None,
        visibility_ms: int | None,
        tenant: str | None = None,
        held: HeldBack | None = None,
        versions: Declaration | None = None,
        route: Route | None = None,
    ) -> list[Job]:
        svc = self._svc
        now = svc.now()
        # The pool whose concurrency each claimed attempt takes a slot of (``Job.pool``).
        pool = svc.pools.limiting(route)
        default_vt = svc.default_visibility_ms
        await svc.tenancy.refresh_default()
        dispatch = svc.tenancy.dispatch(tenant)

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
        await admission.finish(stored, held)
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
