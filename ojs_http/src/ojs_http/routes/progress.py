"""Job progress (extension ``urn:ojs:ext:progress``): report and read it.

Two ways to report, one meaning: the spec's ``PUT /ojs/v1/jobs/{id}/progress`` with
``progress`` as a fraction, and the official Python SDK's ``POST /ojs/v1/workers/progress``
with ``job_id`` and ``percentage`` (0-100) in the body. Either may carry ``data``, ``message``,
``worker_id`` and a ``checkpoint`` object (saved with the report, progress spec §6.4). The
rules live in :mod:`ojs_core.progress`; ``docs/extensions.md`` has them.
"""

from __future__ import annotations

from datetime import UTC
from email.utils import format_datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ojs_core import progress as core
from ojs_core.errors import ValidationError
from ojs_core.model import Job
from ojs_core.timeutil import format_ts
from ojs_core.workflow_progress import workflow_progress

from .. import schemas as S
from ..responses import json_response, read_json
from ..routing import ANY_ROLE, PRODUCER, WORKER, Doc, route
from ._common import body_object, service, worker_id_of

__all__ = ["progress_body", "routes"]


def progress_body(job: Job) -> dict[str, Any]:
    """The spec's progress shape (§7.1; ``null`` fields when nothing was reported), with the
    SDK's ``percentage``, the ``message`` and the attempt the progress belongs to."""
    p = job.progress
    return {
        "job_id": job.id,
        "state": job.state.value,
        "progress": None if p is None else p.value,
        "percentage": None if p is None else p.percentage,
        "data": None if p is None else p.data,
        "message": None if p is None else p.message,
        "attempt": None if p is None else p.attempt,
        "updated_at": None if p is None else format_ts(p.updated_at),
    }


def _headers(job: Job) -> dict[str, str]:
    # Progress changes from second to second: never cached (§10.3).
    headers = {"Cache-Control": "no-cache"}
    p = job.progress
    if p is not None:
        headers["Last-Modified"] = format_datetime(p.updated_at.astimezone(UTC), usegmt=True)
        if p.value is not None:
            headers["X-OJS-Progress"] = str(p.value)
    return headers


async def _report(request: Request, job_id: str, body: Any) -> Response:
    svc = service(request)
    limits = svc.limits
    report = core.parse_progress(body, limits.max_progress_bytes, limits.max_checkpoint_bytes)
    outcome = await core.report_progress(svc, job_id, report, worker_id_of(body))
    data = progress_body(outcome.job) | {"accepted": outcome.accepted}
    if outcome.reason is not None:
        data["reason"] = outcome.reason
    return json_response(request, data, headers=_headers(outcome.job))


async def put_progress(request: Request) -> Response:
    """Report progress of an active job (progress spec §6.1); ignored (``accepted: false``)
    when the job is not active."""
    body = body_object(await read_json(request))
    return await _report(request, request.path_params["job_id"], body)


async def worker_progress(request: Request) -> Response:
    """The official SDK's report: ``job_id`` in the body, ``percentage`` 0-100."""
    body = body_object(await read_json(request))
    job_id = body.get("job_id")
    if not isinstance(job_id, str) or not job_id:
        raise ValidationError("is required", path="job_id")
    return await _report(request, job_id, body)


async def get_progress(request: Request) -> Response:
    """The job's progress; ``null`` fields when none was reported (never a 404 for that)."""
    job = await core.get_progress(service(request), request.path_params["job_id"])
    return json_response(request, progress_body(job), headers=_headers(job))


async def get_workflow_progress(request: Request) -> Response:
    """A workflow's progress aggregated from its steps (progress spec §9)."""
    body = await workflow_progress(service(request), request.path_params["workflow_id"])
    return json_response(request, body, headers={"Cache-Control": "no-cache"})


_NUM_OR_NULL = {"type": ["number", "null"]}
_PROGRESS = S.obj(
    {"job_id": S.STR, "state": S.STR},
    {
        "progress": _NUM_OR_NULL,
        "percentage": _NUM_OR_NULL,
        "data": {"type": ["object", "null"]},
        "message": {"type": ["string", "null"]},
        "attempt": {"type": ["integer", "null"]},
        "updated_at": S.TS,
    },
)
_REPORTED = S.obj(
    {"job_id": S.STR, "state": S.STR, "accepted": S.BOOL},
    {"reason": S.STR, "progress": _NUM_OR_NULL, "percentage": _NUM_OR_NULL},
)
_REPORT_FIELDS = {
    "progress": _NUM_OR_NULL,
    "percentage": _NUM_OR_NULL,
    "data": {"type": ["object", "null"]},
    "message": {"type": ["string", "null"]},
    "worker_id": S.STR,
    "checkpoint": {"type": ["object", "null"]},
}

routes = [
    route(
        "PUT",
        "/ojs/v1/jobs/{job_id}/progress",
        put_progress,
        WORKER,
        Doc(
            "Report an active job's progress (extension urn:ojs:ext:progress)",
            body=S.obj({}, _REPORT_FIELDS),
            responses={200: _REPORTED},
        ),
    ),
    route(
        "POST",
        "/ojs/v1/workers/progress",
        worker_progress,
        WORKER,
        Doc(
            "Report an active job's progress, the official SDK's form (percentage 0-100)",
            body=S.obj({"job_id": S.STR}, _REPORT_FIELDS),
            responses={200: _REPORTED},
        ),
    ),
    route(
        "GET",
        "/ojs/v1/jobs/{job_id}/progress",
        get_progress,
        ANY_ROLE,
        Doc("A job's progress (null fields when none was reported)", responses={200: _PROGRESS}),
    ),
    route(
        "GET",
        "/ojs/v1/workflows/{workflow_id}/progress",
        get_workflow_progress,
        PRODUCER,
        Doc(
            "A workflow's progress, aggregated from its steps",
            responses={
                200: S.obj(
                    {
                        "workflow_id": S.STR,
                        "type": S.STR,
                        "progress": {"type": "number"},
                        "steps": S.array(S.obj({"job_id": S.STR}, {"progress": _NUM_OR_NULL})),
                    },
                    {"completed_steps": S.INT, "total_steps": S.INT},
                )
            },
        ),
    ),
]
