"""Helpers of the event-stream tests (a plain module, not a test module).

* :func:`serving`: an OJS app on a real HTTP server in this event loop (the one
  ``ojs-server`` runs by default, or the one named: ``uvicorn``, ``hypercorn``), on a loopback
  port (event streams never end, so ``httpx.ASGITransport``, which buffers whole bodies,
  cannot read them).
* :class:`SSEReader`: reads the frames of a ``text/event-stream`` response, each read bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import attrs
import httpx
from starlette.applications import Starlette

from ojs_http import http_server

__all__ = ["READ_TIMEOUT_S", "Frame", "SSEReader", "serving", "until"]

#: The longest any single read of a stream may take before the test fails.
READ_TIMEOUT_S = 10.0


@contextlib.asynccontextmanager
async def serving(app: Starlette, kind: str = "auto") -> AsyncIterator[str]:
    """Serve ``app`` (its lifespan included) on a free loopback port with the HTTP server
    ``kind`` (as ``ojs-server --http-server``); yields its base URL."""
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    stop = asyncio.Event()
    task = asyncio.get_running_loop().create_task(
        http_server.serve(
            http_server.resolve(kind),
            app,
            sock,
            log_level="warning",
            grace_s=2.0,
            shutdown=stop.wait,
        )
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=2) as client:

            async def up() -> bool:
                assert not task.done(), task
                with contextlib.suppress(httpx.TransportError):
                    return (await client.get("/ojs/v1/health")).status_code == 200
                return False

            await until(up, "the server to answer")
        yield url
    finally:
        app.state.event_hub.end_all()
        stop.set()
        await asyncio.wait_for(task, 15)


async def until(predicate: Any, what: str, within: float = 10.0) -> Any:
    """Await ``predicate()`` (sync or async) until it is truthy; fail after ``within`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


@attrs.frozen
class Frame:
    """One SSE frame: an event (``event`` set), a ``retry:`` advice, or comments only."""

    id: str | None = None
    event: str | None = None
    data: Any = None
    retry: int | None = None
    comments: tuple[str, ...] = ()


class SSEReader:
    """The frames of an SSE response, as the official SDK parses them."""

    def __init__(self, response: httpx.Response) -> None:
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/event-stream")
        self._lines = response.aiter_lines()

    async def frame(self) -> Frame | None:
        """The next frame, or ``None`` when the server closed the stream."""
        async with asyncio.timeout(READ_TIMEOUT_S):
            fields: dict[str, Any] = {}
            comments: list[str] = []
            async for line in self._lines:
                if line == "":
                    if fields or comments:
                        return Frame(**fields, comments=tuple(comments))
                    continue
                if line.startswith(":"):
                    comments.append(line[1:].strip())
                    continue
                name, _, value = line.partition(": ")
                if name == "data":
                    fields["data"] = json.loads(value)
                elif name == "retry":
                    fields["retry"] = int(value)
                else:
                    fields[name] = value
            return None

    async def events(self, count: int) -> list[Frame]:
        """The next ``count`` event frames (comments and advice skipped)."""
        out: list[Frame] = []
        while len(out) < count:
            frame = await self.frame()
            assert frame is not None, f"stream closed after {len(out)} of {count} events"
            if frame.event is not None:
                out.append(frame)
        return out

    async def rest(self) -> list[Frame]:
        """Every frame until the server closes the stream."""
        out: list[Frame] = []
        while (frame := await self.frame()) is not None:
            out.append(frame)
        return out
