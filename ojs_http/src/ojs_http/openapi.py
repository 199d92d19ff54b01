"""The OpenAPI 3.1 document of the binding, generated from the route declarations.

Each :class:`~ojs_http.routing.OJSRoute` carries its :class:`~ojs_http.routing.Doc` (summary,
request body, query parameters, success responses) and its :class:`~ojs_http.routing.Access`;
this module turns the app's routes into ``paths``. Every operation also documents the errors
any route can answer (``4XX`` and ``503``, the OJS error body), and, when the app has an
authenticator, the bearer security scheme with the roles that may call it (``x-ojs-roles``).
Served at ``GET /ojs/v1/openapi.json``; ``tests/http/test_http_openapi.py`` keeps it in step
with the router and fuzzes the API from it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from starlette.routing import BaseRoute

from . import schemas as S
from .routing import OJSRoute

__all__ = ["EVENT_STREAM", "MEDIA_TYPES", "openapi_document"]

#: The response media types the binding negotiates (see ``HttpSettings.response_content_type``).
MEDIA_TYPES = ("application/json", "application/openjobspec+json")
#: The media type of the Server-Sent Events routes (``Doc(media_type=EVENT_STREAM)``).
EVENT_STREAM = "text/event-stream"
_PARAM = re.compile(r"{([^}:]+)(?::[^}]+)?}")


def _content(schema: dict[str, Any] | Any) -> dict[str, Any]:
    return {media: {"schema": dict(schema)} for media in MEDIA_TYPES}


def _operation(route: OJSRoute, auth: bool) -> dict[str, Any]:
    doc = route.doc
    op: dict[str, Any] = {
        "operationId": route.method.lower() + re.sub(r"\W+", "_", route.path).rstrip("_"),
        "summary": doc.summary,
        "x-ojs-roles": route.access.role_names() or ["public"],
    }
    params: list[dict[str, Any]] = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": dict(doc.path_params.get(name, {"type": "string", "minLength": 1})),
        }
        for name in _PARAM.findall(route.path)
    ]
    params.extend(
        {"name": p.name, "in": "query", "required": False, "schema": dict(p.schema)}
        | ({"description": p.description} if p.description else {})
        for p in doc.query
    )
    if params:
        op["parameters"] = params
    if doc.body is not None:
        op["requestBody"] = {
            "required": doc.body_required,
            "content": {"application/json": {"schema": dict(doc.body)}},
        }
    responses: dict[str, Any] = {
        str(status): {
            "description": "success",
            "content": (
                {doc.media_type: {"schema": dict(schema)}} if doc.media_type else _content(schema)
            ),
        }
        for status, schema in sorted(doc.responses.items())
    }
    if 503 not in doc.responses:
        responses["503"] = {"description": "backend unavailable", "content": _content(S.ERROR)}
    responses["4XX"] = {
        "description": "client error (OJS error body)",
        "content": _content(S.ERROR),
    }
    op["responses"] = responses
    if auth:
        op["security"] = [] if route.access.public else [{"bearer": []}]
    return op


def openapi_document(
    routes: Iterable[BaseRoute],
    *,
    title: str,
    version: str,
    server_url: str = "/",
    auth: bool = False,
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``routes`` (every :class:`OJSRoute` among them, but those
    whose ``Doc`` says ``in_document=False``)."""
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        if isinstance(route, OJSRoute) and route.doc.in_document:
            path = _PARAM.sub(r"{\1}", route.path)
            paths.setdefault(path, {})[route.method.lower()] = _operation(route, auth)
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": "The Open Job Spec HTTP binding as this server serves it.",
        },
        "servers": [{"url": server_url}],
        "paths": paths,
    }
    if auth:
        doc["components"] = {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key or JWT; x-ojs-roles lists who may call.",
                }
            }
        }
    return doc
