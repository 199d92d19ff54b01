"""The extensions a server's manifest declares, for every binding.

The extensions here are the core's behaviour (dead letter, rate limiting, and where the
backend or service has them, backpressure and the schema registry); retries, unique jobs,
cron and workflows are core specifications (``urn:ojs:spec:*``, :func:`core_specs`),
so every binding that serves them declares the same list: the HTTP binding adds its endpoints
and its HTTP-only extensions, the gRPC binding declares the URIs.
"""

from __future__ import annotations

from typing import Any

from .backend import Backend, QueueBounds, RateLimitStore
from .backpressure import STRATEGIES
from .schema_registry import SchemaRegistry

__all__ = ["CORE_SPECS", "core_specs", "official_extensions"]

#: The core specifications this server implements (the extension lifecycle's "Core" tier,
#: ``urn:ojs:spec:<name>``), each at its release-candidate version.
CORE_SPECS: tuple[str, ...] = (
    "core",
    "json-format",
    "http-binding",
    "worker-protocol",
    "events",
    "retry",
    "cron",
    "workflows",
    "unique-jobs",
)
_SPEC_VERSION = "1.0.0-rc.1"


def core_specs() -> list[dict[str, Any]]:
    """The core specifications as ``{"name", "uri", "version"}`` (``urn:ojs:spec:*``)."""
    return [
        {"name": name, "uri": f"urn:ojs:spec:{name}", "version": _SPEC_VERSION}
        for name in CORE_SPECS
    ]


def official_extensions(backend: Backend, schemas: SchemaRegistry) -> list[dict[str, Any]]:
    """The official extensions of a service over ``backend`` with ``schemas``, each as
    ``{"name", "uri", "version", ...}``: the dead letter and rate limiting, which every backend
    has, ``backpressure`` (with
    its ``strategies``) where the backend stores queue bounds, and ``schema-registry`` (with
    its ``validation_mode``) when the registry is available."""
    out: list[dict[str, Any]] = [
        {"name": "dead-letter", "uri": "urn:ojs:ext:dead-letter", "version": _SPEC_VERSION}
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
            "queue_level": True,
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
