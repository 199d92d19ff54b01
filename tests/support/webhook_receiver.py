"""A real webhook endpoint for the tests: a Starlette app on Hypercorn on a loopback port.

It records every request (path, headers, raw body) and answers from a script: each request
takes the next scripted answer (status and headers), the last one repeating. Redirects are
scripted the same way (a ``location`` header).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import attrs
from hypercorn.asyncio import serve
from hypercorn.config import Config
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ojs_core.webhook_delivery import verify

__all__ = ["Received", "Receiver", "receiving", "until"]


@attrs.frozen
class Received:
    """One request the receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        """The body decoded."""
        return json.loads(self.body)

    def verifies(self, secret: str) -> bool:
        """Whether the request is signed with ``secret`` (spec §8.2, the docs' check)."""
        return verify(
            secret,
            self.headers["x-ojs-timestamp"],
            self.body,
            self.headers["x-ojs-signature"],
            now=time.time(),
        )


@attrs.define
class Receiver:
    """What was received, and the script of answers."""

    url: str
    requests: list[Received] = attrs.field(factory=list)
    script: list[tuple[int, dict[str, str]]] = attrs.field(factory=lambda: [(200, {})])
    #: Seconds an answer is delayed (a slow endpoint).
    delay_s: float = 0.0

    def answer(self, *statuses: int | tuple[int, dict[str, str]]) -> None:
        """Answer the next requests with these, the last one repeating."""
        self.script = [s if isinstance(s, tuple) else (s, {}) for s in statuses]

    def of_type(self, event_type: str) -> list[Received]:
        """The requests delivering events of ``event_type``."""
        return [r for r in self.requests if r.headers.get("x-ojs-event-type") == event_type]

    async def _endpoint(self, request: Request) -> Response:
        body = await request.body()
        self.requests.append(Received(request.url.path, dict(request.headers), body))
        status, headers = self.script[0] if len(self.script) == 1 else self.script.pop(0)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return Response(b"ok" if status < 300 else b"no", status_code=status, headers=headers)


@contextlib.asynccontextmanager
async def receiving() -> AsyncIterator[Receiver]:
    """Serve a receiver on a free loopback port for the duration of the block."""
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    receiver = Receiver(url=f"http://127.0.0.1:{port}/hook")
    app = Starlette(routes=[Route("/{path:path}", receiver._endpoint, methods=["POST", "GET"])])
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]
    config.accesslog = None
    config.graceful_timeout = 1.0
    stop = asyncio.Event()
    task = asyncio.get_running_loop().create_task(
        serve(app, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]
    )
    try:
        yield receiver
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def until(predicate: Callable[[], Any], what: str, within: float = 10.0) -> Any:
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
