"""``/ojs/v1/admin/queues/{name}/config``: a queue's bound (the backpressure extension).

``PUT`` replaces the queue's configuration: ``{"backpressure": {"max_depth", "strategy",
"warning_threshold", "retry_after_s"}}`` (``null``, an absent object or ``max_depth: 0``
removes the bound). ``GET`` reads it back, with the queue's current depth.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ojs_core.backpressure import backpressure_to_wire

from .. import schemas as S
from ..responses import json_response, read_json
from ..routing import ADMIN, Doc, route
from ._common import body_object, service

__all__ = ["routes"]


async def get_config(request: Request) -> Response:
    """The queue's bound and its current depth."""
    svc = service(request)
    queue = request.path_params["name"]
    bound = await svc.backpressure(queue)
    return json_response(
        request,
        {
            "queue": queue,
            "backpressure": backpressure_to_wire(bound),
            "depth": await svc.gate.depth(queue),
        },
    )


async def put_config(request: Request) -> Response:
    """Set (or remove) the queue's bound; every replica enforces it from then on."""
    body = body_object(await read_json(request))
    svc = service(request)
    queue = request.path_params["name"]
    bound = await svc.set_backpressure(queue, body.get("backpressure"))
    return json_response(request, {"queue": queue, "backpressure": backpressure_to_wire(bound)})


_BACKPRESSURE = S.obj(
    {},
    {
        "max_depth": S.INT,
        "max_size_bytes": S.INT,
        "strategy": {"type": "string", "enum": ["reject", "block", "drop_oldest"]},
        "warning_threshold": {"type": "number", "minimum": 0, "maximum": 1},
        "retry_after_s": S.INT,
    },
)
_CONFIG = S.obj({"queue": S.STR, "backpressure": _BACKPRESSURE}, {"depth": S.INT})

routes = [
    route(
        "GET",
        "/ojs/v1/admin/queues/{name}/config",
        get_config,
        ADMIN,
        Doc("A queue's configuration (backpressure bound) and depth", responses={200: _CONFIG}),
    ),
    route(
        "PUT",
        "/ojs/v1/admin/queues/{name}/config",
        put_config,
        ADMIN,
        Doc(
            "Set a queue's configuration (backpressure bound; extension urn:ojs:ext:backpressure)",
            body=S.obj({}, {"backpressure": {"type": ["object", "null"]}}),
            responses={200: _CONFIG},
        ),
    ),
]
