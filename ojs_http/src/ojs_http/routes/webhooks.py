"""``/ojs/v1/webhooks/subscriptions``: the webhooks extension's management API (admin only).

Create, list, read, update and delete subscriptions; send a test event; rotate the signing
secret; list a subscription's recent and dead deliveries. The secret appears in the create and
rotate answers only. Served when the backend stores webhooks and they are enabled; otherwise
every route answers 422 ``unsupported``. A request with ``X-OJS-Tenant`` is tenant-scoped (spec
§9.3): the subscription it creates receives only that tenant's events, and it sees and changes
only its tenant's subscriptions (another tenant's is 404). Creating and deleting publish
``webhook.subscription.created`` / ``.deleted``. The delivery log routes are
``routes/webhook_deliveries.py``. See ``docs/webhooks.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
from starlette.requests import Request
from starlette.responses import Response

from ojs_core.errors import NotFoundError, UnsupportedError, ValidationError
from ojs_core.webhook_events import SUBSCRIPTION_CREATED, SUBSCRIPTION_DELETED, subscription_event
from ojs_core.webhook_log import visible
from ojs_core.webhook_store import WebhookStore
from ojs_core.webhook_urls import check_resolved, check_url
from ojs_core.webhooks import (
    Subscription,
    new_secret,
    new_subscription_id,
    parse_events,
    parse_filter,
    parse_metadata,
    parse_timeout,
)

from .. import schemas as S
from ..responses import json_response, read_json
from ..routing import ADMIN, Doc, Param, route
from ..webhook_runner import WebhookRunner
from ._common import body_object, query_int
from .tenants import tenant_header

__all__ = ["DELIVERY_SCHEMA", "routes", "runner_of"]

_FIELDS = frozenset({"url", "events", "filter", "metadata", "active", "timeout_ms"})
_BASE = "/ojs/v1/webhooks/subscriptions"


def runner_of(request: Request) -> tuple[WebhookRunner, WebhookStore]:
    """The app's webhook runner and store; 422 ``unsupported`` when webhooks are off."""
    runner: WebhookRunner | None = getattr(request.app.state, "webhooks", None)
    if runner is None:
        raise UnsupportedError(
            "webhooks are not available on this server (disabled, or the backend does not "
            "store them)"
        )
    return runner, runner.store


async def _subscription(request: Request) -> tuple[WebhookRunner, Subscription]:
    runner, store = runner_of(request)
    sub_id = request.path_params["id"]
    sub = await store.get_subscription(sub_id)
    # Another tenant's subscription is not revealed: the same 404 as an unknown id.
    if sub is None or not visible(sub, tenant_header(request)):
        raise NotFoundError("subscription", sub_id)
    return runner, sub


def _check_fields(body: Mapping[str, Any]) -> None:
    for key in body:
        if key not in _FIELDS:
            raise ValidationError(
                "unknown field (url, events, filter, metadata, active and timeout_ms only)",
                path=str(key),
            )
    active = body.get("active", True)
    if not isinstance(active, bool):
        raise ValidationError("must be a boolean", path="active")


async def create(request: Request) -> Response:
    """A new subscription; the answer carries its secret, shown this once."""
    runner, store = runner_of(request)
    body = body_object(await read_json(request))
    _check_fields(body)
    if "url" not in body:
        raise ValidationError("is required", path="url")
    if "events" not in body:
        raise ValidationError("is required", path="events")
    url = await _check_url(runner, body["url"])
    events = parse_events(body["events"])
    queues, job_types = parse_filter(body.get("filter"))
    metadata = parse_metadata(body.get("metadata"))
    timeout_ms = parse_timeout(body.get("timeout_ms"))
    now = runner.clock.now()
    sub = Subscription(
        id=new_subscription_id(now),
        url=url,
        events=events,
        queues=queues,
        job_types=job_types,
        active=body.get("active", True),
        metadata=metadata,
        created_at=now,
        updated_at=now,
        secret=new_secret(),
        tenant_id=tenant_header(request),
        timeout_ms=timeout_ms,
    )
    await store.put_subscription(sub)
    await runner.emit([subscription_event(SUBSCRIPTION_CREATED, sub, now)])
    return json_response(request, sub.to_wire(with_secret=True), status=201)


