"""Per-request observation: the access log and the HTTP metrics, by route template.

A request is labelled with the path *template* of the route that answered it
(``/ojs/v1/jobs/{id}``), never its raw path, so a metric has one series per route; a request
no route matched is labelled ``_unmatched``. :class:`~ojs_http.routing.OJSRoute` leaves its
template in the ASGI scope for this middleware to read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ojs_core.logcontext import loggable_text

__all__ = ["ROUTE_KEY", "UNMATCHED", "RequestObserver", "RequestSink"]

access_log = logging.getLogger("ojs.access")

#: The scope key holding the matched route's template.
ROUTE_KEY = "ojs.route"
UNMATCHED = "_unmatched"
#: Methods labelled as themselves; any other is ``_other`` (a client picks the method).
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

#: ``sink(method, route, status, seconds)``, called once per answered request.
RequestSink = Callable[[str, str, int, float], None]


class RequestObserver:
    """Times each request; hands it to ``sink`` (metrics) and, when enabled, logs it."""

    def __init__(self, app: ASGIApp, *, sink: RequestSink | None, access: bool) -> None:
        self.app = app
        self.sink = sink
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection scope."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            elapsed = time.perf_counter() - started
            method = scope["method"] if scope["method"] in _METHODS else "_other"
            route = scope.get(ROUTE_KEY, UNMATCHED)
            if self.sink is not None:
                self.sink(method, route, status, elapsed)
            if self.access:
                duration_ms = round(elapsed * 1000, 3)
                path = loggable_text(scope["path"])
                extra: dict[str, object] = {
                    "http.method": method,
                    "http.route": route,
                    "http.path": path,
                    "http.status": status,
                    "http.duration_ms": duration_ms,
                }
                # The route's log context has ended by now: name its job here.
                job_id = scope.get("path_params", {}).get("job_id")
                if job_id is not None:
                    extra["job_id"] = loggable_text(job_id, 256)
                # The path, never the query string or headers: those may carry tokens.
                access_log.info(
                    "%s %s %d %.1fms",
                    method,
                    path,
                    status,
                    duration_ms,
                    extra=extra,
                )
