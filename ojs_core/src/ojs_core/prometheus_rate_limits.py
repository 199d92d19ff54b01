"""Prometheus metrics of the rate-limiting extension (§11.2), part of
:class:`~ojs_core.prometheus.JobMetrics` (the ``metrics`` extra).

- ``ojs_rate_limit_exceeded_total{key, strategy}``: every refusal of a job's start by a key
  (each time a fetch pulled a job its key held back; the ``rate_limit.exceeded`` event is sent
  at most once a second per key, the counter counts them all), counted by the process that
  refused;
- ``ojs_rate_limit_wait_duration_seconds{key}``: for a job a key held back, the time from its
  first refusal to its start (measured by the process that refused and then admitted it);
- ``ojs_rate_limit_active{key}``: jobs holding a slot of a key's concurrency limit, read from
  the store at a scrape (every replica reports the same value: aggregate with ``max``);
- ``ojs_rate_limit_waiting{key}``: jobs this process refused in the last 30 s and not yet
  started (:class:`~ojs_core.rate_limit_ledger.Ledger`).

Keys come from job envelopes, so their labels are capped: the first 100 distinct keys get one
of their own, the rest share ``_other``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from .rate_limiting import RateLimiting

__all__ = ["MAX_KEYS", "WAIT_BUCKETS", "RateLimitMetrics"]

#: Rate-limit keys with a label value of their own, at most.
MAX_KEYS = 100
#: Buckets of the wait histogram, in seconds (limits hold jobs from milliseconds to hours).
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)


class RateLimitMetrics:
    """The rate-limit counters (fed by the admission's ledger) and gauges (read at a scrape)."""

    def __init__(self, registry: CollectorRegistry | None, key_label: Callable[[str], str]):
        self._key_label = key_label
        self.exceeded = Counter(
            "ojs_rate_limit_exceeded_total",
            "Times a rate-limit key held a job's start back",
            ("key", "strategy"),
            registry=registry,
        )
        self.wait = Histogram(
            "ojs_rate_limit_wait_duration_seconds",
            "Time a job waited on a rate-limit key, from its first refusal to its start",
            ("key",),
            buckets=WAIT_BUCKETS,
            registry=registry,
        )
        self._children: dict[tuple[str, ...], Any] = {}
        self._active: dict[str, int] = {}
        self._waiting: dict[str, int] = {}
        self._limits: RateLimiting | None = None

    def attach(self, limits: RateLimiting) -> None:
        """Count ``limits``' refusals and releases from now on."""
        self._limits = limits
        limits.ledger.on_refused.append(self._refused)
        limits.ledger.on_released.append(self._released)

    def _refused(self, key: str, strategy: str) -> None:
        child_key = ("exceeded", self._key_label(key), strategy)
        child = self._children.get(child_key)
        if child is None:
            child = self._children[child_key] = self.exceeded.labels(*child_key[1:])
        child.inc()

    def _released(self, key: str, waited_s: float) -> None:
        child_key = ("wait", self._key_label(key))
        child = self._children.get(child_key)
        if child is None:
            child = self._children[child_key] = self.wait.labels(child_key[1])
        child.observe(waited_s)

    async def read(self) -> None:
        """Read the gauges (a scrape's refresh): the keys' holders from the store."""
        limits = self._limits
        if limits is None:
            return
        active: dict[str, int] = {}
        for state in await limits.store.list_rate_limits():
            if state.holders:
                label = self._key_label(state.key)
                active[label] = active.get(label, 0) + len(state.holders)
        waiting: dict[str, int] = {}
        for key, count in limits.ledger.waiting_counts().items():
            label = self._key_label(key)
            waiting[label] = waiting.get(label, 0) + count
        self._active, self._waiting = active, waiting

    def gauges(self) -> Iterable[Metric]:
        """The gauges as of the last :meth:`read`."""
        for name, help_text, values in (
            ("ojs_rate_limit_active", "Jobs holding a slot of a rate-limit key", self._active),
            (
                "ojs_rate_limit_waiting",
                "Jobs a rate-limit key held back in the last 30 s, not started since",
                self._waiting,
            ),
        ):
            if values:
                family = GaugeMetricFamily(name, help_text, labels=("key",))
                for key, value in sorted(values.items()):
                    family.add_metric((key,), value)
                yield family
