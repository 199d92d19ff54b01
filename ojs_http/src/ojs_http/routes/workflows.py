"""``/ojs/v1/workflows``: chain, group, batch and dependency graphs (with ``X-OJS-Tenant``,
created for that tenant, and another tenant's workflow is 404)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ojs_core.tenant_scope import require_workflow_owned

from .. import schemas as S
from ..responses import json_response, read_json
from ..routing import PRODUCER, Doc, route
from ._common import prefixed, service
from .tenants import tenant_header

__all__ = ["routes"]


async def create(request: Request) -> Response:
    """Create a workflow: 201 with ``Location``; it starts ``running``."""
    workflow = await service(request).create_workflow(
        await read_json(request), tenant=tenant_header(request)
    )
    return json_response(
        request,
        {"workflow": workflow},
        201,
        {"Location": prefixed(request, f"/ojs/v1/workflows/{workflow['id']}")},
    )


async def get(request: Request) -> Response:
    """The workflow with its derived state and steps."""
    workflow_id = request.path_params["workflow_id"]
    await require_workflow_owned(service(request), workflow_id, tenant_header(request))
    workflow = await service(request).get_workflow(workflow_id)
    return json_response(request, {"workflow": workflow})


async def cancel(request: Request) -> Response:
    """Cancel every step that has not started; 409 if the workflow already ended."""
    workflow_id = request.path_params["workflow_id"]
    await require_workflow_owned(service(request), workflow_id, tenant_header(request))
    workflow = await service(request).cancel_workflow(workflow_id)
    return json_response(request, {"workflow": workflow})


_WORKFLOW = S.obj({"workflow": S.WORKFLOW})

routes = [
    route(
        "POST",
        "/ojs/v1/workflows",
        create,
        PRODUCER,
        Doc("Create a workflow", body=S.WORKFLOW_REQUEST, responses={201: _WORKFLOW}),
    ),
    route(
        "GET",
        "/ojs/v1/workflows/{workflow_id}",
        get,
        PRODUCER,
        Doc("Get a workflow", responses={200: _WORKFLOW}),
    ),
    route(
        "DELETE",
        "/ojs/v1/workflows/{workflow_id}",
        cancel,
        PRODUCER,
        Doc("Cancel a workflow's steps that have not started", responses={200: _WORKFLOW}),
    ),
]
