"""The bare baseline: Starlette on Hypercorn, one ``js.publish`` per POST, nothing else."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import nats

NATS_URL = os.environ.get("BASELINE_NATS_URL", "nats://127.0.0.1:4222")
state: dict[str, object] = {}


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    nc = await nats.connect(NATS_URL)
    js = nc.jetstream()
    with contextlib.suppress(Exception):
        await js.add_stream(name="BASELINE", subjects=["baseline.>"])
    state["js"] = js
    yield
    await nc.close()


async def publish(request: Request) -> Response:
    body = await request.body()
    await state["js"].publish("baseline.jobs", body)  # type: ignore[attr-defined]
    return Response(b'{"ok":true}', status_code=201, media_type="application/json")


app = Starlette(routes=[Route("/publish", publish, methods=["POST"])], lifespan=lifespan)

if __name__ == "__main__":
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"127.0.0.1:{sys.argv[1]}"]
    config.accesslog = None
    asyncio.run(serve(app, config))  # type: ignore[arg-type]
