"""Request ids, readiness, health's backend status, and log lines that carry the ids.

The app runs over a MemoryBackend through httpx's ASGI transport; log lines are captured by a
handler with the server's own formatters (ojs_http.logging_setup) on the root logger.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import httpx
import pytest

from ojs_core import Client, JobContext, Worker
from ojs_core.logcontext import ContextFilter
from ojs_core.service import JobService
from ojs_core.states import JobState
from ojs_http import create_app
from ojs_http.logging_setup import JsonFormatter, TextFormatter, configure_logging
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


@contextmanager
def captured(formatter: logging.Formatter) -> Iterator[io.StringIO]:
    """Every record of every logger, formatted as ojs-server would, into a buffer."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield out
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


async def eventually(predicate: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not await predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


def json_lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]


# -- X-Request-Id ---------------------------------------------------------------------------


async def test_request_id_is_echoed_generated_or_replaced() -> None:
    async with serve() as client:
        echoed = await client.get(f"{V1}/health", headers={"X-Request-ID": "trace-42.a:b"})
        assert echoed.headers["X-Request-Id"] == "trace-42.a:b"
        generated = await client.get(f"{V1}/health")
        assert generated.headers["X-Request-Id"].startswith("req_")
        for bad in ("x" * 129, "two words", ""):
            r = await client.get(f"{V1}/jobs/nope", headers={"X-Request-ID": bad})
            assert r.status_code == 404  # a bad tracing header never fails a request
            rid = r.headers["X-Request-Id"]
            assert rid.startswith("req_")
            assert r.json()["error"]["request_id"] == rid
        longest = "y" * 128
        r = await client.get("/unrouted", headers={"X-Request-ID": longest})
        assert r.headers["X-Request-Id"] == longest


# -- readiness and health -------------------------------------------------------------------


async def test_ready_is_503_while_starting_and_draining() -> None:
    app = create_app(MemoryBackend(), HttpSettings(run_scheduler=False))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        starting = await client.get(f"{V1}/ready")
        assert starting.status_code == 503
        assert starting.json()["status"] == "starting"
        assert starting.headers["Retry-After"] == "1"
        async with app.router.lifespan_context(app):
            ready = await client.get(f"{V1}/ready")
            assert ready.status_code == 200
            assert ready.json() == {"ready": True, "status": "ready", "backend": {"status": "ok"}}
        draining = await client.get(f"{V1}/ready")
        assert draining.status_code == 503
        assert draining.json()["status"] == "draining"


async def test_health_reports_the_backend_status() -> None:
    async with serve() as client:
        body = (await client.get(f"{V1}/health")).json()
        assert body["status"] == "ok"
        assert body["backend"]["status"] == "ok"
        assert body["backend"]["type"] == "memory"


# -- logs -----------------------------------------------------------------------------------


async def test_json_access_log_carries_the_request_and_job_ids() -> None:
    with captured(JsonFormatter()) as out:
        async with serve(access_log=True) as client:
            r = await client.post(f"{V1}/jobs", json={"type": "a.b", "args": []})
            job_id = r.json()["job"]["id"]
            await client.get(f"{V1}/jobs/{job_id}", headers={"X-Request-ID": "trace-7"})
    lines = [line for line in json_lines(out) if line["logger"] == "ojs.access"]
    assert len(lines) == 2
    get = lines[1]
    assert get["request_id"] == "trace-7"
    assert get["ojs.job.id"] == job_id
    assert get["http.route"] == "/ojs/v1/jobs/{job_id}"
    assert get["http.status"] == 200
    assert get["level"] == "info"
    assert get["message"].startswith(f"GET /ojs/v1/jobs/{job_id} 200 ")
    assert lines[0]["request_id"].startswith("req_")
    assert "ojs.job.id" not in lines[0]


async def test_no_access_log_unless_asked() -> None:
    with captured(JsonFormatter()) as out:
        async with serve() as client:
            await client.get(f"{V1}/health")
    assert not [line for line in json_lines(out) if line["logger"] == "ojs.access"]


