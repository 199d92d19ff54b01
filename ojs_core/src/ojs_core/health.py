"""How a binding judges its backend's health: one probe, shared by the HTTP ``/ojs/v1/health``
and ``/ojs/v1/ready`` routes and the gRPC ``Health`` RPC and ``grpc.health.v1`` service."""

from __future__ import annotations

import time

import attrs

from .backend import Backend
from .errors import OJSError

__all__ = ["DEGRADED_MS", "BackendProbe", "probe_backend"]

#: A backend that answers, but slower than this, is ``degraded``.
DEGRADED_MS = 1000.0


@attrs.frozen
class BackendProbe:
    """The backend's state (``ok``, ``degraded`` or ``down``), the probe's latency in
    milliseconds and the backend's error, if it reported one."""

    status: str
    latency_ms: float
    error: str | None = None


async def probe_backend(backend: Backend) -> BackendProbe:
    """Ask ``backend`` for its health and time the answer."""
    started = time.perf_counter()
    try:
        status = await backend.health()
        ok, error = status.ok, status.error
    except OJSError as exc:
        ok, error = False, exc.message
    latency = round((time.perf_counter() - started) * 1000, 3)
    if not ok:
        return BackendProbe("down", latency, error)
    return BackendProbe("degraded" if latency > DEGRADED_MS else "ok", latency, error)
