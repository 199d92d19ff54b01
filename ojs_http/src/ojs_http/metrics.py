"""``GET /metrics``: the Prometheus exposition of the job and HTTP metrics.

Served when ``prometheus-client`` is installed (``pip install 'ojs-http[metrics]'``) and
``HttpSettings.metrics`` is on. The job metrics are :class:`ojs_core.prometheus.JobMetrics`;
this module adds ``ojs_http_requests_total`` and ``ojs_http_request_duration_seconds`` by
method, route template and status, and the webhook metrics
(:class:`ojs_core.webhook_prometheus.WebhookMetrics`) when the backend stores webhooks. Every
app has its own registry, so two apps in one process (tests, say) never share counters;
``ojs-server --workers N`` runs prometheus-client's multiprocess mode so that every process's
scrape reports all of them (``docs/observability.md``).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Histogram
from starlette.requests import Request
from starlette.responses import Response

from ojs_core.prometheus import CONTENT_TYPE, JobMetrics
from ojs_core.service import JobService
from ojs_core.webhook_prometheus import WebhookMetrics
from ojs_core.webhook_store import WebhookStore

from . import schemas as S
from .routing import METRICS, Doc, OJSRoute, route

__all__ = ["AppMetrics", "metrics_route"]

#: Buckets of request latency: a fetch long-poll can take its whole ``wait_ms``.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class AppMetrics:
    """The job metrics of ``service`` plus this app's HTTP request metrics, in one registry."""

    def __init__(self, service: JobService, *, max_types: int = 200, max_queues: int = 100):
        self.jobs = JobMetrics(max_types=max_types, max_queues=max_queues)
        self.jobs.attach(service)
        registry = self.jobs.metric_registry
        self.store = service.backend if isinstance(service.backend, WebhookStore) else None
        self.webhooks: WebhookMetrics | None = None
        if self.store is not None:
            self.webhooks = WebhookMetrics(
                registry, self.jobs.registry, refresh_interval=self.jobs.refresh_interval
            )
            service.observers.add(self.webhooks.observe)
        self.requests = Counter(
            "ojs_http_requests",
            "HTTP requests answered, by method, route template and status",
            ("method", "route", "status"),
            registry=registry,
        )
        self.latency = Histogram(
            "ojs_http_request_duration_seconds",
            "HTTP request latency, by method and route template",
            ("method", "route"),
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request (the :class:`~ojs_http.access.RequestObserver` sink)."""
        # Children are looked up once per label set (labels() validates and locks each call);
        # methods, route templates and status codes are all bounded sets.
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.requests.labels(method, route, str(status)),
                self.latency.labels(method, route),
            )
        children[0].inc()
        children[1].observe(seconds)


async def metrics(request: Request) -> Response:
    """The Prometheus text exposition (gauges, the webhook subscriptions' included, read
    from the backend at most once per ``JobMetrics.refresh_interval``)."""
    app_metrics: AppMetrics = request.app.state.metrics
    await app_metrics.jobs.refresh()
    if app_metrics.webhooks is not None and app_metrics.store is not None:
        await app_metrics.webhooks.refresh(app_metrics.store)
    return Response(app_metrics.jobs.exposition(), headers={"Content-Type": CONTENT_TYPE})


def metrics_route() -> OJSRoute:
    """``GET /metrics`` (public, or any role when ``metrics_public`` is off)."""
    return route(
        "GET",
        "/metrics",
        metrics,
        METRICS,
        Doc(
            "Prometheus metrics (text exposition format 0.0.4)",
            responses={200: S.STR},
            media_type=CONTENT_TYPE,
        ),
    )
