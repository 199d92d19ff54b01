"""``/ojs/v1/schemas``: the schema registry extension (``spec/ojs-schema-registry.md``) in the
spec's form (by job type and version) and the official SDK's (by URI), and the admin views the
official dashboard reads (``/ojs/v1/admin/schemas``)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ojs_core.errors import NotFoundError
from ojs_core.schema_registry import SchemaRecord, SchemaRegistry, semver_key

from .. import schemas as S
from ..responses import json_response, read_json
from ..routing import ADMIN, ANY_ROLE, Doc, Param, route
from ._common import pagination, query_int, service

__all__ = ["routes"]


def registry(request: Request) -> SchemaRegistry:
    """The service's schema registry."""
    return service(request).schemas


def _one(record: SchemaRecord) -> dict[str, Any]:
    # The spec wraps the record in "schema"; the SDK returns the body as it is: both readable.
    wire = record.to_wire()
    return {"schema": wire, **{k: v for k, v in wire.items() if k != "schema"}}


def _sorted(records: list[SchemaRecord]) -> list[SchemaRecord]:
    by_version = sorted(records, key=lambda r: semver_key(r.version), reverse=True)
    return sorted(by_version, key=lambda r: r.job_type)


async def list_schemas(request: Request) -> Response:
    """Every schema, by job type then newest version first, paginated."""
    limit = query_int(request, "limit", 50, minimum=1, maximum=1000)
    offset = query_int(request, "offset", 0, minimum=0, maximum=10**9)
    found = _sorted(await registry(request).records(fresh=True))
    page = [r.to_wire() for r in found[offset : offset + limit]]
    return json_response(
        request, {"schemas": page, "pagination": pagination(len(found), limit, offset)}
    )


async def register(request: Request) -> Response:
    """Register a schema (201); 409 for a taken type and version or URI."""
    record = await registry(request).register(await read_json(request))
    return json_response(request, _one(record), 201)


async def get_schema(request: Request) -> Response:
    """A schema by URI (the SDK), or a job type's latest version (the spec)."""
    return json_response(request, _one(await registry(request).find(request.path_params["ref"])))


async def versions(request: Request) -> Response:
    """A job type's versions, newest first."""
    found = await registry(request).versions(request.path_params["job_type"])
    return json_response(
        request,
        {
            "job_type": found[0].job_type,
            "versions": [
                {"version": r.version, "uri": r.uri, "created_at": r.to_wire()["created_at"]}
                | {"is_latest": i == 0}
                for i, r in enumerate(found)
            ],
        },
    )


async def delete_version(request: Request) -> Response:
    """Delete a job type's version; a URI with one ``/`` lands here too."""
    reg = registry(request)
    job_type, version = request.path_params["job_type"], request.path_params["version"]
    try:
        record = await reg.delete(job_type, version)
    except NotFoundError:
        record = await reg.delete(f"{job_type}/{version}")
    return json_response(request, {"deleted": True, **_one(record)})


async def delete_schema(request: Request) -> Response:
    """Delete a schema by URI."""
    record = await registry(request).delete(request.path_params["ref"])
    return json_response(request, {"deleted": True, **_one(record)})


async def admin_schemas(request: Request) -> Response:
    """Each job type's latest schema (the official dashboard's ``JobSchema[]``)."""
    latest: dict[str, SchemaRecord] = {}
    for record in _sorted(await registry(request).records(fresh=True)):
        latest.setdefault(record.job_type, record)
    return json_response(request, {"schemas": [r.to_wire() for r in latest.values()]})


async def admin_schema(request: Request) -> Response:
    """A job type's latest schema, or one version of it."""
    reg = registry(request)
    job_type = request.path_params["job_type"]
    version = request.path_params.get("version")
    found = await reg.versions(job_type)
    if version is not None:
        found = [r for r in found if r.version == version]
        if not found:
            raise NotFoundError("schema", f"{job_type}@{version}")
    body = found[0].to_wire()
    body["versions"] = [r.version for r in await reg.versions(job_type)]
    return json_response(request, body)


_RECORD = S.obj(
    {"uri": S.STR, "job_type": S.STR, "version": S.STR, "schema": S.ANY_OBJECT},
    {"type": S.STR, "created_at": S.STR},
)
_REGISTRATION = S.obj(
    {"version": S.STR, "schema": S.ANY_OBJECT},
    {"job_type": S.STR, "type": S.STR, "uri": S.STR},
)
_ONE = S.obj({"schema": _RECORD})

routes = [
    route(
        "GET",
        "/ojs/v1/schemas",
        list_schemas,
        ANY_ROLE,
        Doc(
            "List registered schemas",
            query=(
                Param("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
                Param("offset", {"type": "integer", "minimum": 0}),
            ),
            responses={200: S.obj({"schemas": S.array(_RECORD), "pagination": S.PAGINATION})},
        ),
    ),
    route(
        "POST",
        "/ojs/v1/schemas",
        register,
        ADMIN,
        Doc("Register a schema", body=_REGISTRATION, responses={201: _ONE}),
    ),
    route(
        "GET",
        "/ojs/v1/schemas/{job_type}/versions",
        versions,
        ANY_ROLE,
        Doc(
            "A job type's schema versions, newest first",
            responses={200: S.obj({"versions": S.array(S.ANY_OBJECT)})},
        ),
    ),
    route(
        "DELETE",
        "/ojs/v1/schemas/{job_type}/{version}",
        delete_version,
        ADMIN,
        Doc("Delete a schema version", responses={200: _ONE}),
    ),
    route(
        "GET",
        "/ojs/v1/schemas/{ref:path}",
        get_schema,
        ANY_ROLE,
        Doc("A schema by URI, or a job type's latest", responses={200: _ONE}),
    ),
    route(
        "DELETE",
        "/ojs/v1/schemas/{ref:path}",
        delete_schema,
        ADMIN,
        Doc("Delete a schema by URI", responses={200: _ONE}),
    ),
    route(
        "GET",
        "/ojs/v1/admin/schemas",
        admin_schemas,
        ADMIN,
        Doc(
            "Each job type's latest schema",
            responses={200: S.obj({"schemas": S.array(_RECORD)})},
        ),
    ),
    route(
        "GET",
        "/ojs/v1/admin/schemas/{job_type}",
        admin_schema,
        ADMIN,
        Doc("A job type's latest schema and its versions", responses={200: _RECORD}),
    ),
    route(
        "GET",
        "/ojs/v1/admin/schemas/{job_type}/{version}",
        admin_schema,
        ADMIN,
        Doc("One version of a job type's schema", responses={200: _RECORD}),
    ),
]
