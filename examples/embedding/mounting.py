"""Mount the OJS HTTP app inside a host Starlette app, with an in-process worker beside it.

The host owns every lifecycle: its lifespan opens the backend, enters the OJS app's lifespan
(``ojs_http.lifespan``: Starlette never runs a mounted app's lifespan by itself), starts the
worker, and undoes all of it in reverse order on shutdown.

``uv run python examples/embedding/mounting.py`` drives the app in process (through httpx's ASGI
transport); ``uv run python examples/embedding/mounting.py --serve`` serves it with Hypercorn on
http://127.0.0.1:8000/jobs-api/ojs/v1/ until Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

import ojs_http
from ojs_core import Client, JobContext, Worker
from ojs_http import create_app
from ojs_memory import MemoryBackend


def build_host_app(prefix: str = "/jobs-api") -> Starlette:
    """A host app with its own routes and the OJS binding mounted at ``prefix`` (``/``: root)."""
    backend = MemoryBackend()
    ojs_app = create_app(backend, manage_backend=False)  # the host opens and closes the backend
    service = ojs_app.state.service  # one JobService for HTTP, the client and the worker
    client = Client(service)
    worker = Worker(service, queues=["default"], concurrency=8)

    @worker.handler("report.build")
    async def build_report(ctx: JobContext) -> dict[str, Any]:
        return {"report": f"{ctx.args[0]}.pdf"}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await backend.open()
        try:
            async with ojs_http.lifespan(ojs_app):  # scheduler (timers, cron) runs inside
                worker.start()
                try:
                    yield
                finally:
                    await worker.stop(grace=10)
        finally:
            await backend.close()

    async def order_report(request: Request) -> JSONResponse:
        """A host endpoint that enqueues in process (no HTTP round trip to the OJS app)."""
        job = await client.enqueue("report.build", [request.path_params["name"]])
        assert job is not None
        return JSONResponse({"job_id": job.id}, status_code=202)

    return Starlette(
        routes=[
            Route("/reports/{name}", order_report, methods=["POST"]),
            Mount(prefix, app=ojs_app),
        ],
        lifespan=lifespan,
    )


async def _exercise(prefix: str) -> dict[str, Any]:
    app = build_host_app(prefix)
    base = prefix.rstrip("/")
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),  # what an ASGI server does at startup/shutdown
        httpx.AsyncClient(transport=transport, base_url="http://example") as http,
    ):
        created = await http.post(
            f"{base}/ojs/v1/jobs", json={"type": "report.build", "args": ["q1"]}
        )
        location = created.headers["Location"]
        ordered = (await http.post("/reports/q2")).json()["job_id"]
        states: list[str] = []
        for url in (location, f"{base}/ojs/v1/jobs/{ordered}"):
            job = await _completed(http, url)
            states.append(f"{job['args'][0]}: {job['result']['report']}")
    return {"location": location.rsplit("/", 1)[0], "reports": states}


async def _completed(http: httpx.AsyncClient, url: str) -> dict[str, Any]:
    for _ in range(1000):
        job: dict[str, Any] = (await http.get(url)).json()["job"]
        if job["state"] == "completed":
            return job
        await asyncio.sleep(0.01)
    raise TimeoutError(f"{url} did not complete")


async def main() -> dict[str, Any]:
    """Run the host app under a prefix and at the root; return what a client saw."""
    return {"prefixed": await _exercise("/jobs-api"), "root": await _exercise("/")}


async def serve() -> None:
    """Serve the host app with Hypercorn until interrupted."""
    from hypercorn.asyncio import serve as hypercorn_serve
    from hypercorn.config import Config

    config = Config()
    config.bind = ["127.0.0.1:8000"]
    await hypercorn_serve(build_host_app(), config)  # type: ignore[arg-type]


if __name__ == "__main__":
    if "--serve" in sys.argv:
        asyncio.run(serve())
    else:
        print(asyncio.run(main()))
