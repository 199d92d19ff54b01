"""Settings of the gRPC binding."""

from __future__ import annotations

from importlib import metadata

import attrs

__all__ = ["GrpcSettings"]


def _version() -> str:
    try:
        return metadata.version("ojs-grpc")
    except metadata.PackageNotFoundError:  # pragma: no cover - run from a source tree
        return "0+unknown"


@attrs.frozen(kw_only=True)
class GrpcSettings:
    """How the gRPC binding behaves; every field has a production-safe default.

    ``protocols``: what ``Manifest`` declares (``("http", "grpc")`` when served beside HTTP).
    ``max_envelope_bytes``: the largest job (as JSON, the HTTP binding's measure) an enqueue
    may carry; ``max_message_bytes``: the largest request message the server receives.
    ``stream_wait_ms``: how long one wait of ``StreamJobs`` for a job lasts before it looks
    again (the wait ends at once when a job arrives; this only bounds it).
    ``slot_check_s``: while a stream's worker has no free slot, how often the stream re-reads
    its unacknowledged jobs (one backend read of each held job). An acknowledgement made in
    this process frees a slot at once; this fallback catches those made through another
    replica, and expired visibility timeouts, so it may be slow: 5 seconds by default.
    ``event_keepalive_s``: an idle ``StreamEvents`` sends a ``stream.keepalive`` event this
    often (the spec asks for at least every 30 seconds).
    ``max_event_streams``/``event_queue``: the event fan-out's limits when the binding makes
    its own hub (``ojs-server`` shares the HTTP binding's).
    """

    implementation_name: str = "ojs-python"
    implementation_version: str = attrs.field(factory=_version)
    protocols: tuple[str, ...] = ("grpc",)
    max_envelope_bytes: int = 1024 * 1024
    max_message_bytes: int = 64 * 1024 * 1024
    stream_wait_ms: int = 30_000
    slot_check_s: float = 5.0
    event_keepalive_s: float = 15.0
    max_event_streams: int = 1000
    event_queue: int = 1000
