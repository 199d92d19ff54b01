"""Manifest, health, events, the OpenAPI document, and the admin reset hook."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from ojs_core import versioning
from ojs_core.backend import EventFilter
from ojs_core.codec import event_to_wire
from ojs_core.health import probe_backend
from ojs_core.manifest import core_specs, official_extensions
from ojs_core.queue_strategy import DEFAULT_STRATEGY, STRATEGIES
from ojs_core.service import JobService
from ojs_core.tenant_scope import event_visible

from .. import schemas as S
from ..openapi import openapi_document
from ..responses import json_response
from ..routing import ADMIN, ANY_ROLE, PRODUCER, PUBLIC, Doc, Param, route
from ..settings import HttpSettings
from ._common import prefixed, query_int, service
from .tenants import tenant_header

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


#: The endpoint each official extension is used through, declared beside it.
_ENDPOINTS = {
    "backpressure": "PUT /ojs/v1/admin/queues/{name}/config",
    "schema-registry": "POST /ojs/v1/schemas",
    "rate-limiting": "GET /ojs/v1/rate-limits/{key}",
}
#: The official extensions only this binding serves (the core's are in
#: :func:`ojs_core.manifest.official_extensions`).
_HTTP_ONLY: list[dict[str, str]] = [
    {
        "name": "progress",
        "uri": "urn:ojs:ext:progress",
        "version": "1.0.0-rc.1",
        "endpoint": "PUT /ojs/v1/jobs/{id}/progress",
    },
    {
        "name": "durable-execution",
        "uri": "urn:ojs:ext:durable-execution",
        "version": "1.0.0-rc.1",
        "endpoint": "POST /ojs/v1/jobs/{id}/checkpoint",
    },
    {
        "name": "graceful-shutdown",
        "uri": "urn:ojs:ext:graceful-shutdown",
        "version": "1.0.0-rc.1",
        "endpoint": "POST /ojs/v1/workers/heartbeat",
    },
    {
        "name": "admin-api",
        "uri": "urn:ojs:ext:admin-api",
        "version": "1.0.0-rc.1",
        "endpoint": "GET /ojs/v1/admin/stats",
    },
]


def _official(svc: JobService) -> list[dict[str, Any]]:
    """The core's official extensions with their endpoints, then this binding's own."""
    core = official_extensions(svc.backend, svc.schemas)
    with_endpoints = [
        e | ({"endpoint": _ENDPOINTS[e["name"]]} if e["name"] in _ENDPOINTS else {}) for e in core
    ]
    return [*with_endpoints, *_HTTP_ONLY]


async def manifest(request: Request) -> Response:
    """The union of the conformance-spec and binding manifest shapes."""
    settings: HttpSettings = request.app.state.settings
    svc = service(request)
    backend = svc.backend.name
    registry = svc.schemas
    validating = registry.available and registry.mode != "off"
    official = _official(svc)
    if svc.bulk.idempotent:
        # Declared only where idempotency keys are stored (the IdempotencyStore capability).
        official.append(
            {
                "name": "bulk-operations",
                "uri": "urn:ojs:ext:bulk-operations",
                "version": "1.0.0-rc.1",
                "endpoint": "POST /ojs/v1/jobs/bulk",
                "max_batch_size": svc.bulk.max_items,
            }
        )
    if getattr(request.app.state, "webhooks", None) is not None:
        official.append(
            {
                "name": "webhooks",
                "uri": "urn:ojs:ext:webhooks",
                "version": "1.0.0-rc.1",
                "endpoint": "POST /ojs/v1/webhooks/subscriptions",
            }
        )
    if svc.pools.store is not None:
        # FS-001..004 hold where pools are stored (the PoolStore capability: memory, NATS):
        # atomic claims, multi-queue fetches, strategies across queues, the pool listing.
        official.append(
            {
                "name": "fair-scheduling",
                "uri": "urn:ojs:ext:fair-scheduling",
                "version": "1.0.0-rc.1",
                "endpoint": "GET /ojs/v1/admin/pools",
                "strategies": list(STRATEGIES),
                "default_strategy": DEFAULT_STRATEGY,
                "pools": True,
                "pool_isolation": True,
                "starvation_prevention": True,
                "tenant_fairness": svc.tenancy.supported and svc.tenancy.counts is not None,
                "stats_endpoint": "GET /ojs/v1/admin/scheduling/stats",
            }
        )
    experimental: list[dict[str, Any]] = [
        {
            "name": "batch-ack",
            "uri": "urn:ojs:ext:experimental:batch-ack",
            "version": "0.1.0",
            "endpoint": "POST /ojs/v1/workers/ack/batch",
        },
        {
            # Client-side codecs: args and meta are stored and returned exactly as
            # sent and never decoded here (tests/support/encryption_scenarios.py).
            "name": "encryption",
            "uri": "urn:ojs:ext:experimental:encryption",
            "version": "0.1.0",
        },
        versioning.manifest_entry(),
    ]
    tenancy = svc.tenancy
    if tenancy.supported and tenancy.counts is not None:
        # Declared where tenant configurations and per-tenant counts are stored (the
        # TenantStore and TenantCounts capabilities: memory, NATS).
        experimental.append(
            {
                "name": "multi-tenancy",
                "uri": "urn:ojs:ext:experimental:multi-tenancy",
                "version": "0.1.0",
                "endpoint": "GET /ojs/v1/admin/tenants",
                "header": "X-OJS-Tenant",
                "isolation_model": "hybrid",
                "fairness": ["round-robin", "weighted"],
                "default_tenant": tenancy.default,
                "tenant_required": tenancy.require,
                "limits": [
                    "max_concurrency",
                    "max_enqueue_rate",
                    "max_queue_depth",
                    "max_scheduled",
                ],
            }
        )
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
        "protocols": list(settings.protocols),
        "backend": backend,
        "capabilities": {**CAPABILITIES, "schema_validation": validating},
        # The core specifications implemented (urn:ojs:spec:*); extensions follow.
        "specs": core_specs(),
        "extensions": {
            "official": official,
            "experimental": experimental,
        },
        "schema_validation": validating,
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


async def _probe(request: Request) -> tuple[str, float, str | None]:
    """The backend's state (``ok``, ``degraded`` or ``down``), probe latency and error."""
    probe = await probe_backend(service(request).backend)
    return probe.status, probe.latency_ms, probe.error


