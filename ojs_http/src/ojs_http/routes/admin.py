"""``/ojs/v1/admin/...``: the admin API extension (``spec/ojs-admin-api.md``), admin role only.

Thin adapters over :class:`ojs_core.admin.Admin`. The shapes follow the spec and what the
official dashboard (``openjobspec/ojs-admin-ui``, ``src/api/types.ts``) reads: listings are
``{items, pagination: {total, page, per_page}}``. With ``X-OJS-Tenant`` every route that reads
or changes jobs is tenant-scoped (``ojs_core.tenant_scope``): counts, listings, bulk changes,
purges and the dead letter cover that tenant's jobs only, and another tenant's job is 404.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ojs_core.admin import (
    Admin,
    BulkOutcome,
    parse_job_query,
    parse_older_than,
    parse_states,
)
from ojs_core.backend import Page
from ojs_core.backpressure import backpressure_to_wire
from ojs_core.errors import ValidationError
from ojs_core.model import Job, QueueStats, WorkerInfo
from ojs_core.states import JobState
from ojs_core.tenant_scope import (
    owner,
    require_owned,
    scope_query,
    scoped_dead_letter,
    scoped_queue_stats,
    scoped_summaries,
)
from ojs_core.timeutil import format_ts

from .. import schemas as S
from ..responses import json_response, read_json
from ..routing import ADMIN, Doc, Param, route
from ._common import body_object, pages, paginated, service, wire
from .cron import patch_cron
from .queues import change_paused
from .tenants import scoped_jobs, tenant_header

__all__ = ["routes"]

#: How many refusals a bulk answer lists.
MAX_ERRORS = 100


def admin(request: Request) -> Admin:
    """The app's :class:`Admin` (made on first use, over the app's service)."""
    state = request.app.state
    found: Admin | None = getattr(state, "admin", None)
    if found is None:
        found = state.admin = Admin(service(request))
    return found


def _ts(value: Any) -> str | None:
    return format_ts(value) if value is not None else None


def _counts(stats: QueueStats | Mapping[JobState, int]) -> dict[str, int]:
    counts = stats.counts if isinstance(stats, QueueStats) else stats
    return {s.value: counts.get(s, 0) for s in JobState}


def _queue(stats: QueueStats) -> dict[str, Any]:
    return {
        "name": stats.name,
        "state": "paused" if stats.paused else "active",
        "paused": stats.paused,
        "counts": _counts(stats),
        "throughput": {
            "processed_per_minute": round(stats.throughput_per_second * 60, 2),
            "failed_per_minute": round(stats.failed_last_hour / 60, 2),
        },
        "avg_duration_ms": stats.avg_duration_ms,
        "avg_wait_ms": stats.avg_wait_ms,
    }


def summary(job: Job) -> dict[str, Any]:
    """A job as a listing shows it (the dashboard's ``JobSummary``), with its last error."""
    last = job.errors[-1] if job.errors else job.error
    return {
        "id": job.id,
        "type": job.type,
        "queue": job.queue,
        "state": job.state.value,
        "priority": job.priority,
        "attempt": job.attempt,
        "max_attempts": job.retry.max_attempts,
        "created_at": _ts(job.created_at),
        "enqueued_at": _ts(job.enqueued_at),
        "scheduled_at": _ts(job.scheduled_at),
        "completed_at": _ts(job.completed_at or job.cancelled_at or job.discarded_at),
        "worker_id": job.worker_id,
        "workflow_id": job.workflow_id,
        "error": {"type": last.type, "code": last.code, "message": last.message} if last else None,
    }


def _page_body(page: Page, number: int, per_page: int) -> dict[str, Any]:
    return paginated([summary(j) for j in page.items], page.total, number, per_page)


# -- stats and queues --------------------------------------------------------------------------


async def stats(request: Request) -> Response:
    """Totals across every queue (a scoped caller's: its jobs' counts, no throughput)."""
    tenant = tenant_header(request)
    if tenant is not None:
        return await _scoped_overview(request, tenant)
    view = await admin(request).overview()
    return json_response(
        request,
        {
            "queues": view.queues,
            "workers": view.workers,
            "jobs": _counts(view.counts),
            "throughput": {
                "processed_per_minute": view.processed_per_minute,
                "failed_per_minute": view.failed_per_minute,
            },
            "uptime_seconds": view.uptime_seconds,
        },
    )


async def _scoped_overview(request: Request, tenant: str) -> Response:
    summaries = await scoped_summaries(
        service(request), await admin(request).queue_summaries(), tenant
    )
    totals: dict[str, int] = dict.fromkeys((s.value for s in JobState), 0)
    for one in summaries:
        for state, n in _counts(one).items():
            totals[state] += n
    view = await admin(request).overview()
    body = {
        "queues": len(summaries),
        "workers": view.workers,
        "jobs": totals,
        "throughput": {"processed_per_minute": 0.0, "failed_per_minute": 0.0},
        "uptime_seconds": view.uptime_seconds,
    }
    return json_response(request, body)


async def list_queues(request: Request) -> Response:
    """Every queue with its counts, paused flag and throughput (a scoped caller's counts)."""
    page, per_page = pages(request)
    queues = await scoped_summaries(
        service(request), await admin(request).queue_summaries(), tenant_header(request)
    )
    chunk = queues[(page - 1) * per_page : page * per_page]
    return json_response(
        request, paginated([_queue(q) for q in chunk], len(queues), page, per_page)
    )


async def get_queue(request: Request) -> Response:
    """One queue, with its configuration."""
    svc = service(request)
    stats_ = await scoped_queue_stats(svc, request.path_params["name"], tenant_header(request))
    body = _queue(stats_)
    bound = await svc.backpressure(stats_.name)
    body["configuration"] = {"backpressure": backpressure_to_wire(bound)}
    return json_response(request, body)


async def _pause(request: Request, paused: bool) -> Response:
    return json_response(request, await change_paused(request, paused))


async def pause_queue(request: Request) -> Response:
    """Pause a queue: enqueue still works, fetch returns nothing from it."""
    return await _pause(request, True)


async def resume_queue(request: Request) -> Response:
    """Resume a paused queue."""
    return await _pause(request, False)


async def purge_queue(request: Request) -> Response:
    """Delete a queue's finished jobs of the given states (``confirm: true`` required)."""
    body = body_object(await read_json(request))
    states = parse_states(body.get("states"))
    purged = await admin(request).purge_queue(
        request.path_params["name"],
        states,
        older_than=parse_older_than(body.get("older_than")),
        confirm=body.get("confirm") is True,
        owner=owner(service(request), tenant_header(request)),
    )
    return json_response(request, {"purged_count": purged, "states": [s.value for s in states]})


# -- jobs ----------------------------------------------------------------------------------


async def list_jobs(request: Request) -> Response:
    """Jobs by state, queue and type, newest first, paginated (with ``X-OJS-Tenant``, only
    that tenant's)."""
    tenant = tenant_header(request)
    if tenant is not None:
        return await scoped_jobs(request, tenant)
    page, per_page = pages(request)
    query = parse_job_query(request.query_params)
    found = await admin(request).jobs(query, page, per_page)
    return json_response(request, _page_body(found, page, per_page))


def _detail(job: Job) -> dict[str, Any]:
    body = wire(job)
    body["metadata"] = {
        name: _ts(getattr(job, name))
        for name in (
            "created_at",
            "enqueued_at",
            "started_at",
            "scheduled_at",
            "completed_at",
            "cancelled_at",
            "discarded_at",
        )
    }
    return body


async def get_job(request: Request) -> Response:
    """The whole envelope, errors and timestamps included."""
    job = await service(request).get(request.path_params["job_id"], tenant=tenant_header(request))
    return json_response(request, _detail(job))


async def retry_job(request: Request) -> Response:
    """Put a discarded job back to ``available`` with attempt 0."""
    job_id = request.path_params["job_id"]
    await require_owned(service(request), job_id, tenant_header(request))
    job = await service(request).revive(job_id)
    return json_response(request, {"job": wire(job)})


async def cancel_job(request: Request) -> Response:
    """Cancel a job that has not finished."""
    _, job = await service(request).cancel(
        request.path_params["job_id"], tenant=tenant_header(request)
    )
    return json_response(request, {"job": wire(job)})


def _filter_of(body: Mapping[str, Any]) -> Mapping[str, Any]:
    """A bulk or purge request's ``filter`` object (``{}`` when absent)."""
    flt = body.get("filter", {})
    if not isinstance(flt, Mapping):
        raise ValidationError("must be an object", path="filter")
    return flt


def _bulk_body(outcome: BulkOutcome) -> dict[str, Any]:
    return {
        "action": outcome.action,
        "matched": outcome.matched,
        "attempted": outcome.attempted,
        "succeeded": outcome.succeeded,
        "failed": outcome.failed,
        # The first refusals only: a bulk call over 10,000 jobs must not answer megabytes.
        "errors": [{"job_id": jid, "error": why} for jid, why in outcome.errors[:MAX_ERRORS]],
        "errors_truncated": len(outcome.errors) > MAX_ERRORS,
    }


async def _bulk(request: Request, action: str, *, dead_letter: bool) -> Response:
    body = body_object(await read_json(request))
    flt = _filter_of(body)
    query = parse_job_query(flt, "filter.", bulk=True)
    outcome = await admin(request).bulk(
        action,
        scope_query(service(request), query, tenant_header(request)),
        confirm=body.get("confirm") is True,
        dead_letter=dead_letter,
    )
    return json_response(request, _bulk_body(outcome))


async def bulk_jobs(request: Request) -> Response:
    """Retry, cancel or delete every job matching a filter (``confirm: true`` required)."""
    return await _bulk(request, request.path_params["action"], dead_letter=False)


# -- dead letter ---------------------------------------------------------------------------


async def list_dead_letter(request: Request) -> Response:
    """Dead-letter jobs by queue and type, newest first, paginated."""
    page, per_page = pages(request)
    query = parse_job_query({k: v for k, v in request.query_params.items() if k != "state"})
    tenant = tenant_header(request)
    if tenant is not None:
        found = await scoped_dead_letter(
            service(request),
            query.queue,
            per_page,
            (page - 1) * per_page,
            tenant,
            job_type=query.type,
        )
        body = paginated([summary(j) for j in found.jobs], found.total, page, per_page)
        body["pagination"].pop("total")  # unknown without reading every dead job
        body["pagination"]["has_more"] = found.more
        body["truncated"] = found.truncated
        return json_response(request, body)
    listed = await admin(request).jobs(query, page, per_page, dead_letter=True)
    return json_response(request, _page_body(listed, page, per_page))


async def dead_letter_stats(request: Request) -> Response:
    """Counts by queue and error type; oldest and newest discard."""
    scoped = scope_query(service(request), parse_job_query({}), tenant_header(request))
    view = await admin(request).dead_letter_stats(scoped)
    return json_response(
        request,
        {
            "total": view.total,
            "by_queue": view.by_queue,
            "by_error_type": view.by_error_type,
            "oldest_at": _ts(view.oldest_at),
            "newest_at": _ts(view.newest_at),
            "sampled": view.sampled,
        },
    )


async def retry_dead_letter(request: Request) -> Response:
    """Re-enqueue one dead-letter job."""
    job_id = request.path_params["job_id"]
    await require_owned(service(request), job_id, tenant_header(request), "dead-letter job")
    job = await service(request).retry_dead_letter(job_id)
    return json_response(request, {"job": wire(job)})


async def delete_dead_letter(request: Request) -> Response:
    """Delete one dead-letter job for good."""
    job_id = request.path_params["job_id"]
    await require_owned(service(request), job_id, tenant_header(request), "dead-letter job")
    await service(request).delete_dead_letter(job_id)
    return json_response(request, {"deleted": True, "job_id": job_id})


async def bulk_retry_dead_letter(request: Request) -> Response:
    """Re-enqueue every dead-letter job matching a filter (``confirm: true`` required)."""
    return await _bulk(request, "retry", dead_letter=True)


async def purge_dead_letter(request: Request) -> Response:
    """Delete dead-letter jobs (optionally only those discarded before ``older_than``)."""
    body = body_object(await read_json(request))
    flt = _filter_of(body)
    query = parse_job_query(flt, "filter.", bulk=True)
    purged = await admin(request).purge_dead_letter(
        scope_query(service(request), query, tenant_header(request)),
        older_than=parse_older_than(body.get("older_than")),
        confirm=body.get("confirm") is True,
    )
    return json_response(request, {"purged_count": purged})


# -- workflows and cron ---------------------------------------------------------------------


async def list_workflows(request: Request) -> Response:
    """Workflows newest first, each with its state and steps (with ``X-OJS-Tenant``, only
    that tenant's: no total, ``has_more``, and ``truncated`` when the scan of 10,000
    workflows stopped short, as for the scoped job listings)."""
    page, per_page = pages(request)
    tenant = tenant_header(request)
    scoped = owner(service(request), tenant)
    if scoped is not None:
        views, more, truncated = await admin(request).owned_workflows(scoped, page, per_page)
        body = paginated(views, len(views), page, per_page)
        body["pagination"].pop("total")  # unknown without reading every workflow
        body["pagination"]["has_more"] = more
        body["truncated"] = truncated
        return json_response(request, body)
    items, total = await admin(request).workflows(page, per_page)
    return json_response(request, paginated(items, total, page, per_page))


# -- workers -------------------------------------------------------------------------------


def _worker(adm: Admin, worker: WorkerInfo) -> dict[str, Any]:
    return {
        "id": worker.worker_id,
        "hostname": worker.hostname,
        "pid": worker.pid,
        "state": adm.worker_state(worker),
        "reported_state": worker.state,
        "directive": worker.directive,
        "queues": list(worker.queues),
        "concurrency": worker.concurrency,
        "active_jobs": len(worker.active_jobs),
        "active_job_ids": list(worker.active_jobs),
        "last_heartbeat_at": format_ts(worker.last_seen),
        "metadata": dict(worker.labels),
    }


async def list_workers(request: Request) -> Response:
    """Workers with their state (running, quiet, terminate, stale) and a summary."""
    page, per_page = pages(request)
    adm = admin(request)
    workers = await adm.workers()
    states = [adm.worker_state(w) for w in workers]
    body = paginated(
        [_worker(adm, w) for w in workers[(page - 1) * per_page : page * per_page]],
        len(workers),
        page,
        per_page,
    )
    body["summary"] = {
        "total": len(workers),
        "running": states.count("running"),
        "quiet": states.count("quiet") + states.count("terminate"),
        "stale": states.count("stale"),
    }
    return json_response(request, body)


async def get_worker(request: Request) -> Response:
    """One worker and the ids of its running jobs."""
    adm = admin(request)
    return json_response(request, _worker(adm, await adm.worker(request.path_params["worker_id"])))


async def deregister_worker(request: Request) -> Response:
    """Forget a stale worker (409 while it heartbeats)."""
    worker_id = request.path_params["worker_id"]
    await admin(request).deregister_worker(worker_id)
    return json_response(request, {"deleted": True, "worker_id": worker_id})


_COUNTS = S.obj({s.value: S.INT for s in JobState})
_PAGE = S.obj({"total": S.INT, "page": S.INT, "per_page": S.INT})
_QUEUE = S.obj({"name": S.STR, "state": S.STR, "paused": S.BOOL, "counts": _COUNTS})
_SUMMARY = S.obj({"id": S.STR, "type": S.STR, "queue": S.STR, "state": S.STR, "attempt": S.INT})
_BULK = S.obj(
    {"action": S.STR, "matched": S.INT, "succeeded": S.INT, "failed": S.INT},
    {"attempted": S.INT, "errors": S.array(S.obj({"job_id": S.STR, "error": S.STR}))},
)
_FILTER = S.obj({}, {"state": S.STR, "queue": S.STR, "type": S.STR})
_BULK_REQUEST = S.obj({"confirm": S.BOOL}, {"filter": _FILTER})
_WORKER = S.obj({"id": S.STR, "state": S.STR, "active_jobs": S.INT, "last_heartbeat_at": S.STR})
_PAGING = (
    Param("page", {"type": "integer", "minimum": 1}),
    Param("per_page", {"type": "integer", "minimum": 1, "maximum": 100}),
)
_JOB_QUERY = (Param("state", S.STR), Param("queue", S.STR), Param("type", S.STR), *_PAGING)
_NO_BODY = S.obj({})


def _listing(items: dict[str, Any]) -> dict[str, Any]:
    return S.obj({"items": S.array(items), "pagination": _PAGE})


routes = [
    route(
        "GET",
        "/ojs/v1/admin/stats",
        stats,
        ADMIN,
        Doc(
            "Totals across queues",
            responses={200: S.obj({"queues": S.INT, "workers": S.INT, "jobs": _COUNTS})},
        ),
    ),
    route(
        "GET",
        "/ojs/v1/admin/queues",
        list_queues,
        ADMIN,
        Doc("Queues with counts", query=_PAGING, responses={200: _listing(_QUEUE)}),
    ),
    route(
        "GET",
        "/ojs/v1/admin/queues/{name}",
        get_queue,
        ADMIN,
        Doc("A queue with counts and configuration", responses={200: _QUEUE}),
    ),
    route(
        "POST",
        "/ojs/v1/admin/queues/{name}/pause",
        pause_queue,
        ADMIN,
        Doc(
            "Pause a queue",
            body=_NO_BODY,
            body_required=False,
            responses={200: S.obj({"name": S.STR, "paused": S.BOOL})},
        ),
    ),
    route(
        "POST",
        "/ojs/v1/admin/queues/{name}/resume",
        resume_queue,
        ADMIN,
        Doc(
            "Resume a queue",
            body=_NO_BODY,
            body_required=False,
            responses={200: S.obj({"name": S.STR, "paused": S.BOOL})},
        ),
    ),
    route(
        "DELETE",
        "/ojs/v1/admin/queues/{name}/jobs",
        purge_queue,
        ADMIN,
        Doc(
            "Purge a queue's finished jobs",
            body=S.obj({"states": S.array(S.STR), "confirm": S.BOOL}, {"older_than": S.STR}),
            responses={200: S.obj({"purged_count": S.INT, "states": S.array(S.STR)})},
        ),
    ),
    route(
        "GET",
        "/ojs/v1/admin/jobs",
        list_jobs,
        ADMIN,
        Doc("Jobs by state, queue and type", query=_JOB_QUERY, responses={200: _listing(_SUMMARY)}),
    ),
    route(
        "POST",
        "/ojs/v1/admin/jobs/bulk/{action}",
        bulk_jobs,
        ADMIN,
        Doc(
            "Retry, cancel or delete the jobs matching a filter",
            path_params={"action": {"type": "string", "enum": ["retry", "cancel", "delete"]}},
            body=_BULK_REQUEST,
            responses={200: _BULK},
        ),
    ),
    route(
        "GET",
        "/ojs/v1/admin/jobs/{job_id}",
        get_job,
        ADMIN,
        Doc("A job's whole envelope", responses={200: S.JOB}),
    ),
    route(
        "POST",
        "/ojs/v1/admin/jobs/{job_id}/retry",
        retry_job,
        ADMIN,
        Doc(
            "Re-enqueue a discarded job",
            body=_NO_BODY,
            body_required=False,
            responses={200: S.obj({"job": S.JOB})},
        ),
    ),
    route(
        "POST",
        "/ojs/v1/admin/jobs/{job_id}/cancel",
        cancel_job,
        ADMIN,
        Doc(
            "Cancel a job",
            body=_NO_BODY,
            body_required=False,
            responses={200: S.obj({"job": S.JOB})},
        ),
    ),
    route(
        "GET",
        "/ojs/v1/admin/dead-letter",
        list_dead_letter,
        ADMIN,
        Doc(
            "Dead-letter jobs",
            query=(Param("queue", S.STR), Param("type", S.STR), *_PAGING),
            responses={200: _listing(_SUMMARY)},
        ),
    ),
    route(
        "DELETE",
        "/ojs/v1/admin/dead-letter",
        purge_dead_letter,
        ADMIN,
        Doc(
            "Purge the dead letter",
            body=S.obj({"confirm": S.BOOL}, {"older_than": S.STR, "filter": _FILTER}),
            responses={200: S.obj({"purged_count": S.INT})},
        ),
    ),
    route(
        "GET",
        "/ojs/v1/admin/dead-letter/stats",
        dead_letter_stats,
        ADMIN,
        Doc(
            "Dead-letter statistics",
            responses={
                200: S.obj(
                    {"total": S.INT, "by_queue": S.ANY_OBJECT, "by_error_type": S.ANY_OBJECT}
                )
            },
        ),
    ),
    route(
        "POST",
        "/ojs/v1/admin/dead-letter/retry",
        bulk_retry_dead_letter,
        ADMIN,
        Doc(
            "Re-enqueue the dead-letter jobs matching a filter",
            body=_BULK_REQUEST,
            responses={200: _BULK},
        ),
    ),
    route(
        "POST",
        "/ojs/v1/admin/dead-letter/{job_id}/retry",
        retry_dead_letter,
        ADMIN,
        Doc(
            "Re-enqueue a dead-letter job",
            body=_NO_BODY,
            body_required=False,
            responses={200: S.obj({"job": S.JOB})},
        ),
    ),
    route(
        "DELETE",
        "/ojs/v1/admin/dead-letter/{job_id}",
        delete_dead_letter,
        ADMIN,
        Doc(
            "Delete a dead-letter job",
            responses={200: S.obj({"deleted": S.BOOL, "job_id": S.STR})},
        ),
    ),
    route(
        "GET",
        "/ojs/v1/admin/workflows",
        list_workflows,
        ADMIN,
        Doc("Workflows, newest first", query=_PAGING, responses={200: _listing(S.WORKFLOW)}),
    ),
    route(
        "PATCH",
        "/ojs/v1/admin/cron/{name}",
        patch_cron,  # the same operation as PATCH /ojs/v1/cron/{name}, under the admin prefix
        ADMIN,
        Doc(
            "Enable or disable a cron entry",
            body=S.obj({"enabled": S.BOOL}),
            responses={200: S.obj({"cron": S.CRON})},
        ),
    ),
    route(
        "GET",
        "/ojs/v1/admin/workers",
        list_workers,
        ADMIN,
        Doc("Workers with a summary", query=_PAGING, responses={200: _listing(_WORKER)}),
    ),
    route(
        "GET",
        "/ojs/v1/admin/workers/{worker_id}",
        get_worker,
        ADMIN,
        Doc("A worker", responses={200: _WORKER}),
    ),
    route(
        "DELETE",
        "/ojs/v1/admin/workers/{worker_id}",
        deregister_worker,
        ADMIN,
        Doc(
            "Forget a stale worker",
            responses={200: S.obj({"deleted": S.BOOL, "worker_id": S.STR})},
        ),
    ),
]
