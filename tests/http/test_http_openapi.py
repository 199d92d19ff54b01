"""The served OpenAPI document: in step with the router, and the API fuzzed from it (memory).

The NATS run of the same fuzzer is ``tests/nats/test_nats_api_fuzz.py``.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
import schemathesis
from api_fuzz import fuzz
from starlette.applications import Starlette

from ojs_http import create_app
from ojs_http.auth import ApiKeys
from ojs_http.routing import OJSRoute
from ojs_http.settings import HttpSettings
from ojs_memory import MemoryBackend

#: Examples per operation and data kind: bounded so that a backend's fuzzing takes seconds.
FUZZ_EXAMPLES = 4


def make_app(auth: Any = None) -> Starlette:
    settings = HttpSettings(enable_reset=False, run_scheduler=False)
    return create_app(MemoryBackend(), settings, auth=auth)


async def document(app: Starlette, headers: dict[str, str] | None = None) -> dict[str, Any]:
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
    ):
        response = await client.get("/ojs/v1/openapi.json", headers=headers or {})
        assert response.status_code == 200, response.text
        doc: dict[str, Any] = response.json()
        return doc


@pytest.mark.parametrize("reset", [False, True])
async def test_every_route_is_documented_and_every_documented_path_is_served(
    reset: bool,
) -> None:
    app = create_app(MemoryBackend(), HttpSettings(enable_reset=reset, run_scheduler=False))
    doc = await document(app)
    assert doc["openapi"] == "3.1.0"
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    served = {
        (r.method, re.sub(r":\w+}", "}", r.path))  # the document has no path convertors
        for r in app.routes
        if isinstance(r, OJSRoute) and r.doc.in_document
    }
    # Only the files of the reference page stay out of the document: they are not the API.
    hidden = {r.path for r in app.routes if isinstance(r, OJSRoute) and not r.doc.in_document}
    assert hidden == {"/ojs/docs", "/ojs/docs/{name}"}
    assert documented == served
    assert ("POST", "/ojs/v1/admin/reset") in documented if reset else True
    # Each documented operation really routes: the router matches it with its method.
    for method, path in documented:
        concrete = path.replace("{", "").replace("}", "")
        scope = {"type": "http", "method": method, "path": concrete, "root_path": ""}
        matched = [r for r in app.routes if r.matches(scope)[0].name == "FULL"]
        assert matched, (method, path)


async def test_the_document_is_a_valid_openapi_schema() -> None:
    doc = await document(make_app())
    schema = schemathesis.openapi.from_dict(doc)
    operations = [op.ok() for op in schema.get_all_operations()]
    assert len(operations) == sum(len(ops) for ops in doc["paths"].values())
    ids = [op for ops in doc["paths"].values() for op in ops.values()]
    assert len({o["operationId"] for o in ids}) == len(ids)


async def test_roles_and_security_are_documented_when_auth_is_on() -> None:
    doc = await document(make_app(ApiKeys.load("admin:KA")), {"Authorization": "Bearer KA"})
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    health = doc["paths"]["/ojs/v1/health"]["get"]
    assert health["security"] == []
    assert health["x-ojs-roles"] == ["public"]
    pause = doc["paths"]["/ojs/v1/queues/{name}/pause"]["post"]
    assert pause["security"] == [{"bearer": []}]
    assert pause["x-ojs-roles"] == ["admin"]


async def test_the_document_follows_a_mount_prefix() -> None:
    from starlette.routing import Mount

    inner = make_app()
    host = Starlette(routes=[Mount("/jobs-api", app=inner)])
    transport = httpx.ASGITransport(app=host)
    async with (
        inner.router.lifespan_context(inner),
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
    ):
        doc = (await client.get("/jobs-api/ojs/v1/openapi.json")).json()
    assert doc["servers"] == [{"url": "/jobs-api"}]


def successes(statuses: dict[str, int]) -> set[str]:
    return {k.rsplit(" ", 1)[0] for k in statuses if k.endswith((" 200", " 201"))}


def test_fuzz_memory_without_auth() -> None:
    statuses = fuzz(make_app, token=None, examples_per_operation=FUZZ_EXAMPLES)
    # The fuzzer reached real successes, whose bodies were checked against the schemas.
    ok = successes(statuses)
    assert {"POST /ojs/v1/jobs", "GET /ojs/v1/jobs/{job_id}", "GET /ojs/v1/cron/{name}"} <= ok, ok


def test_fuzz_memory_with_auth() -> None:
    keys = ApiKeys.load("admin:KA")
    statuses = fuzz(lambda: make_app(keys), token="KA", examples_per_operation=FUZZ_EXAMPLES)
    assert "POST /ojs/v1/jobs" in successes(statuses)


def test_fuzz_memory_with_a_role_that_may_not_do_everything() -> None:
    # A worker key: many operations answer 403, which must be documented and well-formed.
    keys = ApiKeys.load("admin:KA,worker:KW")

    def app() -> Starlette:
        return make_app(keys)

    statuses = fuzz(app, token="KW", seed_token="KA", examples_per_operation=2)
    assert any(k.endswith(" 403") for k in statuses)
    assert "POST /ojs/v1/workers/fetch" in successes(statuses)
