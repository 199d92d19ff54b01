"""``/ojs/v1/admin/tenants``: the multi-tenancy extension's admin API (spec §9.3, §10).

``GET /ojs/v1/admin/tenants`` lists the configured tenants with their stats,
``GET|PUT|DELETE /ojs/v1/admin/tenants/{id}`` reads, creates or replaces, and deregisters one,
``PUT /ojs/v1/admin/tenants/{id}/limits`` changes only its limits (with a ``reason``),
``GET .../{id}/stats`` its counts and limit use, ``GET .../{id}/jobs`` its jobs. The rules
are ``ojs_core.tenancy``. The statistics carry ``noisy_neighbor`` (spec §9.1,
``ojs_core.noisy_neighbors``); ``GET /ojs/v1/admin/noisy-tenants`` lists the tenants flagged now.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from ojs_core.admin import parse_job_query
from ojs_core.noisy_neighbors import NoisyNeighbors
from ojs_core.tenancy import parse_tenant_id

from .. import schemas as S
from ..responses import json_response, read_json
from ..routing import ADMIN, Doc, route
from ._common import pages, paginated, service, wire

__all__ = ["routes", "tenant_header"]

_EXT = " (extension urn:ojs:ext:experimental:multi-tenancy)"


def tenant_header(request: HTTPConnection) -> str | None:
    """The request's ``X-OJS-Tenant`` (checked), or ``None``: it scopes the request."""
    raw = request.headers.get("x-ojs-tenant")
    if raw is None:
        return None
    return parse_tenant_id(raw.strip(), "headers.X-OJS-Tenant")


def _noisy(request: Request) -> NoisyNeighbors:
    """The app's noisy-neighbour detector (made on first use for an app built without one)."""
    state = request.app.state
    found: NoisyNeighbors | None = getattr(state, "noisy_neighbors", None)
    if found is None:
        found = state.noisy_neighbors = NoisyNeighbors(service(request))
    return found


async def list_tenants(request: Request) -> Response:
    """Every configured tenant, with its stats (and noisy-neighbour signals)."""
    page, per_page = pages(request)
    tenancy = service(request).tenancy
    configs = await tenancy.configs()
    chosen = configs[(page - 1) * per_page : page * per_page]
    stats = await asyncio.gather(*(tenancy.stats(c.tenant_id) for c in chosen))
    assessed = await _noisy(request).assess()
    for cfg, one in zip(chosen, stats, strict=True):
        found = assessed.get(cfg.tenant_id)
        if found is not None:
            one["noisy_neighbor"] = found.to_wire()
    items = [c.to_wire() | {"stats": s} for c, s in zip(chosen, stats, strict=True)]
    return json_response(request, paginated(items, len(configs), page, per_page))


async def get_tenant(request: Request) -> Response:
    """One tenant's configuration; 404 when none was stored."""
    cfg = await service(request).tenancy.get(request.path_params["tenant_id"])
    return json_response(request, cfg.to_wire())


async def put_tenant(request: Request) -> Response:
    """Create (201) or replace (200) a tenant's configuration."""
    body = await read_json(request)
    cfg, created = await service(request).tenancy.put(request.path_params["tenant_id"], body)
    return json_response(request, cfg.to_wire(), 201 if created else 200)


async def put_limits(request: Request) -> Response:
    """Change a tenant's limits only (``null`` removes one); the rest is kept."""
    body = await read_json(request)
    cfg, created = await service(request).tenancy.put(
        request.path_params["tenant_id"], body, limits_only=True
    )
    return json_response(request, cfg.to_wire(), 201 if created else 200)


async def delete_tenant(request: Request) -> Response:
    """Deregister a tenant (its jobs stay)."""
    cfg = await service(request).tenancy.delete(request.path_params["tenant_id"])
    return json_response(request, {"deleted": True, "tenant": cfg.to_wire()})


async def tenant_stats(request: Request) -> Response:
    """Counts per state and limit use (spec §10.2)."""
    tenant = request.path_params["tenant_id"]
    body = await service(request).tenancy.stats(tenant)
    assessed = (await _noisy(request).assess()).get(tenant)
    body["noisy_neighbor"] = (
        assessed.to_wire() if assessed else {"detected": False, "signals": [], "since": None}
    )
    return json_response(request, body)


