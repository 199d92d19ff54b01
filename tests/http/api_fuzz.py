"""A property-based fuzzer of the whole API from its served OpenAPI document (schemathesis).

Imported as a plain module by the fuzz tests of each backend. :func:`fuzz` generates requests
for every documented operation (positive and negative data), sends them to the ASGI app in
one event loop that lives for the whole run, and checks every response: no 5xx, a documented
status, a documented content type, and a body that matches the documented schema. With
``token`` set, requests carry ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.applications import Starlette

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


async def seed(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, dict[str, str]]:
    """Create a job, a dead-letter job, a workflow, a cron entry and a worker, so that fuzzed
    paths also name things that exist; returns path parameters by route prefix."""
    v1 = "/ojs/v1"
    # Fresh per run: a run on a shared store (NATS) may have told an earlier run's worker to
    # terminate, and a terminated worker is handed no job (graceful-shutdown extension).
    worker = f"seed-{uuid.uuid4().hex[:8]}"

    async def post(path: str, body: dict[str, Any]) -> Any:
        response = await client.post(v1 + path, json=body, headers=headers)
        assert response.status_code < 300, response.text
        return response.json()

    job = (await post("/jobs", {"type": "seed.job", "args": [1]}))["job"]["id"]
    dead = await post(
        "/jobs",
        {"type": "seed.dead", "args": [], "queue": "seed-dead", "retry": {"max_attempts": 1}},
    )
    [claimed] = (await post("/workers/fetch", {"queues": ["seed-dead"], "worker_id": worker}))[
        "jobs"
    ]
    await post("/workers/nack", {"job_id": claimed["id"], "error": {"message": "x"}})
    workflow = await post("/workflows", {"type": "chain", "steps": [{"type": "seed.step"}]})
    cron = {"name": "seed-cron", "expression": "0 0 * * *", "job_template": {"type": "seed.cron"}}
    await post("/cron", cron)
    await post("/workers/heartbeat", {"worker_id": worker, "active_jobs": []})
    return {
        "/ojs/v1/dead-letter": {"job_id": dead["job"]["id"]},
        "/ojs/v1/jobs": {"job_id": job},
        "/ojs/v1/workflows": {"workflow_id": workflow["workflow"]["id"]},
        "/ojs/v1/cron": {"name": "seed-cron"},
        "/ojs/v1/queues": {"name": "default"},
        "/ojs/v1/admin/workers": {"worker_id": worker},
    }


def _streams(document: dict[str, Any], method: str, path: str) -> bool:
    """Whether the operation answers a never-ending ``text/event-stream``."""
    responses = document["paths"][path][method.lower()]["responses"]
    return any("text/event-stream" in (r.get("content") or {}) for r in responses.values())


def fuzz(
    make_app: Callable[[], Starlette],
    *,
    token: str | None,
    examples_per_operation: int,
    seed_token: str | None = None,
    derandomize: bool = True,
) -> dict[str, int]:
    """Fuzz every operation of the app ``make_app()`` builds; returns requests sent by status.

    Each operation gets ``examples_per_operation`` examples of positive and negative data,
    and as many again with its path naming a seeded resource (created with ``seed_token``,
    default ``token``). ``derandomize=False`` explores new data on every run (for a longer
    run by hand); the test suite keeps the same examples from run to run.
    """
    loop = asyncio.new_event_loop()
    stack = contextlib.AsyncExitStack()
    app = make_app()
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    client = httpx.AsyncClient(transport=transport, base_url="http://ojs.test")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    seed_headers = {"Authorization": f"Bearer {seed_token or token}"} if seed_token or token else {}
    statuses: dict[str, int] = {}
    try:
        loop.run_until_complete(stack.enter_async_context(app.router.lifespan_context(app)))
        document = loop.run_until_complete(client.get("/ojs/v1/openapi.json", headers=headers))
        assert document.status_code == 200, document.text
        known = loop.run_until_complete(seed(client, seed_headers))
        schema = schemathesis.openapi.from_dict(document.json())

        def run(case: Any) -> None:
            kwargs = case.as_transport_kwargs(base_url="http://ojs.test", headers=headers)
            request = {
                "method": kwargs["method"],
                "url": kwargs["url"],
                "params": kwargs.get("params"),
                "headers": kwargs.get("headers"),
            }
            if "json" in kwargs:
                request["json"] = kwargs["json"]
            elif kwargs.get("data") is not None:
                data = kwargs["data"]
                request["content"] = data.encode() if isinstance(data, str) else data
            response = loop.run_until_complete(client.request(**request))
            key = f"{case.method} {case.path} {response.status_code}"
            statuses[key] = statuses.get(key, 0) + 1
            case.validate_response(response, checks=CHECKS)

        for result in schema.get_all_operations():
            op = result.ok()
            if _streams(document.json(), op.method, op.path):
                continue  # an event stream never ends; tests/http/test_http_stream.py has them
            options = [
                op.as_strategy(GenerationMode.POSITIVE),
                op.as_strategy(GenerationMode.NEGATIVE),
            ]
            params = next(
                (v for prefix, v in known.items() if op.path.startswith(prefix + "/")), None
            )
            wanted = {p.name for p in op.path_parameters} if params else set()
            if params and wanted <= set(params) | {"directive"}:
                fixed = {k: v for k, v in params.items() if k in wanted}
                options.append(op.as_strategy(GenerationMode.POSITIVE, path_parameters=fixed))
            examples = examples_per_operation * len(options) // 2

            @settings(
                max_examples=examples,
                deadline=None,
                database=None,
                derandomize=derandomize,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=st.one_of(options))
            def one(case: Any) -> None:
                run(case)

            one()
    finally:
        loop.run_until_complete(client.aclose())
        loop.run_until_complete(stack.aclose())
        # Let what the backend's client left behind (NATS subscriptions' tasks) finish.
        leftover = asyncio.all_tasks(loop)
        for task in leftover:
            task.cancel()
        if leftover:
            loop.run_until_complete(asyncio.gather(*leftover, return_exceptions=True))
        loop.close()
    return statuses