async def _check_url(runner: WebhookRunner, value: Any) -> str:
    """The URL if the server may target it (resolved too, unless private targets are
    allowed), else a 400 naming ``url``."""
    sender = runner.sender
    url = check_url(value, allow_http=sender.allow_http, allow_private=sender.allow_private)
    if not sender.allow_private:
        await check_resolved(url)
    return url


async def list_subscriptions(request: Request) -> Response:
    """Every subscription, oldest first, without secrets."""
    _, store = runner_of(request)
    tenant = tenant_header(request)
    subs = [s for s in await store.list_subscriptions() if visible(s, tenant)]
    return json_response(request, {"subscriptions": [s.to_wire() for s in subs]})


async def get_subscription(request: Request) -> Response:
    """One subscription, without its secret."""
    _, sub = await _subscription(request)
    return json_response(request, sub.to_wire())


async def update(request: Request) -> Response:
    """Change the URL, events, filter, metadata or ``active`` (absent fields stay)."""
    runner, sub = await _subscription(request)
    body = body_object(await read_json(request))
    _check_fields(body)
    changes: dict[str, Any] = {}
    if "url" in body:
        changes["url"] = await _check_url(runner, body["url"])
    if "events" in body:
        changes["events"] = parse_events(body["events"])
    if "filter" in body:
        changes["queues"], changes["job_types"] = parse_filter(body["filter"])
    if "metadata" in body:
        changes["metadata"] = parse_metadata(body["metadata"])
    if "active" in body:
        changes["active"] = body["active"]
    if "timeout_ms" in body:  # null: back to the server's timeout
        changes["timeout_ms"] = parse_timeout(body["timeout_ms"])
    now = runner.clock.now()
    # Applied to the version stored when the write happens (compare-and-swap): a
    # concurrent change (a rotation) is kept, and a deleted subscription stays deleted.
    updated = await runner.store.change_subscription(
        sub.id, lambda current: attrs.evolve(current, **changes, updated_at=now)
    )
    if updated is None:
        raise NotFoundError("subscription", sub.id)
    return json_response(request, updated.to_wire())


async def delete(request: Request) -> Response:
    """Remove a subscription; its pending deliveries are cancelled unsent."""
    runner, sub = await _subscription(request)
    if not await runner.store.delete_subscription(sub.id):
        raise NotFoundError("subscription", sub.id)
    await runner.emit([subscription_event(SUBSCRIPTION_DELETED, sub, runner.clock.now())])
    return json_response(request, {"id": sub.id, "deleted": True})


async def test(request: Request) -> Response:
    """Send a ``webhook.test`` event now and report what the endpoint answered."""
    runner, sub = await _subscription(request)
    return json_response(request, await runner.test(sub))


async def rotate_secret(request: Request) -> Response:
    """A new secret, shown this once; the old one keeps signing for 24 hours."""
    runner, sub = await _subscription(request)
    now = runner.clock.now()
    rotated = await runner.store.change_subscription(sub.id, lambda current: current.rotated(now))
    if rotated is None:
        raise NotFoundError("subscription", sub.id)
    return json_response(request, rotated.to_wire(with_secret=True))


async def deliveries(request: Request) -> Response:
    """The subscription's recent and dead deliveries, the latest first."""
    runner, sub = await _subscription(request)
    limit = query_int(request, "limit", 50, minimum=1, maximum=200)
    found = await runner.store.list_deliveries(sub.id, limit)
    return json_response(
        request, {"subscription_id": sub.id, "deliveries": [d.to_wire() for d in found]}
    )


