"""ASGI middleware adding the headers every OJS response carries."""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ojs_core.ids import uuid7
from ojs_core.logcontext import log_context

__all__ = ["MAX_REQUEST_ID", "OJSHeadersMiddleware", "valid_request_id"]

#: The longest ``X-Request-Id`` echoed; a longer or malformed one is replaced.
MAX_REQUEST_ID = 128


def valid_request_id(value: bytes) -> bool:
    """1 to 128 visible ASCII characters: nothing that could split a log line or a header."""
    return 0 < len(value) <= MAX_REQUEST_ID and all(0x21 <= c <= 0x7E for c in value)


class OJSHeadersMiddleware:
    """Sets ``OJS-Version: 1.0`` and echoes or generates ``X-Request-Id`` on every response.

    The request id is also stored in ``scope["state"]["request_id"]`` so that error bodies can
    repeat it, and bound to the request's log lines (:mod:`ojs_core.logcontext`). An incoming
    id is echoed when it is 1-128 visible ASCII characters; otherwise (too long, spaces,
    control characters) a fresh ``req_<uuidv7>`` replaces it: a tracing header never fails a
    request.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection scope."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                if valid_request_id(value):
                    request_id = value.decode("ascii")
                break
        if not request_id:
            request_id = "req_" + uuid7()
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["OJS-Version"] = "1.0"
                headers["X-Request-Id"] = request_id
            await send(message)

        with log_context(request_id=request_id):
            await self.app(scope, receive, send_with_headers)
