"""Settings of the HTTP binding."""

from __future__ import annotations

from importlib import metadata

import attrs

from ojs_core.limits import Limits
from ojs_core.retention import Retention
from ojs_core.webhook_delivery import DEFAULT_SCHEDULE, TIMEOUT_S

__all__ = ["CONTENT_TYPE_MODES", "COOKIE_SECURE_MODES", "HttpSettings"]

CONTENT_TYPE_MODES = ("auto", "json", "openjobspec")
COOKIE_SECURE_MODES = ("auto", "always", "never")


@attrs.frozen(kw_only=True)
class HttpSettings:
    """How the ASGI app behaves; every field has a production-safe default.

    ``response_content_type``: ``openjobspec`` always answers ``application/openjobspec+json``
    (the spec's MUST); ``json`` always answers ``application/json``; ``auto`` answers
    ``application/json`` to clients that need it (an ``Accept`` naming ``application/json``, or
    the official Python SDK, which parses only bodies labelled ``application/json``) and the OJS
    type to everyone else. See ``docs/configuration.md``.

    ``enable_reset`` serves ``POST /ojs/v1/admin/reset`` and ``test_directives`` honours the
    conformance hook ``meta.test_directive``; both are test-mode switches (``docs/security.md``).
    ``metrics``: serve ``GET /metrics`` when ``prometheus-client`` is installed;
    ``metrics_public``: whether ``/metrics`` needs no key when the app has an authenticator;
    ``metrics_max_types`` and ``metrics_max_queues`` cap the distinct label values (beyond
    them: ``_other``). ``access_log``: log one ``ojs.access`` line per request.
    ``tracing``: OpenTelemetry spans of enqueues and in-process runs (:mod:`ojs_core.tracing`;
    needs ``ojs-http[otel]``), joined to the caller's ``traceparent`` header.
    ``api_docs``: serve the API reference page ``GET /ojs/docs`` (public: static files; the
    document it shows keeps the access of ``/ojs/v1/openapi.json``, see ``docs/security.md``).
    ``limits``: the per-request ceilings of the service (:class:`~ojs_core.limits.Limits`);
    ``max_body_bytes`` and ``max_envelope_bytes`` bound request bodies and each job in them,
    ``max_wait_ms`` a fetch's long-poll. ``retention``: how long finished jobs, dead-letter
    jobs and worker records are kept (:class:`~ojs_core.retention.Retention`). ``exhausted``:
    where a job whose retries are exhausted goes when its policy does not say.

    Event streams (``docs/events.md``): at most ``max_event_streams`` SSE streams and WebSocket
    connections per process (503 beyond), each holding at most ``event_queue`` undelivered
    events (a slower client is disconnected and resumes with ``Last-Event-ID``); a comment
    heartbeat every ``event_heartbeat_s`` seconds; ``event_retry_ms`` is the reconnection delay
    the streams advise (``retry:``).

    The web dashboard (``docs/dashboard.md``): ``dashboard`` serves it at ``/ojs/admin``;
    a login lasts ``dashboard_session_ttl_s`` seconds; ``dashboard_cookie_secure`` marks the
    session cookie ``Secure``: ``auto`` does unless the page was requested over plain HTTP
    from a loopback host (``http://localhost``), ``always`` and ``never`` say so outright.
    """

    enable_reset: bool = False
    test_directives: bool = False
    metrics: bool = True
    metrics_public: bool = True
    metrics_max_types: int = 200
    metrics_max_queues: int = 100
    access_log: bool = False
    tracing: bool = False
    api_docs: bool = True
    limits: Limits = attrs.field(factory=Limits)
    retention: Retention = attrs.field(factory=Retention)
    exhausted: str = attrs.field(
        default="dead_letter", validator=attrs.validators.in_(("dead_letter", "discard"))
    )
    schema_validation: str = attrs.field(
        default="warn", validator=attrs.validators.in_(("strict", "warn", "off"))
    )
    response_content_type: str = attrs.field(
        default="auto", validator=attrs.validators.in_(CONTENT_TYPE_MODES)
    )
    max_envelope_bytes: int = 1024 * 1024
    max_body_bytes: int = 64 * 1024 * 1024
    max_wait_ms: int = 30_000
    max_event_streams: int = 1000
    event_queue: int = 1000
    event_heartbeat_s: float = 15.0
    event_retry_ms: int = 3000
    dashboard: bool = True
    dashboard_session_ttl_s: int = 12 * 3600
    dashboard_cookie_secure: str = attrs.field(
        default="auto", validator=attrs.validators.in_(COOKIE_SECURE_MODES)
    )
    webhooks: bool = True
    webhooks_allow_http: bool = False
    webhooks_allow_private: bool = False
    webhook_schedule: tuple[float, ...] = DEFAULT_SCHEDULE
    webhook_timeout_s: float = TIMEOUT_S
    webhook_poll_s: float = 0.2
    webhook_concurrency: int = 16
    #: Seconds between noisy-neighbour checks (multi-tenancy, ``ojs_core.noisy_neighbors``;
    #: 0: only when the tenant admin API shows statistics).
    noisy_neighbor_check_s: float = 30.0
    default_visibility_timeout_ms: int = 1_800_000
    run_scheduler: bool = True
    scheduler_interval: float = 0.02
    #: What the manifest declares (``ojs-server --grpc-port`` adds ``grpc``).
    protocols: tuple[str, ...] = ("http",)
    implementation_name: str = "ojs-python"
    implementation_version: str = attrs.field(factory=lambda: _version())
    docs_base: str = "https://openjobspec.org"


def _version() -> str:
    try:
        return metadata.version("ojs-http")
    except metadata.PackageNotFoundError:  # pragma: no cover - run from a source tree
        return "0+unknown"
