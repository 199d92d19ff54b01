"""``/ojs/v1/jobs``: enqueue, batch enqueue, info, cancel, activate."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ojs_core import jsonio
from ojs_core.backpressure import Pressure
from ojs_core.errors import PayloadTooLargeError, ValidationError
from ojs_core.limits import BatchTooLargeError
from ojs_core.service import EnqueueOutcome
from ojs_core.tenancy import inject

from .. import schemas as S
from ..responses import json_response, read_json
from ..routing import ANY_ROLE, PRODUCER, WORKER, Doc, route
from ..settings import HttpSettings
from ._common import ack_body, body_object, prefixed, service, wire
from .tenants import tenant_header

__all__ = ["routes"]


def _check_size(request: Request, envelope: object, index: int | None = None) -> None:
    settings: HttpSettings = request.app.state.settings
    state = request.state
    if (
        getattr(state, "body_size", None) is not None
        and state.body_size <= settings.max_envelope_bytes
        and not getattr(state, "body_may_grow", True)
    ):
        return  # compact UTF-8 JSON of a part of the body is never larger than the body
    size = len(jsonio.dumps(envelope, default=str))
    if size > settings.max_envelope_bytes:
        where = f"jobs[{index}] " if index is not None else ""
        raise PayloadTooLargeError(
            f"{where}envelope is {size} bytes; the limit is {settings.max_envelope_bytes}",
            details={"size": size, "limit": settings.max_envelope_bytes}
            | ({"index": index} if index is not None else {}),
        )


def _block_timeout(request: Request) -> float:
    """``OJS-Block-Timeout`` (seconds, backpressure §5.2): how long an enqueue into a full
    queue whose strategy is ``block`` may wait; capped at the fetch long-poll ceiling, so no
    request holds a connection longer than the server allows any request to wait."""
    raw = request.headers.get("ojs-block-timeout")
    if raw is None or not raw.strip():
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also NaN
        raise ValidationError("must be a number of seconds >= 0", path="headers.OJS-Block-Timeout")
    settings: HttpSettings = request.app.state.settings
    return min(value, settings.max_wait_ms / 1000)


def _pressure_headers(outcomes: list[EnqueueOutcome]) -> dict[str, str]:
    """The warning headers (backpressure §7.3) of the most pressed queue over its warning
    threshold; none when every queue is below it (or unbounded)."""
    pressures: list[Pressure] = [o.pressure for o in outcomes if o.pressure is not None]
    warned = [p for p in pressures if p.warning]
    if not warned:
        return {}
    top = max(warned, key=lambda p: p.ratio)
    return {
        "X-OJS-Queue-Depth": str(top.depth),
        "X-OJS-Queue-Bound": str(top.bound),
        "X-OJS-Queue-Pressure": f"{top.ratio:.2f}",
    }


async def enqueue(request: Request) -> Response:
    """PUSH one job: 201 and ``Location``; 200 with ``deduplicated`` for a unique ``ignore``."""
    settings: HttpSettings = request.app.state.settings
    body = await read_json(request)
    if request.state.body_size > settings.max_envelope_bytes:
        _check_size(request, body)
    body = inject(body, tenant_header(request))
    outcome = await service(request).enqueue(body, block_s=_block_timeout(request))
    body_out: dict[str, Any] = {"job": wire(outcome.job)}
    if outcome.warnings:
        body_out["warnings"] = list(outcome.warnings)  # the schema registry's warn mode
    headers = _pressure_headers([outcome])
    if not outcome.created:
        return json_response(request, {**body_out, "deduplicated": True}, 200, headers)
    headers["Location"] = prefixed(request, f"/ojs/v1/jobs/{outcome.job.id}")
    return json_response(request, body_out, 201, headers)


async def enqueue_batch(request: Request) -> Response:
    """Atomic batch enqueue: all jobs or none."""
    body = body_object(await read_json(request))
    jobs = body.get("jobs")
    if not isinstance(jobs, list) or not jobs:
        raise ValidationError("must be a non-empty array", path="jobs")
    maximum = service(request).limits.max_batch_jobs
    if len(jobs) > maximum:
        raise BatchTooLargeError(len(jobs), maximum)
    for i, envelope in enumerate(jobs):
        _check_size(request, envelope, i)
    tenant = tenant_header(request)
    if tenant is not None:
        jobs = [inject(envelope, tenant, f"jobs[{i}]") for i, envelope in enumerate(jobs)]
    outcomes = await service(request).enqueue_batch(jobs, block_s=_block_timeout(request))
    out = [
        wire(o.job)
        | ({} if o.created else {"deduplicated": True})
        | ({"warnings": list(o.warnings)} if o.warnings else {})
        for o in outcomes
    ]
    return json_response(
        request, {"jobs": out, "count": len(out)}, 201, _pressure_headers(outcomes)
    )


async def get_job(request: Request) -> Response:
    """INFO."""
    job = await service(request).get(request.path_params["job_id"], tenant=tenant_header(request))
    return json_response(request, {"job": wire(job)})


async def cancel_job(request: Request) -> Response:
    """CANCEL: 200 with the cancelled job; 409 when already terminal."""
    before, after = await service(request).cancel(
        request.path_params["job_id"], tenant=tenant_header(request)
    )
    return json_response(request, {"job": wire(after, previous_state=before.state.value)})


async def activate_job(request: Request) -> Response:
    """ACTIVATE a pending job."""
    before, after = await service(request).activate(request.path_params["job_id"])
    return json_response(request, {"job": wire(after, previous_state=before.state.value)})


async def ack_job(request: Request) -> Response:
    """ACK by path (``/jobs/{id}/ack``), an alias the results spec uses."""
    body = body_object(await read_json(request, required=False))
    job = await service(request).ack(
        request.path_params["job_id"], body.get("result"), body.get("worker_id")
    )
    return json_response(request, ack_body(job))


_JOB = S.obj({"job": S.JOB})
_JOB_PREV = S.obj({"job": S.JOB}, {"previous_state": S.STR})

routes = [
    route(
        "POST",
        "/ojs/v1/jobs",
        enqueue,
        PRODUCER,
        Doc(
            "Enqueue a job",
            body=S.ENQUEUE,
            responses={201: _JOB, 200: S.obj({"job": S.JOB, "deduplicated": S.BOOL})},
        ),
    ),
    route(
        "POST",
        "/ojs/v1/jobs/batch",
        enqueue_batch,
        PRODUCER,
        Doc(
            "Enqueue a batch of jobs atomically (413 over the batch limit)",
            body=S.obj({"jobs": S.array(S.ENQUEUE, minItems=1)}),
            responses={201: S.obj({"jobs": S.array(S.JOB), "count": S.INT})},
        ),
    ),
    route(
        "GET", "/ojs/v1/jobs/{job_id}", get_job, ANY_ROLE, Doc("Get a job", responses={200: _JOB})
    ),
    route(
        "DELETE",
        "/ojs/v1/jobs/{job_id}",
        cancel_job,
        PRODUCER,
        Doc("Cancel a job", responses={200: _JOB_PREV}),
    ),
    route(
        "POST",
        "/ojs/v1/jobs/{job_id}/activate",
        activate_job,
        PRODUCER,
        Doc(
            "Make a pending job available",
            body=S.ANY_OBJECT,
            body_required=False,
            responses={200: _JOB_PREV},
        ),
    ),
    route(
        "POST",
        "/ojs/v1/jobs/{job_id}/ack",
        ack_job,
        WORKER,
        Doc(
            "Acknowledge an active job (alias of POST /workers/ack)",
            body=S.obj({}, {"result": {}, "worker_id": S.STR}),
            body_required=False,
            responses={200: S.ACK},
        ),
    ),
]
