"""``/ojs/v1/cron``: register (upsert), list, get, enable/disable, delete."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ojs_core.codec import cron_to_wire
from ojs_core.errors import ValidationError

from .. import schemas as S
from ..responses import json_response, read_json
from ..routing import PRODUCER, Doc, Param, route
from ._common import body_object, pagination, prefixed, query_int, service

__all__ = ["routes"]


async def register(request: Request) -> Response:
    """201 for a new entry, 200 when an existing name is updated (cron spec CRON-26)."""
    cron, created = await service(request).register_cron(await read_json(request))
    wire = cron_to_wire(cron)
    return json_response(
        request,
        {"cron": wire, "cron_job": wire},
        201 if created else 200,
        {"Location": prefixed(request, f"/ojs/v1/cron/{cron.name}")},
    )


async def list_crons(request: Request) -> Response:
    """Both list keys: ``crons`` (openapi, suite) and ``cron_jobs`` (spec, SDK)."""
    limit = query_int(request, "limit", 1000, minimum=1, maximum=10_000)
    offset = query_int(request, "offset", 0, minimum=0, maximum=10**9)
    enabled = request.query_params.get("enabled")
    items = await service(request).crons()
    if enabled in ("true", "false"):
        items = [c for c in items if c.enabled == (enabled == "true")]
    page = [cron_to_wire(c) for c in items[offset : offset + limit]]
    return json_response(
        request,
        {
            "crons": page,
            "cron_jobs": page,
            "count": len(items),
            "pagination": pagination(len(items), limit, offset),
        },
    )


async def get_cron(request: Request) -> Response:
    """One entry."""
    cron = await service(request).get_cron(request.path_params["name"])
    wire = cron_to_wire(cron)
    return json_response(request, {"cron": wire, "cron_job": wire})


async def patch_cron(request: Request) -> Response:
    """``{"enabled": bool}``."""
    body = body_object(await read_json(request))
    enabled = body.get("enabled")
    if not isinstance(enabled, bool):
        raise ValidationError("must be a boolean", path="enabled")
    cron = await service(request).set_cron_enabled(request.path_params["name"], enabled)
    wire = cron_to_wire(cron)
    return json_response(request, {"cron": wire, "cron_job": wire})


async def delete_cron(request: Request) -> Response:
    """Remove an entry; jobs it already enqueued are left alone."""
    cron = await service(request).delete_cron(request.path_params["name"])
    wire = cron_to_wire(cron)
    return json_response(request, {"cron": wire, "deleted": True, "name": cron.name})


_CRON = S.obj({"cron": S.CRON}, {"cron_job": S.CRON})
_PAGE = (
    Param("limit", {"type": "integer", "minimum": 1, "maximum": 10_000}),
    Param("offset", {"type": "integer", "minimum": 0}),
    Param("enabled", {"type": "string", "enum": ["true", "false"]}),
)

routes = [
    route(
        "POST",
        "/ojs/v1/cron",
        register,
        PRODUCER,
        Doc(
            "Register (or replace) a cron entry",
            body=S.CRON_REQUEST,
            responses={201: _CRON, 200: _CRON},
        ),
    ),
    route(
        "GET",
        "/ojs/v1/cron",
        list_crons,
        PRODUCER,
        Doc(
            "List cron entries",
            query=_PAGE,
            responses={
                200: S.obj(
                    {"crons": S.array(S.CRON), "count": S.INT, "pagination": S.PAGINATION},
                    {"cron_jobs": S.array(S.CRON)},
                )
            },
        ),
    ),
    route(
        "GET",
        "/ojs/v1/cron/{name}",
        get_cron,
        PRODUCER,
        Doc("Get a cron entry", responses={200: _CRON}),
    ),
    route(
        "PATCH",
        "/ojs/v1/cron/{name}",
        patch_cron,
        PRODUCER,
        Doc(
            "Enable or disable a cron entry",
            body=S.obj({"enabled": S.BOOL}),
            responses={200: _CRON},
        ),
    ),
    route(
        "DELETE",
        "/ojs/v1/cron/{name}",
        delete_cron,
        PRODUCER,
        Doc(
            "Delete a cron entry",
            responses={200: S.obj({"cron": S.CRON, "deleted": S.BOOL, "name": S.STR})},
        ),
    ),
]
