"""A host Starlette app that mounts the OJS HTTP API on NATS under ``/jobs-api``.

This is the "pip install and mount" deployment: a service with routes of its own serves the
OJS binding beside them, stores jobs in NATS JetStream, and runs an in-process worker for one
job type. It needs nothing but the published packages::

    pip install "ojs-nats[http,embedded]"
    python host_app.py --port 8000                          # embedded NATS in ./.ojs-host
    python host_app.py --port 8000 --nats nats://127.0.0.1:4222   # an external NATS

Clients then call ``http://127.0.0.1:8000/jobs-api/ojs/v1/...``; workers in any language can
fetch the other job types from there. ``smoke_client.py`` enqueues, fetches and acks through
it; CI runs both from wheels in a fresh virtual environment (``.ci/install-check``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from typing import Any

from hypercorn.asyncio import serve
from hypercorn.config import Config
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

import ojs_http
from ojs_core import Client, JobContext, Worker
from ojs_nats import NatsBackend
from ojs_nats.embedded import EmbeddedNatsServer


def build_app(backend: NatsBackend, prefix: str = "/jobs-api") -> Starlette:
    """The host app: ``GET /`` of its own, the OJS API under ``prefix``, a worker for
    ``thumbnail.render`` running in its lifespan."""
    ojs_app = ojs_http.create_app(backend, manage_backend=False)
    service = ojs_app.state.service  # shared by HTTP, the client and the worker
    client = Client(service)
    worker = Worker(service, queues=["thumbnails"], concurrency=4)

    @worker.handler("thumbnail.render")
    async def render(ctx: JobContext) -> dict[str, Any]:
        return {"thumbnail": f"{ctx.args[0]}.png"}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await backend.open()
        try:
            async with ojs_http.lifespan(ojs_app):  # the scheduler: timers and cron
                worker.start()
                try:
                    yield
                finally:
                    await worker.stop(grace=10)
        finally:
            await backend.close()

    async def home(request: Request) -> JSONResponse:
        return JSONResponse({"service": "host", "jobs_api": f"{prefix}/ojs/v1"})

    async def thumbnail(request: Request) -> JSONResponse:
        """The host's own endpoint, enqueueing in process (no HTTP hop)."""
        job = await client.enqueue(
            "thumbnail.render", [request.path_params["name"]], queue="thumbnails"
        )
        assert job is not None
        return JSONResponse({"job_id": job.id}, status_code=202)

    return Starlette(
        routes=[
            Route("/", home),
            Route("/thumbnails/{name}", thumbnail, methods=["POST"]),
            Mount(prefix, app=ojs_app),
        ],
        lifespan=lifespan,
    )


def make_backend(nats_url: str | None, data_dir: str) -> NatsBackend:
    """An external NATS when ``nats_url`` is given, else an embedded one storing in
    ``data_dir`` (joined, if another process of this machine already runs it)."""
    if nats_url:
        return NatsBackend(nats_url)
    return NatsBackend(embedded=EmbeddedNatsServer(data_dir))


async def main(port: int, nats_url: str | None, data_dir: str) -> None:
    """Serve the host app on 127.0.0.1:``port`` until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    app = build_app(make_backend(nats_url, data_dir))
    await serve(app, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--nats", help="an external NATS URL (default: embedded)")
    parser.add_argument("--data-dir", default=".ojs-host", help="the embedded NATS's store")
    args = parser.parse_args()
    asyncio.run(main(args.port, args.nats, args.data_dir))