async def noisy_tenants(request: Request) -> Response:
    """The tenants flagged as noisy neighbours now, with their signals."""
    assessed = await _noisy(request).assess()
    flagged = [{"tenant_id": t, **a.to_wire()} for t, a in sorted(assessed.items()) if a.detected]
    return json_response(request, {"tenants": flagged})


async def tenant_jobs(request: Request) -> Response:
    """The tenant's jobs, newest first, by ``state``, ``queue`` and ``type`` (spec §10.3)."""
    return await scoped_jobs(request, request.path_params["tenant_id"])


async def scoped_jobs(request: Request, tenant: str) -> Response:
    """A page of ``tenant``'s jobs: the listing filtered by tenant (at most 10,000 jobs
    read; ``truncated`` says when the scan stopped there)."""
    page, per_page = pages(request)
    flt = parse_job_query(request.query_params).to_filter(
        dead_letter=None, limit=per_page, offset=(page - 1) * per_page
    )
    jobs, truncated = await service(request).tenancy.jobs(tenant, flt)
    body = paginated([wire(j) for j in jobs], len(jobs), page, per_page)
    body["pagination"].pop("total")
    body["truncated"] = truncated
    return json_response(request, body)


_TENANT = S.obj(
    {"tenant_id": S.STR, "limits": {"type": "object"}},
    {"fairness_weight": {"type": "number"}, "priority_boost": S.INT},
)
_CONFIG = S.obj(
    {},
    {
        "limits": {"type": "object"},
        "max_concurrency": S.INT,
        "max_queue_depth": S.INT,
        "max_scheduled": S.INT,
        "max_enqueue_rate": S.obj({"limit": S.INT, "period": S.STR}),
        "fairness_weight": {"type": "number"},
        "priority_boost": S.INT,
        "reason": S.STR,
    },
)
_OBJ: dict[str, Any] = {"type": "object"}

routes = [
    route(
        "GET",
        "/ojs/v1/admin/tenants",
        list_tenants,
        ADMIN,
        Doc("Every configured tenant with its stats" + _EXT, responses={200: _OBJ}),
    ),
    route(
        "GET",
        "/ojs/v1/admin/noisy-tenants",
        noisy_tenants,
        ADMIN,
        Doc(
            "The tenants flagged as noisy neighbours now, with their signals" + _EXT,
            responses={200: S.obj({"tenants": S.array(S.ANY_OBJECT)})},
        ),
    ),
    route(
        "GET",
        "/ojs/v1/admin/tenants/{tenant_id}",
        get_tenant,
        ADMIN,
        Doc("A tenant's configuration" + _EXT, responses={200: _TENANT}),
    ),
    route(
        "PUT",
        "/ojs/v1/admin/tenants/{tenant_id}",
        put_tenant,
        ADMIN,
        Doc(
            "Create or replace a tenant's configuration" + _EXT,
            body=_CONFIG,
            responses={200: _TENANT, 201: _TENANT},
        ),
    ),
    route(
        "PUT",
        "/ojs/v1/admin/tenants/{tenant_id}/limits",
        put_limits,
        ADMIN,
        Doc(
            "Change a tenant's limits (201 when it creates the tenant)" + _EXT,
            body=_CONFIG,
            responses={200: _TENANT, 201: _TENANT},
        ),
    ),
    route(
        "DELETE",
        "/ojs/v1/admin/tenants/{tenant_id}",
        delete_tenant,
        ADMIN,
        Doc("Deregister a tenant" + _EXT, responses={200: _OBJ}),
    ),
    route(
        "GET",
        "/ojs/v1/admin/tenants/{tenant_id}/stats",
        tenant_stats,
        ADMIN,
        Doc("A tenant's job counts and limit use" + _EXT, responses={200: _OBJ}),
    ),
    route(
        "GET",
        "/ojs/v1/admin/tenants/{tenant_id}/jobs",
        tenant_jobs,
        ADMIN,
        Doc("A tenant's jobs" + _EXT, responses={200: _OBJ}),
    ),
]
