"""The extensions a server's manifest declares, for every binding.

The extensions here are the core's behaviour (retries, dead letter, unique jobs, cron,
workflows, rate limiting, and where the backend or service has them, backpressure and the
schema registry),
so every binding that serves them declares the same list: the HTTP binding adds its endpoints
and its HTTP-only extensions, the gRPC binding declares the URIs.
"""

from __future__ import annotations

from typing import Any

from .backend import Backend, QueueBounds, RateLimitStore
from .backpressure import STRATEGIES
from .schema_registry import SchemaRegistry

__all__ = ["official_extensions"]

_ALWAYS: tuple[tuple[str, str], ...] = (
    ("retry", "1.0"),
    ("dead-letter", "1.0"),
    ("unique-jobs", "1.0"),
    ("cron", "1.0"),
    ("workflows", "1.0"),
)


def official_extensions(backend: Backend, schemas: SchemaRegistry) -> list[dict[str, Any]]:
    """The official extensions of a service over ``backend`` with ``schemas``, each as
    ``{"name", "uri", "version", ...}``: the five every backend has, ``backpressure`` (with
    its ``strategies``) where the backend stores queue bounds, and ``schema-registry`` (with
    its ``validation_mode``) when the registry is available."""
    out: list[dict[str, Any]] = [
        {"name": name, "uri": f"urn:ojs:ext:{name}", "version": version}
        for name, version in _ALWAYS
    ]
    out.append(
        {
            "name": "rate-limiting",
            "uri": "urn:ojs:ext:rate-limiting",
            "version": "1.0.0-rc.1",
            "strategies": ["concurrency", "rate", "throttle"],
            "on_limit": ["wait", "reschedule", "drop"],
            # Shared: counted in the store, for every replica; else per process.
            "shared": isinstance(backend, RateLimitStore),
            "queue_level": False,
        }
    )
    if isinstance(backend, QueueBounds):
        out.append(
            {
                "name": "backpressure",
                "uri": "urn:ojs:ext:backpressure",
                "version": "1.0.0-rc.1",
                "strategies": list(STRATEGIES),
            }
        )
    if schemas.available:
        out.append(
            {
                "name": "schema-registry",
                "uri": "urn:ojs:ext:schema-registry",
                "version": "1.0.0-rc.1",
                "validation_mode": schemas.mode,
            }
        )
    return out