async def health(request: Request) -> Response:
    """200 ``ok`` when the backend answers; 503 ``degraded`` when it does not.

    ``backend.status`` is ``ok``, ``degraded`` (it answered, slowly) or ``down``.
    """
    svc = service(request)
    settings: HttpSettings = request.app.state.settings
    backend, latency, error = await _probe(request)
    ok = backend != "down"
    uptime = (svc.now() - svc.started_at).total_seconds()
    body: dict[str, Any] = {
        "status": "ok" if ok else "degraded",
        "version": settings.implementation_version,
        "uptime_seconds": int(uptime),
        "backend": {"type": svc.backend.name, "status": backend, "latency_ms": latency},
    }
    if error:
        body["backend"]["error"] = error
    headers = {} if ok else {"Retry-After": "1"}
    return json_response(request, body, 200 if ok else 503, headers)


async def ready(request: Request) -> Response:
    """Whether to send traffic here: 503 while starting, draining or without a backend.

    Health says whether the process lives (restart it if not); readiness says whether it
    should get requests now (a load balancer's check).
    """
    phase = getattr(request.app.state, "phase", "ready")
    backend = "unknown"
    if phase == "ready":
        backend, _, _ = await _probe(request)
        if backend == "down":
            phase = "disconnected"
    body = {"ready": phase == "ready", "status": phase, "backend": {"status": backend}}
    if phase == "ready":
        return json_response(request, body)
    return json_response(request, body, 503, {"Retry-After": "1"})


def _csv(request: Request, *names: str) -> tuple[str, ...]:
    for name in names:
        raw = request.query_params.get(name)
        if raw:
            return tuple(p.strip() for p in raw.split(",") if p.strip())
    return ()


