"""Tenant scoping of the operations beyond a single job: queue statistics, bulk changes and
the dead letter (multi-tenancy, ``ojs_core.tenancy``).

The rule is the one :meth:`~ojs_core.tenancy.Tenancy.owns` states for reads: a caller scoped to
a tenant (the ``X-OJS-Tenant`` header, the ``x-ojs-tenant`` gRPC metadata) sees and changes only
that tenant's jobs, and another tenant's job is answered as if it did not exist (404, never
409, so a job id cannot be probed); an unscoped caller (``tenant`` is ``None``) sees all.

* Counts (queue statistics, the admin overview) come from the backend's per-tenant counters
  (:class:`~ojs_core.backend.TenantCounts`); the recent-activity figures (throughput, mean run
  and wait times) are kept per queue, not per tenant, so a scoped caller gets 0 for them
  rather than another tenant's activity.
* Filters (bulk changes, purges, dead-letter listings) carry an ``owner`` predicate, checked
  while collecting and again inside every compare-and-swap.
* Events (polled, streamed, over a WebSocket, gRPC ``StreamEvents``) are shown when they carry
  the tenant's id; the default tenant also sees the ``job.*`` events of its untagged jobs.
* A workflow is its jobs' tenant's: another tenant's is 404 (read or cancel).
* A retry of a dead-letter job with ``override.meta`` keeps the caller's tenant in it (or is
  400 when it names another), so a job cannot be moved to another tenant.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from .admin import JobQuery
from .backend import JobFilter
from .errors import NotFoundError, ValidationError
from .model import Event, Job, QueueStats
from .service import JobService
from .tenancy import inject

__all__ = [
    "DeadLetterPage",
    "event_visible",
    "owner",
    "require_owned",
    "require_workflow_owned",
    "scope_override",
    "scope_query",
    "scoped_dead_letter",
    "scoped_queue_stats",
    "scoped_summaries",
]


def owner(service: JobService, tenant: str | None) -> Callable[[Job], bool] | None:
    """The predicate selecting ``tenant``'s jobs (``None`` for an unscoped caller)."""
    if tenant is None:
        return None
    tenancy = service.tenancy

    def owned(job: Job) -> bool:
        return tenancy.owns(job, tenant)

    return owned


def scope_query(service: JobService, query: JobQuery, tenant: str | None) -> JobQuery:
    """``query`` restricted to ``tenant``'s jobs (unchanged when unscoped)."""
    if tenant is None:
        return query
    return attrs.evolve(query, owner=owner(service, tenant))


async def require_owned(
    service: JobService, job_id: str, tenant: str | None, what: str = "job"
) -> None:
    """404 (as for an unknown id) unless ``tenant`` owns the job; nothing when unscoped."""
    if tenant is None:
        return
    job = await service.backend.get_job(job_id)
    if job is None or not service.tenancy.owns(job, tenant):
        raise NotFoundError(what, job_id)


def scope_override(override: Any, tenant: str | None) -> Any:
    """A dead-letter retry's ``override`` with the caller's tenant kept in ``override.meta``
    (400 ``override.meta.tenant_id`` when it names another tenant)."""
    if tenant is None or not isinstance(override, Mapping) or override.get("meta") is None:
        return override
    if not isinstance(override["meta"], Mapping):
        raise ValidationError("must be an object", path="override.meta")
    scoped = inject({"meta": override["meta"]}, tenant, "override")
    return {**override, "meta": scoped["meta"]}


async def scoped_queue_stats(service: JobService, queue: str, tenant: str | None) -> QueueStats:
    """A queue's statistics as ``tenant`` may see them: its own jobs' counts, no activity
    figures (they are not kept per tenant); everything when unscoped."""
    stats = await service.queue_stats(queue)
    if tenant is None:
        return stats
    counts = await service.tenancy.stats_counts(tenant, stats.name)
    return QueueStats(name=stats.name, paused=stats.paused, counts=dict(counts))


async def scoped_summaries(
    service: JobService, summaries: Sequence[QueueStats], tenant: str | None
) -> list[QueueStats]:
    """Queue summaries restricted to ``tenant``'s jobs (unchanged when unscoped)."""
    if tenant is None:
        return list(summaries)
    out = []
    for stats in summaries:
        counts = await service.tenancy.stats_counts(tenant, stats.name)
        out.append(QueueStats(name=stats.name, paused=stats.paused, counts=dict(counts)))
    return out


@attrs.frozen
class DeadLetterPage:
    """One page of a dead-letter listing as a caller may see it."""

    jobs: list[Job]
    #: Exact when unscoped; scoped, a lower bound (``offset`` + the page, + 1 when more follow).
    total: int
    #: Whether jobs follow this page (the next page starts at ``offset + limit``).
    more: bool
    #: Scoped: whether the scan stopped at its bound (``Tenancy.jobs``) before the page was
    #: full, so that more of the tenant's dead jobs may exist beyond it.
    truncated: bool = False


async def scoped_dead_letter(
    service: JobService,
    queue: str | None,
    limit: int,
    offset: int,
    tenant: str | None,
    *,
    job_type: str | None = None,
) -> DeadLetterPage:
    """A page of the dead letter (newest first, optionally of one ``queue`` and one
    ``job_type``) as ``tenant`` may see it: the one implementation behind
    ``GET /ojs/v1/dead-letter``, the scoped ``GET /ojs/v1/admin/dead-letter`` and gRPC
    ``ListDeadLetter``. Scoped, ``limit + 1`` of the tenant's jobs are read so that ``more``
    is known without an exact total (which would read every dead job of every tenant)."""
    if tenant is None:
        flt = JobFilter(dead_letter=True, queue=queue, type=job_type, limit=limit, offset=offset)
        page = await service.backend.list_jobs(flt)
        return DeadLetterPage(page.items, page.total, offset + limit < page.total)
    flt = JobFilter(dead_letter=True, queue=queue, type=job_type, limit=limit + 1, offset=offset)
    jobs, truncated = await service.tenancy.jobs(tenant, flt)
    more = len(jobs) > limit
    jobs = jobs[:limit]
    return DeadLetterPage(jobs, offset + len(jobs) + (1 if more else 0), more, truncated)


async def require_workflow_owned(service: JobService, workflow_id: str, tenant: str | None) -> None:
    """404 (as for an unknown id) unless ``tenant`` owns the workflow: every job of a workflow
    has one tenant (``Tenancy.unify_workflow``), so its first stored job tells."""
    if tenant is None:
        return
    workflow = await service.backend.get_workflow(workflow_id)
    jobs = await service.backend.get_jobs([n.job_id for n in workflow.nodes]) if workflow else []
    first = next((j for j in jobs if j is not None), None)
    if first is None or not service.tenancy.owns(first, tenant):
        raise NotFoundError("workflow", workflow_id)


def event_visible(service: JobService, event: Event, tenant: str | None) -> bool:
    """Whether a caller scoped to ``tenant`` may see ``event`` (polled, streamed or sent over
    a WebSocket): one carrying its ``tenant_id``, or, for the default tenant, a ``job.*``
    event without one (its untagged jobs: every job event of a tagged job carries the tag).
    Events of other tenants' jobs, and events without a ``tenant_id`` that are not ``job.*``
    (subscriptions, bulk summaries, and also ``rate_limit.*`` and ``cron.*`` events, which
    name a job of any tenant without its tag), are for unscoped callers only."""
    if tenant is None:
        return True
    owner_id = event.data.get("tenant_id")
    if owner_id is not None:
        return bool(owner_id == tenant)
    return (
        tenant == service.tenancy.default
        and event.type.startswith("job.")
        and "job_id" in event.data
    )
