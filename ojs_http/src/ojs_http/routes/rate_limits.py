"""``/ojs/v1/rate-limits``: the rate-limiting extension's inspection and overrides (§10).

``GET /ojs/v1/rate-limits`` lists every key a job has used (admin-style pages),
``GET /ojs/v1/rate-limits/{key}`` reads one, ``PUT`` sets an operator's override
(``{"concurrency", "rate", "throttle", "expires_at"}``, replacing the jobs' own limits until
it expires) and ``DELETE`` removes it. ``/ojs/v1/admin/queues/{name}/rate-limit`` sets,
reads and removes a queue-level limit (§7.2, ``ojs_core.queue_limits``). The rules are
``ojs_core.rate_limiting``.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from .. import schemas as S
from ..responses import json_response, read_json
from ..routing import ADMIN, ANY_ROLE, Doc, route
from ._common import body_object, pages, paginated, service

__all__ = ["routes"]

_EXT = " (extension urn:ojs:ext:rate-limiting)"


async def list_keys(request: Request) -> Response:
    """Every key's state, by key."""
    page, per_page = pages(request)
    views = await service(request).rate_limits.list()
    start = (page - 1) * per_page
    return json_response(
        request, paginated(views[start : start + per_page], len(views), page, per_page)
    )


async def get_key(request: Request) -> Response:
    """One key's state; 404 when no job used it."""
    view = await service(request).rate_limits.get(request.path_params["key"])
    return json_response(request, view)


async def put_override(request: Request) -> Response:
    """Set (an empty body: remove) the key's override."""
    body = body_object(await read_json(request))
    view = await service(request).rate_limits.override(request.path_params["key"], body)
    return json_response(request, view)


async def delete_override(request: Request) -> Response:
    """Remove the key's override."""
    view = await service(request).rate_limits.override(request.path_params["key"], {})
    return json_response(request, view)


async def get_queue_limit(request: Request) -> Response:
    """The queue's own limit and its counters; 404 when it has none."""
    view = await service(request).queue_limits.get(request.path_params["name"])
    return json_response(request, view)


async def put_queue_limit(request: Request) -> Response:
    """Set (an empty body: remove) the queue's own limit."""
    body = body_object(await read_json(request))
    view = await service(request).queue_limits.put(request.path_params["name"], body)
    return json_response(request, view)


async def delete_queue_limit(request: Request) -> Response:
    """Remove the queue's own limit; 404 when it has none."""
    view = await service(request).queue_limits.delete(request.path_params["name"])
    return json_response(request, view)


_WINDOW = S.obj({"limit": S.INT, "period": S.STR})
_VIEW: dict[str, Any] = S.obj(
    {"key": S.STR},
    {
        "concurrency": S.obj({"limit": S.INT, "active": S.INT, "available": S.INT}),
        "rate": S.obj({"limit": S.INT, "period": S.STR}, {"current_count": S.INT}),
        "throttle": S.obj({"limit": S.INT, "period": S.STR}, {"next_allowed_at": S.STR}),
        "override": {"type": "object"},
        "held_until": S.STR,
        "waiting_count": S.INT,
    },
)
_OVERRIDE = S.obj(
    {},
    {"concurrency": S.INT, "rate": _WINDOW, "throttle": _WINDOW, "expires_at": S.STR},
)

routes = [
    route(
        "GET",
        "/ojs/v1/rate-limits",
        list_keys,
        ANY_ROLE,
        Doc("Every rate-limit key and its state" + _EXT, responses={200: {"type": "object"}}),
    ),
    route(
        "GET",
        "/ojs/v1/rate-limits/{key}",
        get_key,
        ANY_ROLE,
        Doc("A rate-limit key's limits, counts and waiting jobs" + _EXT, responses={200: _VIEW}),
    ),
    route(
        "PUT",
        "/ojs/v1/rate-limits/{key}",
        put_override,
        ADMIN,
        Doc(
            "Override a key's limits until expires_at (an empty body removes it)" + _EXT,
            body=_OVERRIDE,
            responses={200: _VIEW},
        ),
    ),
    route(
        "DELETE",
        "/ojs/v1/rate-limits/{key}",
        delete_override,
        ADMIN,
        Doc("Remove a key's override" + _EXT, responses={200: _VIEW}),
    ),
    route(
        "GET",
        "/ojs/v1/admin/queues/{name}/rate-limit",
        get_queue_limit,
        ADMIN,
        Doc("A queue-level rate limit and its counters (§7.2)" + _EXT, responses={200: _VIEW}),
    ),
    route(
        "PUT",
        "/ojs/v1/admin/queues/{name}/rate-limit",
        put_queue_limit,
        ADMIN,
        Doc(
            "Set a queue-level rate limit: every job of the queue counts against it besides its"
            " own (an empty body removes it)" + _EXT,
            body=_OVERRIDE,
            responses={200: _VIEW},
        ),
    ),
    route(
        "DELETE",
        "/ojs/v1/admin/queues/{name}/rate-limit",
        delete_queue_limit,
        ADMIN,
        Doc("Remove a queue-level rate limit" + _EXT, responses={200: _VIEW}),
    ),
]