async def test_worker_failures_are_logged_with_the_job_ids() -> None:
    service = JobService(MemoryBackend())
    worker = Worker(service, "mail", concurrency=1)

    @worker.handler("mail.send")
    async def send(ctx: JobContext) -> None:
        logging.getLogger("app").info("sending")
        raise ConnectionError("smtp down")

    with captured(JsonFormatter()) as out:
        job = await Client(service).enqueue(
            "mail.send", [], queue="mail", retry={"max_attempts": 1}
        )
        assert job is not None
        worker.start()

        async def discarded() -> bool:
            return (await service.get(job.id)).state is JobState.DISCARDED

        await eventually(discarded)
        await worker.stop()
    lines = json_lines(out)
    app_line = next(line for line in lines if line["logger"] == "app")
    failure = next(line for line in lines if "failed" in line["message"])
    for line in (app_line, failure):
        assert line["ojs.job.id"] == job.id
        assert line["ojs.job.queue"] == "mail"
        assert line["ojs.worker.id"] == worker.worker_id
    assert failure["level"] == "warn"
    assert failure["ojs.job.type"] == "mail.send"
    assert failure["ojs.job.attempt"] == 1
    assert failure["error.type"] == "ConnectionError"
    assert failure["logger"] == "ojs.worker"
    assert "mail.send" in failure["message"]
    assert "attempt 1" in failure["message"]
    assert "ConnectionError: smtp down" in failure["message"]


async def test_text_lines_end_with_the_ids() -> None:
    with captured(TextFormatter()) as out:
        async with serve(access_log=True) as client:
            await client.get(f"{V1}/health", headers={"X-Request-ID": "trace-9"})
    line = next(x for x in out.getvalue().splitlines() if "ojs.access" in x)
    assert line.endswith("[request_id=trace-9]")


def test_configure_logging_refuses_an_unknown_format() -> None:
    with pytest.raises(ValueError, match="log format"):
        configure_logging("info", "xml")


async def test_worker_calls_name_the_job_and_worker_from_the_body() -> None:
    with captured(JsonFormatter()) as out:
        async with serve(access_log=True) as client:
            await client.post(f"{V1}/jobs", json={"type": "a.b", "args": []})
            fetch = {"queues": ["default"], "worker_id": "w-1"}
            job = (await client.post(f"{V1}/workers/fetch", json=fetch)).json()["jobs"][0]
            await client.post(f"{V1}/workers/ack", json={"job_id": job["id"], "worker_id": "w-1"})
            # An id that could forge a text line is left out of the log, not logged.
            forged = {"job_id": "x\nFAKE LINE", "worker_id": "w-1"}
            assert (await client.post(f"{V1}/workers/ack", json=forged)).status_code == 404
    access = [line for line in json_lines(out) if line["logger"] == "ojs.access"]
    fetched, acked, refused = access[1:]
    assert fetched["ojs.worker.id"] == "w-1"
    assert "ojs.job.id" not in fetched
    assert acked["ojs.job.id"] == job["id"]
    assert acked["ojs.worker.id"] == "w-1"
    assert "ojs.job.id" not in refused
    assert "FAKE" not in out.getvalue()


async def test_a_path_cannot_forge_a_text_log_line() -> None:
    # A percent-encoded newline in the path (decoded by the server) must stay on its line.
    forged = "x%0A2026-12-03 ERROR forged"
    with captured(TextFormatter()) as out:
        async with serve(access_log=True) as client:
            await client.get(f"{V1}/jobs/{forged}")
            await client.get(f"{V1}/nowhere/{forged}")
    lines = out.getvalue().splitlines()
    access = [line for line in lines if "ojs.access" in line and "forged" in line]
    assert len(access) == 2
    assert not [line for line in lines if line.startswith("2026-12-03 ERROR forged")]
    assert all("\\n2026-12-03 ERROR forged" in line for line in access)


async def test_lines_logged_while_a_job_route_runs_name_the_job() -> None:
    app = create_app(MemoryBackend(), HttpSettings(run_scheduler=False))
    probe = logging.getLogger("ojs.test.probe")
    # An observer runs inside the request: what it logs carries the route's job id.
    app.state.service.observers.add(lambda events: probe.info("observed %d", len(events)))
    transport = httpx.ASGITransport(app=app)
    with captured(JsonFormatter()) as out:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://test") as client,
        ):
            r = await client.post(f"{V1}/jobs", json={"type": "a.b", "args": []})
            job_id = r.json()["job"]["id"]
            assert (await client.delete(f"{V1}/jobs/{job_id}")).status_code == 200
    probes = [line for line in json_lines(out) if line["logger"] == "ojs.test.probe"]
    assert probes[-1].get("ojs.job.id") == job_id
