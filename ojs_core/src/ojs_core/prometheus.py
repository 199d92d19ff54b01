"""Prometheus collectors for a :class:`~ojs_core.service.JobService` (the ``metrics`` extra).

Needs ``prometheus-client`` (``pip install 'ojs-core[metrics]'``); nothing else in ``ojs_core``
imports this module. :class:`JobMetrics` follows the observability spec (§8): counters and
histograms fed by the lifecycle events the service publishes (an :mod:`ojs_core.observe`
observer), and gauges of queue depth and live workers read from the backend when scraped
(:meth:`JobMetrics.refresh`, cached for ``refresh_interval`` seconds so scrapes cannot hammer
the backend). An embedder without the HTTP binding::

    metrics = JobMetrics()
    metrics.attach(service)
    ...
    await metrics.refresh()
    body = metrics.exposition()

Label cardinality is bounded: at most ``max_types`` job types and ``max_queues`` queues get a
label value of their own (the first ones seen); the rest are counted under ``_other``.

Multi-tenancy (spec §11.2): jobs with ``meta.tenant_id`` are also counted per tenant
(``ojs_tenant_jobs_enqueued_total``, ``..._processed_total``, ``..._failed_total`` by
``tenant_id`` and ``queue``), and the configured tenants' active jobs and queue depth are
gauges (``ojs_tenant_jobs_active``, ``ojs_tenant_queue_depth`` by ``tenant_id``); at most
``max_tenants`` (1,000) tenant ids get a label value of their own, the rest ``_other``.

In prometheus-client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set before it is first
imported; ``ojs-server --workers N`` does this) the counters and histograms are written to
per-process files and :attr:`JobMetrics.registry` sums every process's files, so a scrape
answered by any process reports the whole server.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, values
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from .model import Event
from .prometheus_rate_limits import MAX_KEYS as RATE_LIMIT_LABELS
from .prometheus_rate_limits import RateLimitMetrics
from .prometheus_scheduling import MAX_POOLS as POOL_LABELS
from .prometheus_scheduling import SchedulingMetrics
from .states import JobState

if TYPE_CHECKING:
    from .service import JobService

__all__ = [
    "CONTENT_TYPE",
    "DURATION_BUCKETS",
    "OTHER",
    "QUEUE_TIME_BUCKETS",
    "JobMetrics",
    "LabelCap",
    "multiprocess",
]

log = logging.getLogger("ojs.metrics")

#: The exposition format served (Prometheus text format 0.0.4).
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
#: The label value of every job type (or queue) beyond the cap.
OTHER = "_other"
#: The spec's recommended buckets (observability §8.2).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
QUEUE_TIME_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 600, 1800, 3600)

#: Event type -> the counter it increments.
_COUNTED = {
    "job.enqueued": "enqueued",
    "job.completed": "completed",
    "job.discarded": "failed",
    "job.retrying": "retried",
    "job.cancelled": "cancelled",
    "job.expired": "expired",
}


_TENANT_COUNTED = {
    "job.enqueued": "enqueued",
    "job.completed": "processed",
    "job.discarded": "failed",
}
_DEPTH_STATES = (JobState.AVAILABLE, JobState.SCHEDULED, JobState.RETRYABLE, JobState.PENDING)


def multiprocess() -> bool:
    """Whether prometheus-client runs in multiprocess mode (chosen when it was imported)."""
    return values.ValueClass is not values.MutexValue


#: Every event type :meth:`JobMetrics.observe` looks at.
_OBSERVED = frozenset({*_COUNTED, "job.failed", "job.started"})


class LabelCap:
    """Maps values to themselves for the first ``limit`` distinct ones, then to ``_other``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        """The label value for ``value``."""
        if value in self._seen:
            return value
        if len(self._seen) < self.limit:
            self._seen.add(value)
            return value
        return OTHER


