"""The caller's W3C trace context (``traceparent`` / ``tracestate`` headers) made current for
the request, so the enqueue spans of :mod:`ojs_core.tracing` join the caller's trace.

Only installed with ``HttpSettings(tracing=True)`` (``ojs-server --tracing``); needs
``pip install "ojs-http[otel]"``.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["TraceContextMiddleware"]


class TraceContextMiddleware:
    """Attach the context extracted from the request's headers while the request runs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection scope."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from opentelemetry import context, propagate

        carrier = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope["headers"]
            if name in (b"traceparent", b"tracestate")
        }
        if not carrier:
            await self.app(scope, receive, send)
            return
        token = context.attach(propagate.extract(carrier))
        try:
            await self.app(scope, receive, send)
        finally:
            context.detach(token)
