"""The HTTP/1.1 server under ``ojs-server``: Uvicorn with httptools, or Hypercorn.

Both serve the same ASGI app on a socket ``ojs-server`` bound itself, drain the same way (new
connections refused once the shutdown begins, requests in flight given ``grace_s`` seconds)
and close an idle keep-alive connection after :data:`KEEP_ALIVE_S` seconds.

* **Uvicorn + httptools** (``ojs-http[fast]``, part of ``ojs-http[server]``): the default when
  installed. Its C parser answers about three times the requests per second of Hypercorn's
  pure-Python h11 on the same app (``docs/performance.md``), and the HTTP layer was most of
  ``ojs-server``'s CPU per request.
* **Hypercorn**: always installed; chosen with ``--http-server hypercorn`` or when Uvicorn is
  not. (It also serves HTTP/2 to a client that negotiates it, which ojs-server does not need:
  the gRPC binding has its own server.)

httptools has no bound on a request head; one is added here: a request head (request line and
headers) larger than :data:`MAX_HEAD_BYTES` is refused with ``431`` and the connection closed,
never buffered more than one socket read past the bound. (Under Hypercorn h11 applies the same
bound to the part of a head still incomplete after a read: a larger head that arrives whole in
one read is served there.)
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from . import reasons

__all__ = ["KEEP_ALIVE_S", "MAX_HEAD_BYTES", "SERVERS", "resolve", "serve"]

#: The ``--http-server`` choices.
SERVERS = ("auto", "uvicorn", "hypercorn")
#: The largest request head (request line and headers) a client may send, in bytes.
MAX_HEAD_BYTES = 16 * 1024
#: Seconds an idle keep-alive connection stays open (Hypercorn's default, kept for both).
KEEP_ALIVE_S = 5

#: What ``ojs-server`` runs: an ASGI app on an already bound socket until ``shutdown`` returns.
Shutdown = Callable[[], Awaitable[None]]


def uvicorn_installed() -> bool:
    """Whether Uvicorn and httptools can be imported."""
    return all(importlib.util.find_spec(m) is not None for m in ("uvicorn", "httptools"))


def resolve(choice: str) -> str:
    """The server ``--http-server choice`` runs: ``uvicorn`` or ``hypercorn``."""
    if choice == "hypercorn":
        return "hypercorn"
    if uvicorn_installed():
        return "uvicorn"
    if choice == "uvicorn":
        raise SystemExit(
            "ojs-server: --http-server uvicorn needs uvicorn and httptools: "
            "pip install 'ojs-http[fast]'"
        )
    return "hypercorn"


async def serve(
    kind: str,
    app: Any,
    sock: socket.socket,
    *,
    log_level: str,
    grace_s: float,
    shutdown: Shutdown,
) -> None:
    """Serve ``app`` on ``sock`` (which the server then owns and closes) with the server
    ``kind`` until ``shutdown`` returns, then drain for at most ``grace_s`` seconds."""
    if kind == "uvicorn":
        await _serve_uvicorn(app, sock, log_level=log_level, grace_s=grace_s, shutdown=shutdown)
    else:
        await _serve_hypercorn(app, sock, log_level=log_level, grace_s=grace_s, shutdown=shutdown)


async def _serve_hypercorn(
    app: Any, sock: socket.socket, *, log_level: str, grace_s: float, shutdown: Shutdown
) -> None:
    from hypercorn.asyncio import serve as hypercorn_serve
    from hypercorn.config import Config

    reasons.install()
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]  # Hypercorn owns (and closes) the socket now
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.loglevel = log_level.upper()
    config.graceful_timeout = grace_s
    config.keep_alive_timeout = KEEP_ALIVE_S
    config.h11_max_incomplete_size = MAX_HEAD_BYTES
    # No websocket_ping_interval: Hypercorn 0.18's ping task outlives a closed WebSocket and
    # holds the graceful shutdown for its whole timeout; the app sends ping messages instead.
    await hypercorn_serve(app, config, shutdown_trigger=shutdown)


async def _serve_uvicorn(
    app: Any, sock: socket.socket, *, log_level: str, grace_s: float, shutdown: Shutdown
) -> None:
    import uvicorn

    config = uvicorn.Config(
        app,
        http=_bounded_head_protocol(),
        ws="auto",
        ws_ping_interval=None,  # the app sends its own pings (as under Hypercorn)
        lifespan="on",  # a failing startup stops the server (as Hypercorn does)
        log_config=None,  # ojs-server configured logging already
        log_level=log_level,
        access_log=False,  # the app logs requests itself (access.py)
        proxy_headers=False,  # a forwarded address is trusted by nobody unless configured
        server_header=False,
        timeout_keep_alive=KEEP_ALIVE_S,
        timeout_graceful_shutdown=max(1, round(grace_s)),
    )
    server = _uvicorn_server_class()(config)

    async def stop_when_told() -> None:
        await shutdown()
        server.should_exit = True

    watcher = asyncio.ensure_future(stop_when_told())
    try:
        await server.serve(sockets=[sock])
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        sock.close()  # Uvicorn closed it if it served (a no-op then), not if startup failed


def _uvicorn_server_class() -> type[Any]:
    import uvicorn

    class OwnSignalsServer(uvicorn.Server):
        """Uvicorn that leaves the signals to ``ojs-server``: a signal starts the drain there
        (``/ojs/v1/ready`` answers 503, event streams end) before the server stops."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    return OwnSignalsServer