async def events(request: Request) -> Response:
    """Poll recent events: ``?types=&queues=&after=&limit=``."""
    maximum = service(request).limits.max_event_page
    limit = query_int(request, "limit", min(100, maximum), minimum=1, maximum=maximum)
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
    # A tenant-scoped caller sees its tenant's events only; the cursor still moves past the
    # others, so that it never reads them again.
    tenant = tenant_header(request)
    shown = [e for e in items if event_visible(service(request), e, tenant)]
    return json_response(
        request,
        {
            "events": [event_to_wire(e) | {"seq": e.seq} for e in shown],
            "cursor": str(cursor),
            "has_more": has_more,
        },
    )


async def reset(request: Request) -> Response:
    """Wipe all state; only routed when the server was started with reset enabled."""
    await service(request).reset()
    return json_response(request, {"reset": True})


async def openapi(request: Request) -> Response:
    """The OpenAPI 3.1 document of this app's routes (built once, then cached)."""
    state = request.app.state
    root = str(request.scope.get("root_path") or "").rstrip("/")
    cache: dict[str, dict[str, Any]] | None = getattr(state, "openapi_cache", None)
    if cache is None:
        cache = state.openapi_cache = {}
    if root not in cache:
        settings: HttpSettings = state.settings
        cache[root] = openapi_document(
            request.app.routes,
            title="Open Job Spec server",
            version=settings.implementation_version,
            server_url=root or "/",
            auth=getattr(state, "authenticate", None) is not None,
        )
    return json_response(request, cache[root])


_HEALTH = S.obj(
    {
        "status": {"type": "string", "enum": ["ok", "degraded"]},
        "backend": S.obj(
            {"type": S.STR, "status": {"type": "string", "enum": ["ok", "degraded", "down"]}}
        ),
    },
    {"version": S.STR, "uptime_seconds": S.INT},
)
_READY = S.obj(
    {
        "ready": S.BOOL,
        "status": {
            "type": "string",
            "enum": ["ready", "starting", "draining", "disconnected"],
        },
    },
    {"backend": S.ANY_OBJECT},
)


def routes(*, enable_reset: bool) -> list[BaseRoute]:
    """System routes; the reset hook only when enabled (otherwise it is a plain 404)."""
    out: list[BaseRoute] = [
        route(
            "GET",
            "/ojs/manifest",
            manifest,
            ANY_ROLE,
            Doc(
                "What this server implements",
                responses={
                    200: S.obj(
                        {
                            "specversion": S.STR,
                            "implementation": S.obj({"name": S.STR, "version": S.STR}),
                            "conformance_level": S.INT,
                            "capabilities": S.ANY_OBJECT,
                        }
                    )
                },
            ),
        ),
        route(
            "GET",
            "/ojs/v1/health",
            health,
            PUBLIC,
            Doc(
                "Liveness and backend reachability (503 when degraded)",
                responses={200: _HEALTH, 503: _HEALTH},
            ),
        ),
        route(
            "GET",
            "/ojs/v1/ready",
            ready,
            PUBLIC,
            Doc(
                "Readiness: 503 while starting, draining or without the backend",
                responses={200: _READY, 503: _READY},
            ),
        ),
        route(
            "GET",
            "/ojs/v1/events",
            events,
            PRODUCER,
            Doc(
                "Poll the event log",
                query=(
                    Param("types", S.STR, "comma-separated event types"),
                    Param("queues", S.STR, "comma-separated queues"),
                    Param("job_id", S.STR),
                    Param("after", {"type": "integer", "minimum": 0}, "sequence cursor"),
                    Param("limit", {"type": "integer", "minimum": 1}, "page size"),
                ),
                responses={
                    200: S.obj({"events": S.array(S.EVENT), "cursor": S.STR, "has_more": S.BOOL})
                },
            ),
        ),
        route(
            "GET",
            "/ojs/v1/openapi.json",
            openapi,
            ANY_ROLE,
            Doc(
                "This document",
                responses={200: S.obj({"openapi": S.STR, "paths": S.ANY_OBJECT})},
            ),
        ),
    ]
    if enable_reset:
        out.append(
            route(
                "POST",
                "/ojs/v1/admin/reset",
                reset,
                ADMIN,
                Doc(
                    "Wipe all state (test mode only)",
                    body=S.ANY_OBJECT,
                    body_required=False,
                    responses={200: S.obj({"reset": S.BOOL})},
                ),
            )
        )
    return out
