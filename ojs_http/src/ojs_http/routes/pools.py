"""``/ojs/v1/admin/pools`` and ``/ojs/v1/admin/scheduling/stats``: the fair-scheduling
extension's admin API (spec §10).

``GET /ojs/v1/admin/pools`` lists the pools with ``active_workers`` and ``active_jobs``;
``GET|PUT|DELETE /ojs/v1/admin/pools/{name}`` reads, creates or replaces, and removes one. The
rules are ``ojs_core.pools``; the statistics ``ojs_core.scheduling_stats``.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from .. import schemas as S
from ..responses import json_response, read_json
from ..routing import ADMIN, Doc, route
from ._common import service

__all__ = ["routes"]

_EXT = " (extension urn:ojs:ext:fair-scheduling)"


async def list_pools(request: Request) -> Response:
    """Every pool, with its active workers and jobs (§10.1)."""
    return json_response(request, {"items": await service(request).pools.listing()})


async def get_pool(request: Request) -> Response:
    """One pool's definition; 404 when none is stored."""
    pool = await service(request).pools.get(request.path_params["name"])
    return json_response(request, pool.to_wire())


async def put_pool(request: Request) -> Response:
    """Create (201) or replace (200) a pool."""
    body = await read_json(request)
    pool, created = await service(request).pools.put(request.path_params["name"], body)
    return json_response(request, pool.to_wire(), 201 if created else 200)


async def delete_pool(request: Request) -> Response:
    """Remove a pool."""
    pool = await service(request).pools.delete(request.path_params["name"])
    return json_response(request, {"deleted": True, "pool": pool.to_wire()})


async def scheduling_stats(request: Request) -> Response:
    """Dispatches per queue over the last minute (§10.2; counted per server process)."""
    return json_response(request, await service(request).scheduling_stats.view())


_POOL = S.obj(
    {"name": S.STR, "queues": {"type": "array", "items": S.STR}, "strategy": S.STR},
    {
        "concurrency": S.INT,
        "weights": {"type": "object", "additionalProperties": S.INT},
        "isolated": {"type": "boolean"},
        "starvation_prevention": {"type": "object"},
        "active_workers": S.INT,
        "active_jobs": S.INT,
    },
)
_BODY = S.obj(
    {"queues": {"type": "array", "items": S.STR}},
    {
        "concurrency": S.INT,
        "strategy": {
            "type": "string",
            "enum": ["strict", "round-robin", "weighted", "least-loaded"],
        },
        "weights": {"type": "object", "additionalProperties": S.INT},
        "isolated": {"type": "boolean"},
        "starvation_prevention": S.obj(
            {},
            {
                "enabled": {"type": "boolean"},
                "rotation_interval": S.STR,
                "min_dispatch_ratio": {"type": "number"},
            },
        ),
    },
)
_OBJ: dict[str, Any] = {"type": "object"}

routes = [
    route(
        "GET",
        "/ojs/v1/admin/pools",
        list_pools,
        ADMIN,
        Doc("Every worker pool with its active workers and jobs" + _EXT, responses={200: _OBJ}),
    ),
    route(
        "GET",
        "/ojs/v1/admin/pools/{name}",
        get_pool,
        ADMIN,
        Doc("A worker pool's definition" + _EXT, responses={200: _POOL}),
    ),
    route(
        "PUT",
        "/ojs/v1/admin/pools/{name}",
        put_pool,
        ADMIN,
        Doc(
            "Create (201) or replace (200) a worker pool" + _EXT,
            body=_BODY,
            responses={200: _POOL, 201: _POOL},
        ),
    ),
    route(
        "DELETE",
        "/ojs/v1/admin/pools/{name}",
        delete_pool,
        ADMIN,
        Doc("Remove a worker pool" + _EXT, responses={200: _OBJ}),
    ),
    route(
        "GET",
        "/ojs/v1/admin/scheduling/stats",
        scheduling_stats,
        ADMIN,
        Doc(
            "Dispatches per queue over the last minute, per server process" + _EXT,
            responses={200: _OBJ},
        ),
    ),
]
