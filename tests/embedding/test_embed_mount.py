"""The OJS app mounted inside a host Starlette app, under a prefix and at the root.

Starlette does not run a mounted app's lifespan; the host enters ``ojs_http.lifespan`` from its
own. The slow test serves the host app with Hypercorn and runs the official level-0
conformance suite through the mount.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from embed_support import eventually
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

import ojs_http
from ojs_core import Client
from ojs_core.states import JobState
from ojs_http import HttpSettings, create_app
from ojs_http.cli import mounted, parse_args
from ojs_memory import MemoryBackend

SHARED = Path(os.environ.get("OJS_SHARED", Path(__file__).resolve().parents[2] / ".." / "shared"))
RUNNER = SHARED / "conformance" / "ojs_conformance.py"
SUITES = SHARED / "conformance" / "suites"


class TrackingBackend(MemoryBackend):
    """A MemoryBackend that counts open() and close() calls."""

    def __init__(self) -> None:
        super().__init__()
        self.opened = 0
        self.closed = 0

    async def open(self) -> None:
        self.opened += 1

    async def close(self) -> None:
        self.closed += 1


def host_app(ojs_app: Starlette, prefix: str) -> Starlette:
    """A host application with its own route and the OJS app mounted at ``prefix``."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with ojs_http.lifespan(ojs_app):
            yield

    async def healthz(request: Request) -> PlainTextResponse:
        return PlainTextResponse("host ok")

    return Starlette(
        routes=[Route("/healthz", healthz), Mount(prefix, app=ojs_app)], lifespan=lifespan
    )


