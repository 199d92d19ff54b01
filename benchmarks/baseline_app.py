"""The bare baseline: Starlette on Hypercorn or Uvicorn (the servers ojs-server runs on), one
``js.publish`` per POST, nothing else, on uvloop when installed (as ojs-server).

``python -m benchmarks.baseline_app PORT [hypercorn|uvicorn]``"""

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


async def serve(port: int, kind: str) -> None:
    """Serve the baseline app on ``port`` with the server ``kind`` until killed."""
    if kind == "uvicorn":
        import uvicorn

        config = uvicorn.Config(
            app, port=port, http="httptools", access_log=False, log_level="warning"
        )
        await uvicorn.Server(config).serve()
        return
    from hypercorn.asyncio import serve as hypercorn_serve
    from hypercorn.config import Config

    hconfig = Config()
    hconfig.bind = [f"127.0.0.1:{port}"]
    hconfig.accesslog = None
    await hypercorn_serve(app, hconfig)  # type: ignore[arg-type]


if __name__ == "__main__":
    main = serve(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "hypercorn")
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)
