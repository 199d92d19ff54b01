"""Durable checkpoints (extension ``urn:ojs:ext:durable-execution``).

The spec's routes, ``/ojs/v1/jobs/{id}/checkpoint`` (save with ``POST``, or ``PUT``; ``GET``;
``DELETE``), and the official Python SDK's ``DurableContext`` routes: ``POST`` and ``DELETE``
``/checkpoints/{id}``, ``GET /checkpoints/{id}/resume``. SDK 0.4.0 puts its base path in front
twice, so those are served under ``/ojs/v1/ojs/v1`` as well as ``/ojs/v1``. The rules live in
:mod:`ojs_core.checkpoint`; ``docs/extensions.md`` has them.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ojs_core import checkpoint as core
from ojs_core.codec import converter
from ojs_core.errors import NotFoundError
from ojs_core.model import Checkpoint

from .. import schemas as S
from ..responses import json_response, read_json
from ..routing import ANY_ROLE, WORKER, Doc, OJSRoute, route
from ._common import body_object, service, worker_id_of

__all__ = ["routes"]

#: Where the official SDK 0.4.0 sends checkpoint requests: its base path, doubled.
SDK_PREFIXES = ("/ojs/v1", "/ojs/v1/ojs/v1")


def checkpoint_body(job_id: str, checkpoint: Checkpoint) -> dict[str, Any]:
    """A checkpoint as the routes answer it: its stored form with the job's id."""
    out: dict[str, Any] = {"job_id": job_id}
    out.update(converter.unstructure(checkpoint))
    return out


async def save(request: Request) -> Response:
    """Save the checkpoint of an active job: 404 unknown job, 409 not active (or not the
    caller's attempt), 413 over the size limit."""
    svc = service(request)
    body = body_object(await read_json(request))
    job_id = request.path_params["job_id"]
    checkpoint_request = core.parse_checkpoint(body, svc.limits.max_checkpoint_bytes)
    saved = await core.save_checkpoint(svc, job_id, checkpoint_request, worker_id_of(body))
    out = checkpoint_body(job_id, saved)
    del out["state"]  # the caller has it; the spec's answer is the receipt (§4.1)
    out.pop("metadata", None)
    return json_response(request, {"checkpoint": out})


async def fetch(request: Request) -> Response:
    """The job's latest checkpoint; 404 when it has none."""
    job_id = request.path_params["job_id"]
    checkpoint = await core.get_checkpoint(service(request), job_id)
    if checkpoint is None:
        raise NotFoundError("checkpoint", job_id)
    return json_response(request, {"checkpoint": checkpoint_body(job_id, checkpoint)})


async def delete(request: Request) -> Response:
    """Remove the job's checkpoint; ``deleted`` says whether there was one."""
    job_id = request.path_params["job_id"]
    deleted = await core.delete_checkpoint(service(request), job_id)
    return json_response(request, {"deleted": deleted, "job_id": job_id})


async def resume(request: Request) -> Response:
    """The SDK's resume read: ``has_checkpoint`` and the checkpoint (``null`` when none)."""
    job_id = request.path_params["job_id"]
    checkpoint = await core.get_checkpoint(service(request), job_id)
    return json_response(
        request,
        {
            "job_id": job_id,
            "has_checkpoint": checkpoint is not None,
            "checkpoint": None if checkpoint is None else checkpoint_body(job_id, checkpoint),
        },
    )


_STORED = S.obj(
    {"job_id": S.STR, "sequence": S.INT, "created_at": S.STR},
    {"state": {}, "attempt": S.INT, "step_index": S.INT, "metadata": S.ANY_OBJECT},
)
_SAVED = S.obj({"checkpoint": _STORED})
_SAVE_BODY = S.obj(
    {"state": {}},
    {
        "step_index": {"type": "integer", "minimum": 0},
        "metadata": S.ANY_OBJECT,
        "attempt": {"type": "integer", "minimum": 1},
        "worker_id": S.STR,
    },
)
_DELETED = S.obj({"deleted": S.BOOL, "job_id": S.STR})
_EXT = "(extension urn:ojs:ext:durable-execution)"


def _sdk_routes(prefix: str) -> list[OJSRoute]:
    doubled = " (the SDK's doubled base path)" if prefix != "/ojs/v1" else ""
    return [
        route(
            "POST",
            f"{prefix}/checkpoints/{{job_id}}",
            save,
            WORKER,
            Doc(
                f"Save a checkpoint, the SDK's form{doubled}",
                body=_SAVE_BODY,
                responses={200: _SAVED},
            ),
        ),
        route(
            "DELETE",
            f"{prefix}/checkpoints/{{job_id}}",
            delete,
            WORKER,
            Doc(f"Delete a checkpoint, the SDK's form{doubled}", responses={200: _DELETED}),
        ),
        route(
            "GET",
            f"{prefix}/checkpoints/{{job_id}}/resume",
            resume,
            ANY_ROLE,
            Doc(
                f"Whether a job has a checkpoint, and which{doubled}",
                responses={
                    200: S.obj(
                        {"job_id": S.STR, "has_checkpoint": S.BOOL},
                        {"checkpoint": {"type": ["object", "null"]}},
                    )
                },
            ),
        ),
    ]


routes = [
    *(
        route(
            method,
            "/ojs/v1/jobs/{job_id}/checkpoint",
            save,
            WORKER,
            Doc(
                f"Save an active job's checkpoint {_EXT}", body=_SAVE_BODY, responses={200: _SAVED}
            ),
        )
        for method in ("POST", "PUT")
    ),
    route(
        "GET",
        "/ojs/v1/jobs/{job_id}/checkpoint",
        fetch,
        ANY_ROLE,
        Doc(f"A job's latest checkpoint {_EXT}", responses={200: S.obj({"checkpoint": _STORED})}),
    ),
    route(
        "DELETE",
        "/ojs/v1/jobs/{job_id}/checkpoint",
        delete,
        WORKER,
        Doc(f"Delete a job's checkpoint {_EXT}", responses={200: _DELETED}),
    ),
    *(r for prefix in SDK_PREFIXES for r in _sdk_routes(prefix)),
]