@contextlib.asynccontextmanager
async def running(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """Run ``app``'s lifespan (as a server would) and give an HTTP client for it."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://host") as client,
    ):
        yield client


async def test_mounted_under_a_prefix() -> None:
    backend = TrackingBackend()
    ojs_app = create_app(backend)
    host = host_app(ojs_app, "/jobs-api")
    async with running(host) as http:
        assert backend.opened == 1  # the host lifespan ran the OJS lifespan
        created = await http.post("/jobs-api/ojs/v1/jobs", json={"type": "a.job", "args": [1]})
        assert created.status_code == 201, created.text
        job_id = created.json()["job"]["id"]
        assert created.headers["Location"] == f"/jobs-api/ojs/v1/jobs/{job_id}"
        fetched = await http.get(created.headers["Location"])
        assert fetched.status_code == 200
        assert fetched.json()["job"]["args"] == [1]

        workflow = await http.post(
            "/jobs-api/ojs/v1/workflows",
            json={"type": "chain", "steps": [{"type": "a.job", "args": []}]},
        )
        assert workflow.status_code == 201, workflow.text
        wid = workflow.json()["workflow"]["id"]
        assert workflow.headers["Location"] == f"/jobs-api/ojs/v1/workflows/{wid}"
        cron = await http.post(
            "/jobs-api/ojs/v1/cron",
            json={"name": "tick", "expression": "* * * * *", "job_template": {"type": "a.job"}},
        )
        assert cron.status_code == 201, cron.text
        assert cron.headers["Location"] == "/jobs-api/ojs/v1/cron/tick"

        manifest = (await http.get("/jobs-api/ojs/manifest")).json()
        assert manifest["endpoints"] == {
            "base_url": "/jobs-api/ojs/v1",
            "manifest": "/jobs-api/ojs/manifest",
            "health": "/jobs-api/ojs/v1/health",
        }
        missing = await http.get("/jobs-api/ojs/v1/nope")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "not_found"
        assert missing.headers["OJS-Version"] == "1.0"
        assert (await http.get("/healthz")).text == "host ok"
        outside = await http.get("/ojs/v1/health")  # not under the prefix: the host's 404
        assert outside.status_code == 404
        assert "OJS-Version" not in outside.headers

        # The scheduler runs while the host runs: a delayed job becomes available.
        delayed = await http.post(
            "/jobs-api/ojs/v1/jobs", json={"type": "a.job", "args": [], "options": {"delay_ms": 20}}
        )
        delayed_id = delayed.json()["job"]["id"]
        assert delayed.json()["job"]["state"] == "scheduled"

        async def promoted() -> bool:
            job = await backend.get_job(delayed_id)
            return job is not None and job.state is JobState.AVAILABLE

        await eventually(promoted)
    assert backend.closed == 1


async def test_mounted_at_the_root_next_to_host_routes() -> None:
    backend = TrackingBackend()
    ojs_app = create_app(backend)
    host = host_app(ojs_app, "/")
    async with running(host) as http:
        assert (await http.get("/healthz")).text == "host ok"
        created = await http.post("/ojs/v1/jobs", json={"type": "a.job", "args": []})
        assert created.status_code == 201, created.text
        job_id = created.json()["job"]["id"]
        assert created.headers["Location"] == f"/ojs/v1/jobs/{job_id}"
        assert (await http.get("/ojs/manifest")).json()["endpoints"]["base_url"] == "/ojs/v1"
        assert (await http.get("/ojs/v1/health")).json()["status"] == "ok"
    assert (backend.opened, backend.closed) == (1, 1)


async def test_an_open_backend_given_with_manage_backend_false_stays_open() -> None:
    backend = TrackingBackend()
    await backend.open()
    ojs_app = create_app(backend, manage_backend=False)
    host = host_app(ojs_app, "/jobs-api")
    async with running(host) as http:
        created = await http.post("/jobs-api/ojs/v1/jobs", json={"type": "a.job", "args": []})
        assert created.status_code == 201
    assert (backend.opened, backend.closed) == (1, 0)  # opened by us, never by the app
    job = await backend.get_job(created.json()["job"]["id"])
    assert job is not None  # the backend is still usable
    # The same backend can serve another app afterwards.
    async with running(create_app(backend, manage_backend=False)) as http:
        again = await http.get(f"/ojs/v1/jobs/{job.id}")
        assert again.status_code == 200
    assert backend.closed == 0


async def test_a_server_root_path_prefixes_locations_too() -> None:
    # What Hypercorn's root_path (behind a path-prefixing proxy) gives the app.
    app = create_app(MemoryBackend())
    transport = httpx.ASGITransport(app=app, root_path="/behind-proxy")
    async with httpx.AsyncClient(transport=transport, base_url="http://host") as http:
        created = await http.post("/behind-proxy/ojs/v1/jobs", json={"type": "a.job", "args": []})
        assert created.status_code == 201, created.text
        job_id = created.json()["job"]["id"]
        assert created.headers["Location"] == f"/behind-proxy/ojs/v1/jobs/{job_id}"


async def test_in_process_client_shares_the_mounted_apps_service() -> None:
    ojs_app = create_app(MemoryBackend())
    host = host_app(ojs_app, "/jobs-api")
    client = Client(ojs_app.state.service)
    async with running(host) as http:
        job = await client.enqueue("report.build", ["q1"])
        assert job is not None
        over_http = await http.get(f"/jobs-api/ojs/v1/jobs/{job.id}")
        assert over_http.json()["job"]["args"] == ["q1"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.parametrize("flag", ["/jobs-api", "jobs-api/", "/jobs-api/"])
async def test_server_path_prefix_mounts_the_app_in_a_host(flag: str) -> None:
    """``ojs-server --path-prefix`` serves through the same mount an embedding service uses
    (CI runs the whole conformance suite against it)."""
    args = parse_args(["--backend", "memory", "--path-prefix", flag])
    prefix = "/" + args.path_prefix.strip("/")
    backend = TrackingBackend()
    app = mounted(create_app(backend), prefix)
    async with running(app) as http:
        assert backend.opened == 1
        assert (await http.get("/jobs-api/ojs/v1/health")).status_code == 200
        assert (await http.get("/ojs/v1/health")).status_code == 404
        created = await http.post("/jobs-api/ojs/v1/jobs", json={"type": "t.x", "args": []})
        assert created.status_code == 201
        assert created.headers["Location"].startswith("/jobs-api/ojs/v1/jobs/")
    assert backend.closed == 1


@pytest.mark.slow
async def test_conformance_level_0_through_a_mount() -> None:
    if not RUNNER.is_file() or not SUITES.is_dir():
        pytest.skip(f"OJS conformance suite not found under {SHARED}/conformance (set OJS_SHARED)")
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    ojs_app = create_app(MemoryBackend(), HttpSettings(enable_reset=True))
    host = host_app(ojs_app, "/prefix")
    port = _free_port()
    base = f"http://127.0.0.1:{port}/prefix"
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    stop = asyncio.Event()
    server = asyncio.ensure_future(serve(host, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
    try:
        async with httpx.AsyncClient() as probe:

            async def healthy() -> bool:
                if server.done():
                    server.result()  # surface a startup error
                with contextlib.suppress(httpx.HTTPError):
                    return (await probe.get(f"{base}/ojs/v1/health")).status_code == 200
                return False

            await eventually(healthy, within=30)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(RUNNER),
            "--url",
            base,
            "--suites",
            str(SUITES),
            "--reset-url",
            f"{base}/ojs/v1/admin/reset",
            "--level",
            "0",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            output, _ = await asyncio.wait_for(proc.communicate(), timeout=600)
        except TimeoutError:
            proc.kill()
            raise
    finally:
        stop.set()
        await server
    text = output.decode(errors="replace")
    lines: list[Any] = text.strip().splitlines()
    assert lines, "the conformance runner printed nothing"
    assert lines[-1] == "65 passed, 0 failed", text[-4000:]
    assert proc.returncode == 0
