"""``/ojs/v1/webhooks/deliveries``: the webhook delivery log and manual retry (spec §10).

``GET /ojs/v1/webhooks/deliveries`` lists the logged deliveries of every subscription
(``?subscription_id=``, ``?status=``, ``?limit=``), ``GET .../{id}`` shows one (a dead one with
the event it carries), ``POST .../{id}/retry`` queues a dead delivery again. Admin only;
tenant-scoped with ``X-OJS-Tenant`` like the subscription routes. The rules are
``ojs_core.webhook_log``.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ojs_core.webhook_log import find_delivery, list_all_deliveries, replay
from ojs_core.webhooks import DELIVERY_STATUSES, Delivery

from .. import schemas as S
from ..responses import json_response
from ..routing import ADMIN, Doc, Param, route
from ._common import query_int
from .tenants import tenant_header
from .webhooks import DELIVERY_SCHEMA, runner_of

__all__ = ["routes"]

_BASE = "/ojs/v1/webhooks/deliveries"
_EXT = " (extension urn:ojs:ext:webhooks)"


def _detail(delivery: Delivery) -> dict[str, Any]:
    """The wire form, with the event when the log kept it (dead deliveries)."""
    out = delivery.to_wire()
    if "data" in delivery.event or "specversion" in delivery.event:
        out["event"] = dict(delivery.event)
    return out


async def list_deliveries(request: Request) -> Response:
    """Logged deliveries of every visible subscription, the latest first."""
    _, store = runner_of(request)
    limit = query_int(request, "limit", 50, minimum=1, maximum=500)
    found = await list_all_deliveries(
        store,
        limit=limit,
        subscription_id=request.query_params.get("subscription_id") or None,
        status=request.query_params.get("status") or None,
        tenant=tenant_header(request),
    )
    return json_response(request, {"deliveries": [d.to_wire() for d in found]})


async def get_delivery(request: Request) -> Response:
    """One logged delivery (a dead one with its event); 404 when not in the log."""
    _, store = runner_of(request)
    found = await find_delivery(store, request.path_params["id"], tenant_header(request))
    return json_response(request, _detail(found))


async def retry_delivery(request: Request) -> Response:
    """Queue a dead delivery again, due now (202); 409 when it is not dead."""
    runner, store = runner_of(request)
    queued = await replay(
        store, request.path_params["id"], runner.clock.now(), tenant_header(request)
    )
    runner.wake()
    return json_response(request, queued.to_wire(), 202)


_ID = {"id": S.STR}
_STATUS = {"type": "string", "enum": list(DELIVERY_STATUSES)}
_DETAIL = {
    **DELIVERY_SCHEMA,
    "properties": {**DELIVERY_SCHEMA["properties"], "event": S.ANY_OBJECT},
}

routes = [
    route(
        "GET",
        _BASE,
        list_deliveries,
        ADMIN,
        Doc(
            "Logged webhook deliveries of every subscription, the latest first" + _EXT,
            query=(
                Param("subscription_id", S.STR),
                Param("status", _STATUS),
                Param("limit", {"type": "integer", "minimum": 1, "maximum": 500}),
            ),
            responses={200: S.obj({"deliveries": S.array(DELIVERY_SCHEMA)})},
        ),
    ),
    route(
        "GET",
        _BASE + "/{id}",
        get_delivery,
        ADMIN,
        Doc(
            "A logged webhook delivery (a dead one with its event)" + _EXT,
            responses={200: _DETAIL},
            path_params=_ID,
        ),
    ),
    route(
        "POST",
        _BASE + "/{id}/retry",
        retry_delivery,
        ADMIN,
        Doc(
            "Send a dead webhook delivery again (same id, attempts from zero)" + _EXT,
            body_required=False,
            responses={202: DELIVERY_SCHEMA},
            path_params=_ID,
        ),
    ),
]
