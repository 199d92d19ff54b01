"""ASGI middleware adding the headers every OJS response carries."""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ojs_core.ids import uuid7

__all__ = ["OJSHeadersMiddleware"]


class OJSHeadersMiddleware:
    """Sets ``OJS-Version: 1.0`` and echoes or generates ``X-Request-Id`` on every response.

    The request id is also stored in ``scope["state"]["request_id"]`` so that error bodies can
    repeat it.
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
                request_id = value.decode("latin-1")[:200]
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

        await self.app(scope, receive, send_with_headers)