class JobMetrics:
    """The OJS job metrics of one service, in their own registry (or ``registry``)."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        max_types: int = 200,
        max_queues: int = 100,
        refresh_interval: float = 5.0,
        worker_stale_after: float = 60.0,
        max_tenants: int = 1000,
    ) -> None:
        #: The registry to expose. In multiprocess mode it reads every process's files, and
        #: the metrics themselves are registered nowhere (:attr:`metric_registry` is None).
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metric_registry: CollectorRegistry | None = self.registry
        if multiprocess():
            MultiProcessCollector(self.registry)  # type: ignore[no-untyped-call]
            self.metric_registry = None
        self.type_label = LabelCap(max_types)
        self.queue_label = LabelCap(max_queues)
        self.tenant_label = LabelCap(max_tenants)
        self._tenant_counters = {
            name: Counter(
                f"ojs_tenant_jobs_{name}",
                help,
                ("tenant_id", "queue"),
                registry=self.metric_registry,
            )
            for name, help in (
                ("enqueued", "Total jobs enqueued per tenant"),
                ("processed", "Total jobs that completed per tenant"),
                ("failed", "Total jobs discarded after failing per tenant"),
            )
        }
        self._tenant_gauges: dict[tuple[str, str], int] = {}
        #: How long the backend-read gauges are reused before a scrape reads them again.
        self.refresh_interval = refresh_interval
        #: A worker counts as active while its last heartbeat is this recent.
        self.worker_stale_after = worker_stale_after
        labels = ("queue", "type")
        self._counters = {
            name: Counter(f"ojs_job_{name}", help, labels, registry=self.metric_registry)
            for name, help in (
                ("enqueued", "Total jobs enqueued"),
                ("completed", "Total jobs that reached the completed state"),
                ("failed", "Total jobs that reached the discarded state after failing"),
                ("retried", "Total retry attempts scheduled"),
                ("cancelled", "Total jobs cancelled"),
                ("expired", "Total jobs expired via their TTL"),
            )
        }
        self.duration = Histogram(
            "ojs_job_duration_seconds",
            "Job processing duration (active to completed, retryable or discarded)",
            ("queue", "type", "state"),
            buckets=DURATION_BUCKETS,
            registry=self.metric_registry,
        )
        self.queue_time = Histogram(
            "ojs_job_queue_time_seconds",
            "Time from enqueue (or scheduled time) to the first execution start",
            labels,
            buckets=QUEUE_TIME_BUCKETS,
            registry=self.metric_registry,
        )
        self._service: JobService | None = None
        #: Labelled children by (metric, label values...): as bounded as the label caps.
        self._series: dict[tuple[str, ...], Any] = {}
        self._depth: dict[tuple[str, str], int] = {}
        self._workers: int | None = None
        self._refreshed = -float("inf")
        self._lock = asyncio.Lock()
        #: Fair scheduling's metrics (:mod:`ojs_core.prometheus_scheduling`).
        self.scheduling = SchedulingMetrics(
            self.metric_registry, self.queue_label, LabelCap(POOL_LABELS)
        )
        #: The rate-limiting extension's metrics (:mod:`ojs_core.prometheus_rate_limits`).
        self.rate_limits = RateLimitMetrics(self.metric_registry, LabelCap(RATE_LIMIT_LABELS))
        self.registry.register(_BackendGauges(self))

    def attach(self, service: JobService) -> None:
        """Observe ``service``'s events, and read its backend for the gauges."""
        self._service = service
        service.observers.add(self.observe)
        service.observers.add(self.scheduling.observe)
        self.rate_limits.attach(service.rate_limits)

    def observe(self, events: Sequence[Event]) -> None:
        """Count one batch of lifecycle events (the :mod:`ojs_core.observe` hook)."""
        series = self._series
        for event in events:
            kind = event.type
            if kind not in _OBSERVED:
                continue
            data = event.data
            queue, job_type = data.get("queue"), data.get("job_type")
            if not isinstance(queue, str) or not isinstance(job_type, str):
                continue
            q, t = self.queue_label(queue), self.type_label(job_type)
            tenant = data.get("tenant_id")
            if isinstance(tenant, str):
                self._count_tenant(kind, tenant, q)
            if kind == "job.started":
                value = data.get("queue_time_ms")
                key: tuple[str, ...] = ("queue_time", q, t)
            elif kind in ("job.completed", "job.failed"):
                value = data.get("duration_ms")
                key = ("duration", q, t, str(data.get("state", "")))
            else:
                value = None
                key = ()
            counter = _COUNTED.get(kind)
            if counter is not None:
                # A labelled child is looked up once per label set: labels() validates and
                # locks on every call, which costs more than the increment itself.
                ckey = (counter, q, t)
                child = series.get(ckey)
                if child is None:
                    child = series[ckey] = self._counters[counter].labels(q, t)
                child.inc()
            if isinstance(value, int | float):
                child = series.get(key)
                if child is None:
                    metric = self.queue_time if key[0] == "queue_time" else self.duration
                    child = series[key] = metric.labels(*key[1:])
                child.observe(value / 1000)

    def _count_tenant(self, kind: str, tenant: str, queue: str) -> None:
        name = _TENANT_COUNTED.get(kind)
        if name is None:
            return
        key = ("tenant", name, self.tenant_label(tenant), queue)
        child = self._series.get(key)
        if child is None:
            child = self._series[key] = self._tenant_counters[name].labels(key[2], queue)
        child.inc()

    async def refresh(self, *, force: bool = False) -> None:
        """Read queue depths and live workers from the backend, unless read recently.

        Concurrent callers share one read. A failed read keeps the previous values (logged).
        """
        if self._service is None:
            return
        async with self._lock:
            if not force and time.monotonic() - self._refreshed < self.refresh_interval:
                return
            try:
                await self._read(self._service)
            except Exception:
                log.warning("could not read queue depths for metrics", exc_info=True)
            self._refreshed = time.monotonic()

    async def _read(self, service: JobService) -> None:
        backend = service.backend
        queues = await backend.list_queues()
        gate = asyncio.Semaphore(8)

        async def stats(name: str) -> tuple[str, dict[JobState, int]]:
            async with gate:
                return name, (await backend.queue_stats(name)).counts

        depth: dict[tuple[str, str], int] = {}
        for name, counts in await asyncio.gather(*(stats(q.name) for q in queues)):
            label = self.queue_label(name)
            for state in JobState:
                key = (label, state.value)
                depth[key] = depth.get(key, 0) + counts.get(state, 0)
        horizon = service.now() - timedelta(seconds=self.worker_stale_after)
        workers = await backend.list_workers()
        self._workers = sum(1 for w in workers if w.last_seen >= horizon)
        self._depth = depth
        self._tenant_gauges = await self._read_tenants(service)
        await self.scheduling.read(service)
        await self.rate_limits.read()

    async def _read_tenants(self, service: JobService) -> dict[tuple[str, str], int]:
        """Active jobs and queue depth of each configured tenant (at most ``max_tenants``
        read; the label of any beyond the cap is ``_other``)."""
        tenancy = service.tenancy
        if not tenancy.supported or tenancy.counts is None:
            return {}
        configs = (await tenancy.configs())[: self.tenant_label.limit]
        gate = asyncio.Semaphore(8)

        async def counts(tenant: str) -> tuple[str, dict[JobState, int]]:
            async with gate:
                return tenant, await tenancy.stats_counts(tenant)

        out: dict[tuple[str, str], int] = {}
        for tenant, got in await asyncio.gather(*(counts(c.tenant_id) for c in configs)):
            label = self.tenant_label(tenant)
            active = got.get(JobState.ACTIVE, 0)
            depth = sum(got.get(s, 0) for s in _DEPTH_STATES)
            out[(label, "active")] = out.get((label, "active"), 0) + active
            out[(label, "depth")] = out.get((label, "depth"), 0) + depth
        return out

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format (:data:`CONTENT_TYPE`)."""
        return generate_latest(self.registry)

    def _gauges(self) -> Iterable[Metric]:
        depth = GaugeMetricFamily(
            "ojs_queue_depth",
            "Current number of jobs per queue per state",
            labels=("queue", "state"),
        )
        for (queue, state), count in sorted(self._depth.items()):
            depth.add_metric((queue, state), count)
        yield depth
        if self._tenant_gauges:
            active = GaugeMetricFamily(
                "ojs_tenant_jobs_active", "Active jobs per tenant", labels=("tenant_id",)
            )
            waiting = GaugeMetricFamily(
                "ojs_tenant_queue_depth",
                "Waiting jobs (available, scheduled, retryable, pending) per tenant",
                labels=("tenant_id",),
            )
            for (tenant, kind), value in sorted(self._tenant_gauges.items()):
                (active if kind == "active" else waiting).add_metric((tenant,), value)
            yield active
            yield waiting
        yield from self.scheduling.gauges()
        yield from self.rate_limits.gauges()
        if self._workers is not None:
            yield GaugeMetricFamily(
                "ojs_workers_active",
                "Workers whose last heartbeat is recent",
                value=self._workers,
            )


class _BackendGauges(Collector):
    """The gauges read from the backend, as of the last :meth:`JobMetrics.refresh`."""

    def __init__(self, metrics: JobMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        """Yield the cached gauges."""
        return self._metrics._gauges()

    def describe(self) -> Iterable[Metric]:
        """Nothing: names are not checked for this collector (its values are cached)."""
        return ()