_HEAD_TOO_LARGE = (
    b'{"error":{"code":"invalid_request","message":"the request head (request line and '
    b"headers) is larger than " + str(MAX_HEAD_BYTES).encode() + b' bytes","retryable":false}}'
)


def _bounded_head_protocol() -> type[Any]:
    """Uvicorn's httptools protocol with a bound on the request head (httptools has none:
    a client could send headers without end, all of them buffered)."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class BoundedHeadProtocol(HttpToolsProtocol):
        """Refuses a request head larger than :data:`MAX_HEAD_BYTES` with ``431``: exactly,
        by its parsed parts, once it is complete; while it is still arriving, by the bytes
        read since it began (httptools buffers them until a header ends)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._in_head = True
            self._head_bytes = 0  # of the head being read, by the chunks read
            self._head_parts = 0  # of the head being read, by its parsed parts
            self._begun = False
            self._refused = False

        def on_message_begin(self) -> None:
            self._in_head = True
            self._head_bytes = self._head_parts = 0
            self._begun = True
            super().on_message_begin()

        def on_url(self, url: bytes) -> None:
            self._head_parts += len(url)
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._head_parts += len(name) + len(value) + 4  # ": " and CRLF
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._in_head = False
            if self._head_parts > MAX_HEAD_BYTES:
                self._refuse()  # and the rest of what was read is ignored (below)
                return
            super().on_headers_complete()

        def on_body(self, body: bytes) -> None:
            if not self._refused:
                super().on_body(body)

        def on_message_complete(self) -> None:
            if not self._refused:
                super().on_message_complete()

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return
            self._begun = False
            super().data_received(data)
            # Still inside a head after this chunk: count the chunk, unless the head began in
            # it (httptools does not say where; a pipelined chunk may hold a whole earlier
            # request). So a head is refused at most one read past the bound, never early.
            if self._in_head and not self._refused and not self.transport.is_closing():
                if not self._begun:
                    self._head_bytes += len(data)
                if max(self._head_bytes, self._head_parts) > MAX_HEAD_BYTES:
                    self._refuse()

        def send_400_response(self, msg: str) -> None:
            if not self._refused:  # the parser's error after our own refusal: answered
                super().send_400_response(msg)

        def _refuse(self) -> None:
            self._refused = True
            self.transport.write(
                b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                b"content-type: application/json\r\nconnection: close\r\n"
                b"content-length: "
                + str(len(_HEAD_TOO_LARGE)).encode()
                + b"\r\n\r\n"
                + _HEAD_TOO_LARGE
            )
            self.transport.close()

    return BoundedHeadProtocol
