"""Prometheus metrics of the fair-scheduling extension (§11.2), part of
:class:`~ojs_core.prometheus.JobMetrics` (the ``metrics`` extra).

- ``ojs_scheduling_dispatch_total{queue, pool}``: jobs dispatched (``job.started``), with the
  fetching worker's pool (``""`` for none);
- ``ojs_scheduling_starvation_events_total{queue}``: ``scheduling.queue_starved`` events;
- ``ojs_scheduling_dispatch_ratio{queue}``: each queue's share of the last minute's
  dispatches (this process's, :mod:`ojs_core.scheduling_stats`), read at a scrape;
- ``ojs_scheduling_pool_utilization{pool}``: active jobs over the concurrency limit of each
  pool with one (the holders of its rate-limit key), read at a scrape.

The spec's ``ojs.scheduling.queue_wait_duration`` is ``ojs_job_queue_time_seconds``, which
:class:`~ojs_core.prometheus.JobMetrics` already exposes. Labels are capped like the job
metrics' (the queue cap is shared; at most 100 pools get a label of their own).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, Metric

from .backend import RateLimitStore
from .model import Event
from .pools import pool_key

if TYPE_CHECKING:
    from .service import JobService

__all__ = ["SchedulingMetrics"]

#: Pools with a label value of their own, at most.
MAX_POOLS = 100


class SchedulingMetrics:
    """The fair-scheduling counters (fed by events) and gauges (read at a scrape)."""

    def __init__(
        self,
        registry: CollectorRegistry | None,
        queue_label: Callable[[str], str],
        pool_label: Callable[[str], str],
    ) -> None:
        self._queue_label = queue_label
        self._pool_label = pool_label
        self.dispatch = Counter(
            "ojs_scheduling_dispatch_total",
            "Jobs dispatched per queue and worker pool",
            ("queue", "pool"),
            registry=registry,
        )
        self.starvation = Counter(
            "ojs_scheduling_starvation_events_total",
            "Times a queue was served after going without dispatches for its rotation interval",
            ("queue",),
            registry=registry,
        )
        self._children: dict[tuple[str, ...], Any] = {}
        self._ratios: dict[str, float] = {}
        self._utilization: dict[str, float] = {}

    def observe(self, events: Sequence[Event]) -> None:
        """Count the dispatches and starvation events of one published batch."""
        for event in events:
            kind = event.type
            if kind not in ("job.started", "scheduling.queue_starved"):
                continue
            queue = event.data.get("queue")
            if not isinstance(queue, str):
                continue
            q = self._queue_label(queue)
            if kind == "job.started":
                pool = event.data.get("pool")
                p = self._pool_label(pool) if isinstance(pool, str) else ""
                key: tuple[str, ...] = ("dispatch", q, p)
            else:
                key = ("starved", q)
            child = self._children.get(key)
            if child is None:
                metric = self.dispatch if key[0] == "dispatch" else self.starvation
                child = self._children[key] = metric.labels(*key[1:])
            child.inc()

    async def read(self, service: JobService) -> None:
        """Read the gauges (a scrape's refresh)."""
        view = await service.scheduling_stats.view()
        ratios: dict[str, float] = {}
        for q in view["queues"]:
            label = self._queue_label(q["name"])
            ratios[label] = ratios.get(label, 0.0) + q["dispatch_ratio_1m"]
        self._ratios = ratios
        utilization: dict[str, float] = {}
        backend = service.backend
        if service.pools.store is not None and isinstance(backend, RateLimitStore):
            for pool in (await service.pools.current()).values():
                if pool.concurrency is None:
                    continue
                state = await backend.get_rate_limit(pool_key(pool.name))
                active = 0 if state is None else len(state.holders)
                utilization[self._pool_label(pool.name)] = active / pool.concurrency
        self._utilization = utilization

    def gauges(self) -> Iterable[Metric]:
        """The gauges as of the last :meth:`read`."""
        if self._ratios:
            ratio = GaugeMetricFamily(
                "ojs_scheduling_dispatch_ratio",
                "Share of the last minute's dispatches per queue (this process)",
                labels=("queue",),
            )
            for queue, value in sorted(self._ratios.items()):
                ratio.add_metric((queue,), value)
            yield ratio
        if self._utilization:
            used = GaugeMetricFamily(
                "ojs_scheduling_pool_utilization",
                "Active jobs over the concurrency limit per worker pool",
                labels=("pool",),
            )
            for pool, value in sorted(self._utilization.items()):
                used.add_metric((pool,), value)
            yield used
