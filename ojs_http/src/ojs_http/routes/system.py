"""Manifest, health, events, and the admin reset hook."""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ojs_core.backend import EventFilter
from ojs_core.codec import event_to_wire
from ojs_core.errors import OJSError

from ..responses import json_response
from ..settings import HttpSettings
from ._common import prefixed, query_int, service

__all__ = ["routes"]

CAPABILITIES = {
    "batch_enqueue": True,
    "cron_jobs": True,
    "dead_letter": True,
    "delayed_jobs": True,
    "job_ttl": True,
    "priority_queues": True,
    "rate_limiting": True,
    "schema_validation": False,
    "unique_jobs": True,
    "workflows": True,
    "pause_resume": True,
}


async def manifest(request: Request) -> Response:
    """The union of the conformance-spec and binding manifest shapes."""
    settings: HttpSettings = request.app.state.settings
    backend = service(request).backend.name
    body: dict[str, Any] = {
        "specversion": "1.0",
        "ojs_version": "1.0",
        "implementation": {
            "name": settings.implementation_name,
            "version": settings.implementation_version,
            "language": "python",
            "repository": "https://github.com/openjobspec/ojs-python",
        },
        "conformance_level": 4,
        "conformance_tier": "runtime",
        "protocols": ["http"],
        "backend": backend,
        "capabilities": CAPABILITIES,
        "extensions": {
            "official": [
                {"name": "retry", "uri": "urn:ojs:ext:retry", "version": "1.0"},
                {"name": "dead-letter", "uri": "urn:ojs:ext:dead-letter", "version": "1.0"},
                {"name": "unique-jobs", "uri": "urn:ojs:ext:unique-jobs", "version": "1.0"},
                {"name": "cron", "uri": "urn:ojs:ext:cron", "version": "1.0"},
                {"name": "workflows", "uri": "urn:ojs:ext:workflows", "version": "1.0"},
            ],
            "experimental": [],
        },
        "schema_validation": False,
        "unique_job_strength": "strong",
        "unique_jobs": {
            "strength": "strong",
            "strategies": ["reject", "replace", "replace_except_schedule", "ignore"],
        },
        "test_suite_version": "0.4.0",
        "endpoints": {
            "base_url": prefixed(request, "/ojs/v1"),
            "manifest": prefixed(request, "/ojs/manifest"),
            "health": prefixed(request, "/ojs/v1/health"),
        },
    }
    return json_response(request, body)


async def health(request: Request) -> Response:
    """200 ``ok`` when the backend answers; 503 ``degraded`` when it does not."""
    svc = service(request)
    settings: HttpSettings = request.app.state.settings
    started = time.perf_counter()
    try:
        status = await svc.backend.health()
        ok, error = status.ok, status.error
    except OJSError as exc:
        ok, error = False, exc.message
    latency = round((time.perf_counter() - started) * 1000, 3)
    uptime = (svc.now() - svc.started_at).total_seconds()
    body: dict[str, Any] = {
        "status": "ok" if ok else "degraded",
        "version": settings.implementation_version,
        "uptime_seconds": int(uptime),
        "backend": {
            "type": svc.backend.name,
            "status": "connected" if ok else "disconnected",
            "latency_ms": latency,
        },
    }
    if error:
        body["backend"]["error"] = error
    headers = {} if ok else {"Retry-After": "1"}
    return json_response(request, body, 200 if ok else 503, headers)


def _csv(request: Request, *names: str) -> tuple[str, ...]:
    for name in names:
        raw = request.query_params.get(name)
        if raw:
            return tuple(p.strip() for p in raw.split(",") if p.strip())
    return ()


async def events(request: Request) -> Response:
    """Poll recent events: ``?types=&queues=&after=&limit=``."""
    limit = query_int(request, "limit", 100, minimum=1, maximum=1000)
    after = query_int(request, "after", 0, minimum=0, maximum=2**62)
    flt = EventFilter(
        after=after,
        types=_csv(request, "types", "event_types", "type"),
        queues=_csv(request, "queues", "queue"),
        job_id=request.query_params.get("job_id") or None,
        limit=limit + 1,
    )
    items = await service(request).events(flt)
    has_more = len(items) > limit
    items = items[:limit]
    cursor = items[-1].seq if items else after
    return json_response(
        request,
        {
            "events": [event_to_wire(e) | {"seq": e.seq} for e in items],
            "cursor": str(cursor),
            "has_more": has_more,
        },
    )


async def reset(request: Request) -> Response:
    """Wipe all state; only routed when the server was started with reset enabled."""
    await service(request).reset()
    return json_response(request, {"reset": True})


def routes(*, enable_reset: bool) -> list[BaseRoute]:
    """System routes; the reset hook only when enabled (otherwise it is a plain 404)."""
    out: list[BaseRoute] = [
        Route("/ojs/manifest", manifest, methods=["GET"]),
        Route("/ojs/v1/health", health, methods=["GET"]),
        Route("/ojs/v1/events", events, methods=["GET"]),
    ]
    if enable_reset:
        out.append(Route("/ojs/v1/admin/reset", reset, methods=["POST"]))
    return out
