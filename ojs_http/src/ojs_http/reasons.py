"""Reason phrases on Hypercorn's HTTP/1.1 status lines (``HTTP/1.1 404 Not Found``).

Hypercorn writes ``HTTP/1.1 404 `` with an empty reason phrase. HTTP/1.1 allows that, but
people read status lines in ``curl -i``, proxies and logs, and some older clients show the
phrase in their errors. ASGI has no way to pass a phrase, so ``ojs-server`` fills it in where
Hypercorn hands the response to h11: :func:`install` wraps that one method, once per process.
A host application that serves the OJS app with its own server is not affected.
"""

from __future__ import annotations

import http
from typing import Any

import h11

__all__ = ["install", "reason_of"]

_MARK = "_ojs_reason_phrases"


def reason_of(status: int) -> bytes:
    """The standard phrase of ``status`` (``b""`` for a code without one)."""
    try:
        return http.HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""


def install() -> bool:
    """Make Hypercorn's HTTP/1.1 responses carry reason phrases; ``False`` if this Hypercorn
    has no place to do it (the responses then keep empty phrases)."""
    try:
        from hypercorn.protocol.h11 import H11Protocol
    except ImportError:  # pragma: no cover - Hypercorn is a dependency of ojs-http
        return False
    original = getattr(H11Protocol, "_send_h11_event", None)
    if original is None:
        return False
    if getattr(original, _MARK, False):
        return True

    async def send_with_reason(self: Any, event: Any) -> None:
        if isinstance(event, h11.Response | h11.InformationalResponse) and not event.reason:
            event = type(event)(
                status_code=event.status_code,
                headers=event.headers,
                reason=reason_of(event.status_code),
            )
        await original(self, event)

    setattr(send_with_reason, _MARK, True)
    setattr(H11Protocol, "_send_h11_event", send_with_reason)  # noqa: B010 - a method
    return True
