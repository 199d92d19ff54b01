"""Bounded requests over HTTP: each limit answers a clear 4xx naming it; the test-mode hook."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from ojs_core.limits import Limits
from ojs_http import create_app
from ojs_http.settings import HttpSettings
from ojs_memory import MemoryBackend

V1 = "/ojs/v1"


@asynccontextmanager
async def serve(**settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(MemoryBackend(), HttpSettings(run_scheduler=False, **settings))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        yield client


def job() -> dict[str, Any]:
    return {"type": "t.job", "args": []}


def error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    err: dict[str, Any] = response.json()["error"]
    return err


async def test_batch_over_the_limit_is_413_with_the_maximum() -> None:
    async with serve(limits=Limits(max_batch_jobs=2)) as client:
        ok = await client.post(f"{V1}/jobs/batch", json={"jobs": [job(), job()]})
        assert ok.status_code == 201
        response = await client.post(f"{V1}/jobs/batch", json={"jobs": [job()] * 3})
        err = error(response, 413)
        assert err["code"] == "batch_size_exceeded"
        assert err["max_batch_size"] == 2
        assert err["details"]["batch_size"] == 3
        assert response.headers["X-OJS-Max-Batch-Size"] == "2"
        stats = await client.get(f"{V1}/queues/default/stats")
        assert stats.json()["stats"]["available"] == 2  # nothing of the refused batch


async def test_fetch_count_and_queues_are_bounded() -> None:
    async with serve(limits=Limits(max_fetch_count=3, max_fetch_queues=2)) as client:
        fine = await client.post(f"{V1}/workers/fetch", json={"queues": ["a", "b"], "count": 3})
        assert fine.status_code == 200
        err = error(
            await client.post(f"{V1}/workers/fetch", json={"queues": ["a"], "count": 4}), 400
        )
        assert err["details"]["maximum"] == 3
        assert err["details"]["validation_errors"][0]["path"] == "count"
        err = error(await client.post(f"{V1}/workers/fetch", json={"queues": ["a", "b", "c"]}), 400)
        assert err["details"]["maximum"] == 2
        assert err["details"]["validation_errors"][0]["path"] == "queues"


async def test_heartbeat_active_jobs_are_bounded() -> None:
    async with serve(limits=Limits(max_heartbeat_jobs=2)) as client:
        body = {"worker_id": "w1", "active_jobs": ["a", "b", "c"]}
        err = error(await client.post(f"{V1}/workers/heartbeat", json=body), 400)
        assert err["details"]["maximum"] == 2
        body["active_jobs"] = ["a", "b"]
        assert (await client.post(f"{V1}/workers/heartbeat", json=body)).status_code == 200


async def test_workflow_steps_are_bounded() -> None:
    async with serve(limits=Limits(max_workflow_steps=2)) as client:
        steps = [{"id": f"s{i}", "type": "t", "args": []} for i in range(3)]
        err = error(await client.post(f"{V1}/workflows", json={"steps": steps}), 400)
        assert err["code"] == "invalid_workflow"
        assert err["details"]["maximum"] == 2


async def test_event_page_is_bounded() -> None:
    async with serve(limits=Limits(max_event_page=5)) as client:
        assert (await client.get(f"{V1}/events?limit=5")).status_code == 200
        err = error(await client.get(f"{V1}/events?limit=6"), 400)
        assert "between 1 and 5" in err["message"]


async def test_body_size_is_bounded() -> None:
    async with serve(max_body_bytes=100) as client:
        err = error(await client.post(f"{V1}/jobs", json=job() | {"meta": {"x": "y" * 200}}), 413)
        assert "100 bytes" in err["message"]


async def test_test_directive_needs_test_mode() -> None:
    for test_directives, expected in ((False, "running"), (True, "terminate")):
        async with serve(test_directives=test_directives) as client:
            await client.post(f"{V1}/jobs", json=job() | {"meta": {"test_directive": "terminate"}})
            fetched = await client.post(
                f"{V1}/workers/fetch", json={"queues": ["default"], "worker_id": "w1"}
            )
            job_id = fetched.json()["jobs"][0]["id"]
            beat = await client.post(
                f"{V1}/workers/heartbeat", json={"worker_id": "w1", "active_jobs": [job_id]}
            )
            assert beat.json()["state"] == expected
