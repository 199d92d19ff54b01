"""``/ojs/v1/workers``: fetch (with optional long-poll), ack, nack, heartbeat, directives."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ojs_core.envelope import parse_job_error
from ojs_core.errors import OJSError, ValidationError
from ojs_core.limits import MAX_VISIBILITY_MS
from ojs_core.logcontext import bind
from ojs_core.queue_strategy import fetch_plan
from ojs_core.rate_limiting import HeldBack
from ojs_core.shutdown import effective_state
from ojs_core.timeutil import format_ts
from ojs_core.versioning import declaration_of

from .. import schemas as S
from ..responses import json_response, read_json
from ..routing import ADMIN, WORKER, Doc, route
from ..settings import HttpSettings
from ._common import ack_body, body_object, service, wire
from ._common import worker_id_of as _worker_id
from .tenants import tenant_header

__all__ = ["routes"]


def _opt_int(
    body: Mapping[str, Any], name: str, *, minimum: int, maximum: int | None = None
) -> int | None:
    """An optional integer field; ``maximum=None`` leaves the upper bound to the service."""
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError("must be an integer", path=name)
    if maximum is None and value < minimum:
        raise ValidationError(f"must be at least {minimum}", path=name)
    if maximum is not None and not minimum <= value <= maximum:
        raise ValidationError(f"must be between {minimum} and {maximum}", path=name)
    return value


def _job_id(body: Mapping[str, Any]) -> str:
    jid = body.get("job_id", body.get("id"))
    if not isinstance(jid, str) or not jid:
        raise ValidationError("is required", path="job_id")
    bind(job_id=jid)
    return jid


async def fetch(request: Request) -> Response:
    """FETCH up to ``count`` jobs; ``wait_ms`` long-polls until one arrives."""
    settings: HttpSettings = request.app.state.settings
    body = body_object(await read_json(request))
    queues = body.get("queues", body.get("queue"))
    if isinstance(queues, str):
        queues = [queues]
    pool = body.get("pool")
    if queues is None and pool is not None:
        queues = []  # a defined pool's queues (fair scheduling)
    elif not isinstance(queues, list) or not queues or not all(isinstance(q, str) for q in queues):
        raise ValidationError("must be a non-empty array of queue names", path="queues")
    if pool is not None and not isinstance(pool, str):
        raise ValidationError("must be a pool name", path="pool")
    count = _opt_int(body, "count", minimum=1) or 1
    visibility = _opt_int(body, "visibility_timeout_ms", minimum=1, maximum=MAX_VISIBILITY_MS)
    wait = _opt_int(body, "wait_ms", minimum=0, maximum=settings.max_wait_ms) or 0
    svc = service(request)
    held = HeldBack()
    jobs = await svc.fetch(
        queues,
        count,
        _worker_id(body),
        visibility_ms=visibility,
        wait_ms=wait,
        tenant=tenant_header(request),
        held=held,
        versions=declaration_of(body),
        plan=fetch_plan(body, queues),
        pool=pool,
    )
    out = [wire(j) for j in jobs]
    data: dict[str, Any] = {"jobs": out}
    if out:
        data["job"] = out[0]
    # Rate-limiting §10.4: what held jobs back, and when to come back for them.
    headers = held.headers(int(svc.now().timestamp() * 1000), empty=not out)
    return json_response(request, data, headers=headers or None)


async def ack(request: Request) -> Response:
    """ACK: the job becomes ``completed``; ``result`` is stored."""
    body = body_object(await read_json(request))
    job = await service(request).ack(_job_id(body), body.get("result"), _worker_id(body))
    return json_response(request, ack_body(job))


async def ack_batch(request: Request) -> Response:
    """ACK many jobs in one request (extension ``urn:ojs:ext:experimental:batch-ack``).

    Each acknowledgement stands alone, as in the bulk-operations spec's ``partial`` mode: 200
    when all were acknowledged, 207 when some were refused, 422 when all were; ``items`` holds
    one entry per request entry, in order."""
    body = body_object(await read_json(request))
    raw = body.get("acks")
    if not isinstance(raw, list) or not raw:
        raise ValidationError("must be a non-empty array of {job_id, result}", path="acks")
    pairs: list[tuple[str, Any]] = []
    for i, entry in enumerate(raw):
        if not isinstance(entry, Mapping):
            raise ValidationError("must be an object", path=f"acks[{i}]")
        jid = entry.get("job_id", entry.get("id"))
        if not isinstance(jid, str) or not jid:
            raise ValidationError("is required", path=f"acks[{i}].job_id")
        pairs.append((jid, entry.get("result")))
    outcomes = await service(request).ack_many(pairs, _worker_id(body))
    items: list[dict[str, Any]] = []
    for i, ((job_id, _), outcome) in enumerate(zip(pairs, outcomes, strict=True)):
        if isinstance(outcome, OJSError):
            error = outcome.to_wire()["error"]
            items.append({"index": i, "job_id": job_id, "status": "failed", "error": error})
        else:
            items.append(
                {"index": i, "job_id": job_id, "status": "acknowledged", "state": "completed"}
            )
    failed = sum(1 for item in items if item["status"] == "failed")
    status = 200 if not failed else (422 if failed == len(items) else 207)
    data = {
        "total": len(items),
        "succeeded": len(items) - failed,
        "failed": failed,
        "items": items,
    }
    return json_response(request, data, status)


async def nack(request: Request) -> Response:
    """FAIL: retryable, discarded or (``requeue: true``) available again."""
    body = body_object(await read_json(request))
    requeue = body.get("requeue", False)
    if not isinstance(requeue, bool):
        raise ValidationError("must be a boolean", path="requeue")
    error = parse_job_error(body.get("error"))
    job = await service(request).nack(_job_id(body), error, _worker_id(body), requeue=requeue)
    data: dict[str, Any] = {
        "id": job.id,
        "job_id": job.id,
        "state": job.state.value,
        "attempt": job.attempt,
        "max_attempts": job.max_attempts,
        "job": wire(job),
    }
    if job.state.value == "retryable":
        if job.next_attempt_at is not None:
            data["next_attempt_at"] = format_ts(job.next_attempt_at)
        data["retry_delay_ms"] = job.retry_delay_ms
    if job.discarded_at is not None:
        data["discarded_at"] = format_ts(job.discarded_at)
    if job.completed_at is not None:
        data["completed_at"] = format_ts(job.completed_at)
    return json_response(request, data)


async def heartbeat(request: Request) -> Response:
    """BEAT: extend the listed jobs, record the worker, answer its directive in ``state``."""
    body = body_object(await read_json(request))
    worker_id = _worker_id(body, required=True)
    assert worker_id is not None
    raw_jobs = body.get("active_jobs")
    ids: list[str] = []
    if isinstance(raw_jobs, list):
        ids = [j for j in raw_jobs if isinstance(j, str)]
    elif raw_jobs is not None and not isinstance(raw_jobs, int):
        raise ValidationError("must be an array of job ids (or a count)", path="active_jobs")
    extra_ids = body.get("active_job_ids")
    if isinstance(extra_ids, list):
        ids.extend(j for j in extra_ids if isinstance(j, str))
    if isinstance(body.get("job_id"), str):
        ids.append(body["job_id"])
    visibility = _opt_int(body, "visibility_timeout_ms", minimum=1, maximum=MAX_VISIBILITY_MS)
    svc = service(request)
    outcome = await svc.heartbeat(worker_id, list(dict.fromkeys(ids)), visibility, body)
    return json_response(
        request,
        {
            "state": outcome.directive,
            "directive": outcome.directive,
            "worker_id": worker_id,
            "jobs_extended": outcome.extended,
            "server_time": format_ts(svc.now()),
            "heartbeat_interval_ms": 5000,
        },
    )


async def list_workers(request: Request) -> Response:
    """Workers known from their heartbeats."""
    workers = await service(request).backend.list_workers()
    return json_response(
        request,
        {
            "workers": [
                {
                    "worker_id": w.worker_id,
                    "state": effective_state(w),
                    "reported_state": w.state,
                    "directive": w.directive,
                    "last_seen": format_ts(w.last_seen),
                    "active_jobs": w.active_jobs,
                    "hostname": w.hostname,
                    "queues": w.queues,
                }
                for w in workers
            ]
        },
    )


async def set_directive(request: Request) -> Response:
    """Admin: tell a worker to go ``quiet`` or ``terminate`` at its next heartbeat."""
    directive = request.path_params["directive"]
    worker = await service(request).set_worker_directive(
        request.path_params["worker_id"], directive
    )
    return json_response(request, {"worker_id": worker.worker_id, "directive": worker.directive})


_WORKER = S.obj(
    {"worker_id": S.STR, "state": S.STR, "directive": S.STR},
    {"last_seen": S.TS, "active_jobs": {"type": ["array", "integer", "null"]}},
)

_ACKED = S.obj(
    {
        "total": S.INT,
        "succeeded": S.INT,
        "failed": S.INT,
        "items": S.array(
            S.obj(
                {"index": S.INT, "job_id": S.STR, "status": S.STR},
                {"state": S.STR, "error": S.ANY_OBJECT},
            )
        ),
    }
)

routes = [
    route(
        "POST",
        "/ojs/v1/workers/fetch",
        fetch,
        WORKER,
        Doc(
            "Claim up to count jobs (long-polls for wait_ms)",
            body=S.FETCH,
            responses={200: S.obj({"jobs": S.array(S.JOB)}, {"job": S.JOB})},
        ),
    ),
    route(
        "POST",
        "/ojs/v1/workers/ack",
        ack,
        WORKER,
        Doc(
            "Acknowledge an active job",
            body=S.obj({"job_id": S.STR}, {"result": {}, "worker_id": S.STR}),
            responses={200: S.ACK},
        ),
    ),
    route(
        "POST",
        "/ojs/v1/workers/ack/batch",
        ack_batch,
        WORKER,
        Doc(
            "Acknowledge many active jobs (extension urn:ojs:ext:experimental:batch-ack)",
            body=S.obj(
                {"acks": S.array(S.obj({"job_id": S.STR}, {"result": {}}), minItems=1)},
                {"worker_id": S.STR},
            ),
            responses={200: _ACKED, 207: _ACKED, 422: _ACKED},
        ),
    ),
    route(
        "POST",
        "/ojs/v1/workers/nack",
        nack,
        WORKER,
        Doc(
            "Fail an active job (retry, discard or requeue)",
            body=S.obj(
                {"job_id": S.STR},
                {"error": S.ANY_OBJECT, "requeue": S.BOOL, "worker_id": S.STR},
            ),
            responses={200: S.NACK},
        ),
    ),
    route(
        "POST",
        "/ojs/v1/workers/heartbeat",
        heartbeat,
        WORKER,
        Doc(
            "Extend active jobs and read the worker's directive",
            body=S.obj(
                {"worker_id": {"type": "string", "minLength": 1, "maxLength": 256}},
                {
                    "active_jobs": S.array(S.STR),
                    "visibility_timeout_ms": S.INT,
                    "pool": S.STR,
                    "state": {
                        "type": "string",
                        "enum": ["running", "quiet", "draining", "terminate"],
                    },
                },
            ),
            responses={200: S.HEARTBEAT},
        ),
    ),
    route(
        "GET",
        "/ojs/v1/workers",
        list_workers,
        ADMIN,
        Doc(
            "Workers known from their heartbeats",
            responses={200: S.obj({"workers": S.array(_WORKER)})},
        ),
    ),
    route(
        "POST",
        "/ojs/v1/admin/workers/{worker_id}/{directive}",
        set_directive,
        ADMIN,
        Doc(
            "Tell a worker to go quiet or terminate",
            path_params={
                "directive": {"type": "string", "enum": ["running", "quiet", "terminate"]}
            },
            responses={200: S.obj({"worker_id": S.STR, "directive": S.STR})},
        ),
    ),
]
