"""``/ojs/v1/queues`` and ``/ojs/v1/dead-letter``.

With ``X-OJS-Tenant`` the statistics count that tenant's jobs only, and the dead letter lists,
retries and deletes only that tenant's jobs (``ojs_core.tenant_scope``). Queue names and
paused flags are shared configuration, listed to everyone.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ojs_core.model import QueueStats
from ojs_core.states import JobState
from ojs_core.tenant_scope import (
    require_owned,
    scope_override,
    scoped_dead_letter,
    scoped_queue_stats,
)
from ojs_core.timeutil import format_ts

from .. import schemas as S
from ..responses import json_response, read_json
from ..routing import ADMIN, ANY_ROLE, Doc, Param, route
from ._common import body_object, pagination, query_int, service, wire
from .tenants import tenant_header

__all__ = ["routes"]


async def list_queues(request: Request) -> Response:
    """Every known queue with its status."""
    queues = await service(request).queues()
    items = [
        {
            "name": q.name,
            "status": "paused" if q.paused else "active",
            "paused": q.paused,
            "created_at": format_ts(q.created_at) if q.created_at else None,
        }
        for q in queues
    ]
    return json_response(
        request, {"queues": items, "pagination": pagination(len(items), len(items), 0)}
    )


def _stats_body(stats: QueueStats, computed_at: str) -> dict[str, Any]:
    counts = {s.value: stats.counts.get(s, 0) for s in JobState}
    status = "paused" if stats.paused else "active"
    return {
        # openapi and the conformance suite read queue.<count>; the binding and the SDK read
        # a queue name, status and stats{}: both are returned.
        "queue": {"name": stats.name, **counts, "paused": stats.paused, "status": status},
        "name": stats.name,
        "status": status,
        "stats": {
            **counts,
            "completed_last_hour": stats.completed_last_hour,
            "failed_last_hour": stats.failed_last_hour,
            "avg_duration_ms": stats.avg_duration_ms,
            "avg_wait_ms": stats.avg_wait_ms,
            "throughput_per_second": stats.throughput_per_second,
            "total": sum(counts.values()),
        },
        "computed_at": computed_at,
    }


async def queue_stats(request: Request) -> Response:
    """Per-state counts of one queue."""
    svc = service(request)
    stats = await scoped_queue_stats(svc, request.path_params["name"], tenant_header(request))
    return json_response(request, _stats_body(stats, format_ts(svc.now())))


async def change_paused(request: Request, paused: bool) -> dict[str, Any]:
    """Pause or resume the queue named in the path: ``{name, paused, paused_at|resumed_at}``
    (the admin API's answer, which the binding's answer extends)."""
    await read_json(request, required=False)
    svc = service(request)
    info = await svc.set_paused(request.path_params["name"], paused)
    stamp = "paused_at" if paused else "resumed_at"
    return {"name": info.name, "paused": info.paused, stamp: format_ts(svc.now())}


async def _set_paused(request: Request, paused: bool) -> Response:
    changed = await change_paused(request, paused)
    status = "paused" if paused else "active"
    queue = {"name": changed["name"], "paused": changed["paused"], "status": status}
    body = {"queue": queue, "status": status, **changed}
    del body["paused"]
    return json_response(request, body)


async def pause(request: Request) -> Response:
    """Pause: enqueue still works, fetch returns nothing from this queue."""
    return await _set_paused(request, True)


async def resume(request: Request) -> Response:
    """Resume a paused queue."""
    return await _set_paused(request, False)


async def dead_letter_list(request: Request) -> Response:
    """Dead-letter jobs, newest first, with offset pagination."""
    limit = query_int(request, "limit", 50, minimum=1, maximum=1000)
    offset = query_int(request, "offset", 0, minimum=0, maximum=10**9)
    cursor = request.query_params.get("cursor")
    if cursor and cursor.isdigit():
        offset = int(cursor)
    queue = request.query_params.get("queue") or None
    tenant = tenant_header(request)
    found = await scoped_dead_letter(service(request), queue, limit, offset, tenant)
    body: dict[str, Any] = {
        "jobs": [wire(j) for j in found.jobs],
        # Scoped, the total is a lower bound (the tenant's jobs up to this page, + 1 when more
        # follow): an exact one would read every dead job; has_more and next_cursor are exact.
        "pagination": pagination(found.total, limit, offset),
    }
    if tenant is not None:
        body["truncated"] = found.truncated
    return json_response(request, body)


async def dead_letter_retry(request: Request) -> Response:
    """Re-enqueue a dead-letter job with attempt 0."""
    body = body_object(await read_json(request, required=False))
    svc = service(request)
    job_id, tenant = request.path_params["job_id"], tenant_header(request)
    await require_owned(svc, job_id, tenant, "dead-letter job")
    job = await svc.retry_dead_letter(job_id, scope_override(body.get("override"), tenant))
    return json_response(request, {"job": wire(job, re_enqueued_at=format_ts(svc.now()))})


async def dead_letter_delete(request: Request) -> Response:
    """Delete a dead-letter job for good."""
    job_id = request.path_params["job_id"]
    await require_owned(service(request), job_id, tenant_header(request), "dead-letter job")
    await service(request).delete_dead_letter(job_id)
    return json_response(request, {"deleted": True, "job_id": job_id})


_QUEUE = S.obj({"name": S.STR, "paused": S.BOOL, "status": S.STR}, {"created_at": S.TS})
_PAUSED = S.obj({"queue": _QUEUE, "name": S.STR, "status": S.STR})
_STATS = S.obj(
    {
        "queue": S.obj({"name": S.STR, "paused": S.BOOL}),
        "name": S.STR,
        "status": S.STR,
        "stats": S.obj({"total": S.INT}),
        "computed_at": S.STR,
    }
)
_NO_BODY = S.obj({})

routes = [
    route(
        "GET",
        "/ojs/v1/queues",
        list_queues,
        ANY_ROLE,
        Doc(
            "List known queues",
            responses={200: S.obj({"queues": S.array(_QUEUE), "pagination": S.PAGINATION})},
        ),
    ),
    route(
        "GET",
        "/ojs/v1/queues/{name}/stats",
        queue_stats,
        ANY_ROLE,
        Doc("Per-state counts of a queue", responses={200: _STATS}),
    ),
    route(
        "POST",
        "/ojs/v1/queues/{name}/pause",
        pause,
        ADMIN,
        Doc("Pause a queue", body=_NO_BODY, body_required=False, responses={200: _PAUSED}),
    ),
    route(
        "POST",
        "/ojs/v1/queues/{name}/resume",
        resume,
        ADMIN,
        Doc("Resume a queue", body=_NO_BODY, body_required=False, responses={200: _PAUSED}),
    ),
    route(
        "GET",
        "/ojs/v1/dead-letter",
        dead_letter_list,
        ADMIN,
        Doc(
            "List dead-letter jobs",
            query=(
                Param("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
                Param("offset", {"type": "integer", "minimum": 0}),
                Param("cursor", S.STR),
                Param("queue", S.STR),
            ),
            responses={200: S.obj({"jobs": S.array(S.JOB), "pagination": S.PAGINATION})},
        ),
    ),
    route(
        "POST",
        "/ojs/v1/dead-letter/{job_id}/retry",
        dead_letter_retry,
        ADMIN,
        Doc(
            "Re-enqueue a dead-letter job",
            body=S.obj({}, {"override": S.ANY_OBJECT}),
            body_required=False,
            responses={200: S.obj({"job": S.JOB})},
        ),
    ),
    route(
        "DELETE",
        "/ojs/v1/dead-letter/{job_id}",
        dead_letter_delete,
        ADMIN,
        Doc(
            "Delete a dead-letter job",
            responses={200: S.obj({"deleted": S.BOOL, "job_id": S.STR})},
        ),
    ),
]
