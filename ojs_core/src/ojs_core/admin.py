"""Operator operations (the OJS admin API extension) over a :class:`~ojs_core.service.JobService`.

What a dashboard or an operator's script needs beyond the data plane: totals across queues,
listings by state, queue and type, bulk retry, cancel and delete by filter, dead-letter
statistics and purges, and a worker summary. Every change still goes through the service, so
the OJS rules (transitions, events, workflows) apply exactly as for a single call.

Bulk operations and dead-letter statistics work on at most :attr:`Admin.bulk_limit` jobs per
call (10,000 by default; ``docs/admin.md``): an answer says how many matched in all, so a
caller repeats the call until nothing is left.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import attrs

from .backend import JobFilter, Page, WorkflowListing
from .envelope import validate_queue
from .errors import ConflictError, NotFoundError, OJSError, UnsupportedError, ValidationError
from .model import Job, QueueStats, WorkerInfo
from .service import JobService
from .shutdown import effective_state
from .states import TERMINAL, JobState
from .timeutil import parse_ts
from .workflow import workflow_to_wire

__all__ = [
    "Admin",
    "BulkOutcome",
    "DeadLetterStats",
    "JobQuery",
    "Overview",
    "parse_job_query",
    "parse_older_than",
    "parse_states",
]

#: Largest page of an admin listing.
MAX_PER_PAGE = 100
#: How many jobs one bulk call or one statistics pass reads and acts on, by default.
BULK_LIMIT = 10_000
#: How many changes of one bulk call run at the same time.
_BULK_CONCURRENCY = 32
#: Page size when a bulk call collects the ids it acts on.
_COLLECT_PAGE = 500
#: How many queue statistics are read at the same time.
_STATS_CONCURRENCY = 16

BULK_ACTIONS = ("retry", "cancel", "delete")


@attrs.frozen(kw_only=True)
class JobQuery:
    """A validated job filter: ``None`` means any. ``since``/``until`` bound ``created_at``
    (bulk filters only: listings page through the backend's order, which they would break)."""

    state: JobState | None = None
    queue: str | None = None
    type: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    #: Multi-tenancy: only jobs this accepts (a tenant-scoped caller's own,
    #: ``ojs_core.tenant_scope``); checked again in every bulk change's compare-and-swap.
    owner: Callable[[Job], bool] | None = None

    def matches(self, job: Job) -> bool:
        """Whether ``job`` (as it is now) is one this filter selects."""
        return (
            (self.owner is None or self.owner(job))
            and (self.state is None or job.state is self.state)
            and (self.queue is None or job.queue == self.queue)
            and (self.type is None or job.type == self.type)
            and (
                self.since is None or (job.created_at is not None and job.created_at >= self.since)
            )
            and (self.until is None or (job.created_at is not None and job.created_at < self.until))
        )

    def to_filter(self, *, dead_letter: bool | None = None, limit: int, offset: int) -> JobFilter:
        """The backend's :class:`JobFilter` for one page."""
        return JobFilter(
            state=self.state.value if self.state else None,
            queue=self.queue,
            type=self.type,
            dead_letter=dead_letter,
            limit=limit,
            offset=offset,
        )


#: The keys a bulk request's ``filter`` may have.
FILTER_KEYS = frozenset({"state", "queue", "type", "since", "until"})


def parse_job_query(source: Mapping[str, Any], path: str = "", *, bulk: bool = False) -> JobQuery:
    """A :class:`JobQuery` from query parameters or a bulk request's ``filter`` object; 400
    naming the field when a value is malformed (``path`` prefixes the field name).

    A bulk filter (``bulk=True``) may also bound ``created_at`` with ``since``/``until``, and
    any other key is refused: a misspelt key must not widen a bulk change to every job.
    """
    if bulk:
        for key in source:
            if key not in FILTER_KEYS:
                raise ValidationError(
                    f"unknown filter key; use {', '.join(sorted(FILTER_KEYS))}", path=path + key
                )
    elif source.get("since") or source.get("until"):
        raise ValidationError(
            "time bounds apply to bulk filters only; page through the listing instead",
            path="since" if source.get("since") else "until",
        )
    state = source.get("state") or None
    if state is not None:
        try:
            state = JobState(state)
        except ValueError:
            raise ValidationError(
                f"must be one of {', '.join(s.value for s in JobState)}", path=path + "state"
            ) from None
    queue = source.get("queue") or None
    if queue is not None:
        queue = validate_queue(queue, path + "queue")
    kind = source.get("type") or None
    if kind is not None and (not isinstance(kind, str) or len(kind) > 255 or "*" in kind):
        raise ValidationError(
            "must be an exact job type (at most 255 characters; no wildcards)", path=path + "type"
        )
    return JobQuery(
        state=state,
        queue=queue,
        type=kind,
        since=_bound(source.get("since"), path + "since"),
        until=_bound(source.get("until"), path + "until"),
    )


def _bound(raw: Any, path: str) -> datetime | None:
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise ValidationError("must be an RFC 3339 timestamp", path=path)
    try:
        return parse_ts(raw)
    except ValueError:
        raise ValidationError("must be an RFC 3339 timestamp", path=path) from None


@attrs.frozen(kw_only=True)
class Overview:
    """Totals across every queue (``GET /ojs/v1/admin/stats``)."""

    queues: int
    workers: int
    counts: dict[JobState, int]
    processed_per_minute: float
    failed_per_minute: float
    uptime_seconds: float


@attrs.frozen(kw_only=True)
class BulkOutcome:
    """What a bulk call did: ``matched`` jobs in all, of which it acted on ``attempted``."""

    action: str
    matched: int
    attempted: int
    succeeded: int
    errors: list[tuple[str, str]]

    @property
    def failed(self) -> int:
        """Jobs the action was refused for (their ids and reasons are in ``errors``)."""
        return len(self.errors)


@attrs.frozen(kw_only=True)
class DeadLetterStats:
    """The dead letter at a glance, over at most ``Admin.bulk_limit`` newest jobs."""

    total: int
    by_queue: dict[str, int]
    by_error_type: dict[str, int]
    oldest_at: datetime | None
    newest_at: datetime | None
    sampled: int


class Admin:
    """The admin operations of one :class:`JobService`."""

    def __init__(
        self,
        service: JobService,
        *,
        bulk_limit: int = BULK_LIMIT,
        worker_stale_after: float = 60.0,
    ) -> None:
        self.service = service
        self.bulk_limit = bulk_limit
        #: A worker not heard from for this many seconds is listed as ``stale``.
        self.worker_stale_after = worker_stale_after
        self._started = time.monotonic()

    # -- queues and totals --------------------------------------------------------------------

    async def queue_summaries(self) -> list[QueueStats]:
        """Every known queue's counts and recent throughput, by name."""
        names = sorted(q.name for q in await self.service.queues())
        gate = asyncio.Semaphore(_STATS_CONCURRENCY)

        async def one(name: str) -> QueueStats:
            async with gate:
                return await self.service.queue_stats(name)

        return list(await asyncio.gather(*(one(n) for n in names)))

    async def overview(self) -> Overview:
        """Totals across queues, the number of workers, and throughput per minute."""
        summaries = await self.queue_summaries()
        workers = await self.service.backend.list_workers()
        counts: Counter[JobState] = Counter()
        for stats in summaries:
            counts.update(stats.counts)
        return Overview(
            queues=len(summaries),
            workers=len(workers),
            counts={s: counts.get(s, 0) for s in JobState},
            processed_per_minute=round(sum(s.throughput_per_second for s in summaries) * 60, 2),
            failed_per_minute=round(sum(s.failed_last_hour for s in summaries) / 60, 2),
            uptime_seconds=round(time.monotonic() - self._started, 1),
        )

    # -- jobs ---------------------------------------------------------------------------------

    async def jobs(
        self, query: JobQuery, page: int = 1, per_page: int = 20, *, dead_letter: bool = False
    ) -> Page:
        """One page (1-based) of matching jobs, newest first."""
        if page < 1:
            raise ValidationError("must be at least 1", path="page")
        if not 1 <= per_page <= MAX_PER_PAGE:
            raise ValidationError(f"must be between 1 and {MAX_PER_PAGE}", path="per_page")
        flt = query.to_filter(
            dead_letter=True if dead_letter else None,
            limit=per_page,
            offset=(page - 1) * per_page,
        )
        return await self.service.backend.list_jobs(flt)

    async def bulk(
        self, action: str, query: JobQuery, *, confirm: bool, dead_letter: bool = False
    ) -> BulkOutcome:
        """Retry, cancel or delete every matching job (up to :attr:`bulk_limit`); ``confirm``
        must be true. Each job is changed on its own: one refusal does not stop the rest."""
        if action not in BULK_ACTIONS:
            raise NotFoundError("bulk action", action)
        _require_confirm(confirm)
        if action == "delete" and query.state is not None and query.state not in TERMINAL:
            raise ValidationError(
                "bulk delete applies to completed, cancelled or discarded jobs only",
                path="filter.state",
            )
        jobs, matched = await self._collect(query, dead_letter=dead_letter)
        # Each change re-checks the filter in its own compare-and-swap: a job that left the
        # filter since it was listed (a worker claimed it, say) is refused, not changed.
        still = query.matches
        act: Callable[[Job], Awaitable[object]] = {
            "retry": lambda j: self.service.revive(j.id, only_if=still),
            "cancel": lambda j: self.service.cancel(j.id, only_if=still),
            "delete": lambda j: self._delete(j, still),
        }[action]
        errors = await _each(jobs, act)
        return BulkOutcome(
            action=action,
            matched=matched,
            attempted=len(jobs),
            succeeded=len(jobs) - len(errors),
            errors=errors,
        )

    async def _delete(self, job: Job, still: Callable[[Job], bool] | None = None) -> None:
        if job.state not in TERMINAL:
            raise ValidationError(
                f"Job '{job.id}' is {job.state.value}; only terminal jobs can be deleted"
            )

        def deletable(current: Job) -> bool:
            return _terminal(current) and (still is None or still(current))

        if not await self.service.backend.delete_job(job.id, only_if=deletable):
            raise NotFoundError("job", job.id)

    async def _collect(self, query: JobQuery, *, dead_letter: bool) -> tuple[list[Job], int]:
        """Up to :attr:`bulk_limit` matching jobs, newest first, and how many match in all
        (exact when every match was read; the backend's count for the filter otherwise)."""
        jobs: list[Job] = []
        total = offset = 0
        while len(jobs) < self.bulk_limit:
            flt = query.to_filter(
                dead_letter=True if dead_letter else None,
                limit=min(_COLLECT_PAGE, self.bulk_limit - len(jobs)),
                offset=offset,
            )
            page = await self.service.backend.list_jobs(flt)
            if query.owner is None:  # the backend's count includes other tenants' jobs
                total = max(total, page.total)
            # The backend's filter is trusted for paging only: each job is checked again, so a
            # backend that ignores a criterion (or the time bounds it has no index for) can
            # never widen a bulk change.
            jobs.extend(
                j for j in page.items if query.matches(j) and (not dead_letter or j.dead_letter)
            )
            if len(page.items) < flt.limit:
                return jobs, len(jobs)  # every match was read
            offset += len(page.items)
        return jobs, max(total, len(jobs))

    # -- dead letter ---------------------------------------------------------------------------

    async def dead_letter_stats(self, query: JobQuery | None = None) -> DeadLetterStats:
        """Counts by queue and by the last error's type, and the oldest and newest discard
        (of the jobs ``query`` selects: a tenant-scoped caller's own)."""
        jobs, total = await self._collect(query or JobQuery(), dead_letter=True)
        by_queue = Counter(j.queue for j in jobs)
        by_type = Counter(_error_type(j) for j in jobs)
        stamps = [j.discarded_at for j in jobs if j.discarded_at is not None]
        return DeadLetterStats(
            total=total,
            by_queue=dict(by_queue.most_common()),
            by_error_type=dict(by_type.most_common()),
            oldest_at=min(stamps, default=None),
            newest_at=max(stamps, default=None),
            sampled=len(jobs),
        )

    async def purge_dead_letter(
        self, query: JobQuery, *, older_than: datetime | None, confirm: bool
    ) -> int:
        """Delete dead-letter jobs (discarded before ``older_than`` when given)."""
        _require_confirm(confirm)
        jobs, _ = await self._collect(query, dead_letter=True)
        doomed = [j for j in jobs if _older(j.discarded_at, older_than)]
        errors = await _each(doomed, lambda j: self.service.delete_dead_letter(j.id))
        return len(doomed) - len(errors)

    async def purge_queue(
        self,
        queue: str,
        states: Sequence[JobState],
        *,
        older_than: datetime | None,
        confirm: bool,
        owner: Callable[[Job], bool] | None = None,
    ) -> int:
        """Delete a queue's terminal jobs of ``states`` (finished before ``older_than``; those
        ``owner`` accepts, when given)."""
        _require_confirm(confirm)
        if not states:
            raise ValidationError("must name at least one state", path="states")
        for state in states:
            if state not in TERMINAL:
                raise ValidationError(
                    "only completed, cancelled and discarded jobs can be purged", path="states"
                )
        purged = 0
        for state in states:
            query = JobQuery(state=state, queue=queue, owner=owner)
            jobs, _ = await self._collect(query, dead_letter=False)
            doomed = [j for j in jobs if _older(_finished_at(j), older_than)]
            purged += len(doomed) - len(await _each(doomed, self._delete))
        return purged

    # -- workflows ------------------------------------------------------------------------------

    async def workflows(
        self, page: int = 1, per_page: int = 20
    ) -> tuple[list[dict[str, Any]], int]:
        """A page of workflows, newest first, each with its derived state and steps (the
        ``GET /ojs/v1/workflows/{id}`` shape), and how many there are in all."""
        backend = self.service.backend
        if not isinstance(backend, WorkflowListing):
            raise UnsupportedError("this backend cannot list workflows; look one up by its id")
        if not 1 <= per_page <= MAX_PER_PAGE:
            raise ValidationError(f"must be between 1 and {MAX_PER_PAGE}", path="per_page")
        found, total = await backend.list_workflows(per_page, (page - 1) * per_page)
        views = []
        for workflow in found:
            jobs = await backend.get_jobs([n.job_id for n in workflow.nodes])
            views.append(workflow_to_wire(workflow, jobs))
        return views, total

    async def owned_workflows(
        self,
        owner: Callable[[Job], bool],
        page: int = 1,
        per_page: int = 20,
        scan_max: int = 10_000,
    ) -> tuple[list[dict[str, Any]], bool, bool]:
        """A page of the workflows whose jobs ``owner`` selects (a tenant-scoped listing; a
        workflow's jobs have one tenant, so its first stored job tells), newest first, as in
        :meth:`workflows`: the listing read page by page and filtered, at most ``scan_max``
        workflows read. Returns the page, whether more follow, and whether the scan stopped
        at ``scan_max`` (no exact total: it would read every workflow)."""
        backend = self.service.backend
        if not isinstance(backend, WorkflowListing):
            raise UnsupportedError("this backend cannot list workflows; look one up by its id")
        if not 1 <= per_page <= MAX_PER_PAGE:
            raise ValidationError(f"must be between 1 and {MAX_PER_PAGE}", path="per_page")
        skip, want = (page - 1) * per_page, per_page + 1  # one more tells whether more follow
        views: list[dict[str, Any]] = []
        offset, batch = 0, 200
        truncated = True
        while offset < scan_max:
            found, _ = await backend.list_workflows(batch, offset)
            offset += len(found)
            for workflow in found:
                jobs = await backend.get_jobs([n.job_id for n in workflow.nodes])
                first = next((j for j in jobs if j is not None), None)
                if first is None or not owner(first):
                    continue
                if skip:
                    skip -= 1
                    continue
                views.append(workflow_to_wire(workflow, jobs))
                if len(views) >= want:
                    break
            if len(views) >= want or len(found) < batch:
                truncated = False
                break
        return views[:per_page], len(views) > per_page, truncated

    # -- workers --------------------------------------------------------------------------------

    def worker_state(self, worker: WorkerInfo) -> str:
        """``running``, ``quiet``, ``terminate`` (the stronger of what the worker reported in
        its heartbeat and the directive it was given), or ``stale`` when silent."""
        horizon = self.service.now() - timedelta(seconds=self.worker_stale_after)
        return "stale" if worker.last_seen < horizon else effective_state(worker)

    async def workers(self) -> list[WorkerInfo]:
        """Every known worker, most recently heard from first."""
        workers = await self.service.backend.list_workers()
        return sorted(workers, key=lambda w: w.last_seen, reverse=True)

    async def worker(self, worker_id: str) -> WorkerInfo:
        """One worker, or 404."""
        worker = await self.service.backend.get_worker(worker_id)
        if worker is None:
            raise NotFoundError("worker", worker_id)
        return worker

    async def deregister_worker(self, worker_id: str) -> None:
        """Forget a stale worker (409 while it still heartbeats); its jobs come back when their
        visibility timeouts expire, as for any dead worker."""
        worker = await self.worker(worker_id)
        if self.worker_state(worker) != "stale":
            raise ConflictError(
                f"Worker '{worker_id}' is still heartbeating; quiet or terminate it first",
                details={"worker_id": worker_id},
            )
        await self.service.backend.delete_worker(worker_id)


def parse_states(raw: Any) -> list[JobState]:
    """A purge's ``states`` list."""
    if not isinstance(raw, list) or not all(isinstance(s, str) for s in raw):
        raise ValidationError("must be an array of state names", path="states")
    try:
        return [JobState(s) for s in raw]
    except ValueError:
        raise ValidationError(
            f"must name states among {', '.join(s.value for s in JobState)}", path="states"
        ) from None


def parse_older_than(raw: Any) -> datetime | None:
    """A purge's optional ``older_than`` timestamp."""
    return _bound(raw, "older_than")


def _require_confirm(confirm: bool) -> None:
    if confirm is not True:
        raise ValidationError(
            "must be true: this operation changes or removes many jobs", path="confirm"
        )


async def _each(
    jobs: Sequence[Job], act: Callable[[Job], Awaitable[object]]
) -> list[tuple[str, str]]:
    """Run ``act`` on every job, a bounded number at a time; the refusals as (id, reason)."""
    gate = asyncio.Semaphore(_BULK_CONCURRENCY)
    errors: list[tuple[str, str]] = []

    async def one(job: Job) -> None:
        async with gate:
            try:
                await act(job)
            except OJSError as exc:
                errors.append((job.id, exc.message))

    await asyncio.gather(*(one(j) for j in jobs))
    return errors


def _terminal(job: Job) -> bool:
    return job.state in TERMINAL


def _older(stamp: datetime | None, cutoff: datetime | None) -> bool:
    return cutoff is None or (stamp is not None and stamp < cutoff)


def _finished_at(job: Job) -> datetime | None:
    return job.completed_at or job.cancelled_at or job.discarded_at


def _error_type(job: Job) -> str:
    last = job.errors[-1] if job.errors else job.error
    if last is None:
        return "unknown"
    return last.type or last.code or "unknown"