_FILTER = S.obj({}, {"queues": S.array(S.STR), "job_types": S.array(S.STR)})
_SUB = S.obj(
    {
        "id": S.STR,
        "url": S.STR,
        "events": S.array(S.STR),
        "active": S.BOOL,
        "created_at": S.TS,
    },
    {
        "filter": _FILTER,
        "metadata": S.ANY_OBJECT,
        "updated_at": S.TS,
        "previous_secret_expires_at": S.TS,
        "tenant_id": S.STR,
        "timeout_ms": S.INT,
    },
)
_SUB_WITH_SECRET = S.obj({**_SUB["properties"], "secret": S.STR}, {})
_REQUEST = S.obj(
    {},
    {
        "url": S.STR,
        "events": S.array(S.STR),
        "filter": _FILTER,
        "metadata": S.ANY_OBJECT,
        "active": S.BOOL,
        "timeout_ms": {"type": ["integer", "null"], "minimum": 5000, "maximum": 60000},
    },
)
DELIVERY_SCHEMA = S.obj(
    {"id": S.STR, "subscription_id": S.STR, "status": S.STR, "attempt": S.INT},
    {
        "event_id": S.STR,
        "event_type": S.STR,
        "next_at": S.TS,
        "last_status_code": {"type": ["integer", "null"]},
        "last_error": {"type": ["string", "null"]},
        "created_at": S.TS,
        "updated_at": S.TS,
    },
)
_TEST = S.obj(
    {"success": S.BOOL, "status_code": {"type": ["integer", "null"]}},
    {
        "response_time_ms": S.INT,
        "response_body": S.STR,
        "error": {"type": ["string", "null"]},
        "delivery_id": S.STR,
    },
)
_ID = {"id": S.STR}
_EXT = " (extension urn:ojs:ext:webhooks)"

routes = [
    route(
        "POST",
        _BASE,
        create,
        ADMIN,
        Doc(
            "Create a webhook subscription; the secret is returned this once" + _EXT,
            body=_REQUEST,
            responses={201: _SUB_WITH_SECRET},
        ),
    ),
    route(
        "GET",
        _BASE,
        list_subscriptions,
        ADMIN,
        Doc(
            "Every webhook subscription (without secrets)" + _EXT,
            responses={200: S.obj({"subscriptions": S.array(_SUB)})},
        ),
    ),
    route(
        "GET",
        _BASE + "/{id}",
        get_subscription,
        ADMIN,
        Doc("A webhook subscription (without its secret)", responses={200: _SUB}, path_params=_ID),
    ),
    route(
        "PATCH",
        _BASE + "/{id}",
        update,
        ADMIN,
        Doc(
            "Update a webhook subscription (absent fields stay)",
            body=_REQUEST,
            responses={200: _SUB},
            path_params=_ID,
        ),
    ),
    route(
        "DELETE",
        _BASE + "/{id}",
        delete,
        ADMIN,
        Doc(
            "Delete a webhook subscription (its pending deliveries are cancelled)",
            responses={200: S.obj({"id": S.STR, "deleted": S.BOOL})},
            path_params=_ID,
        ),
    ),
    route(
        "POST",
        _BASE + "/{id}/test",
        test,
        ADMIN,
        Doc(
            "Send a webhook.test event to the endpoint now",
            body_required=False,
            responses={200: _TEST},
            path_params=_ID,
        ),
    ),
    route(
        "POST",
        _BASE + "/{id}/rotate-secret",
        rotate_secret,
        ADMIN,
        Doc(
            "Rotate the signing secret (returned this once; the old one signs for 24 hours)",
            body_required=False,
            responses={200: _SUB_WITH_SECRET},
            path_params=_ID,
        ),
    ),
    route(
        "GET",
        _BASE + "/{id}/deliveries",
        deliveries,
        ADMIN,
        Doc(
            "A webhook subscription's recent and dead deliveries, the latest first",
            query=(Param("limit", {"type": "integer", "minimum": 1, "maximum": 200}),),
            responses={
                200: S.obj({"subscription_id": S.STR, "deliveries": S.array(DELIVERY_SCHEMA)})
            },
            path_params=_ID,
        ),
    ),
]
