"""Noisy-neighbour detection (multi-tenancy spec §9.1): which tenants use a share of the shared
system out of proportion to the others.

Four signals, each compared with the *other* tenants (a tenant's own load never raises the
baseline it is judged against, so two tenants are enough to detect one):

============================ ==================================================================
``queue_depth_ratio``        waiting jobs (available, scheduled, retryable, pending) over
                             ``depth_ratio`` (10) times the others' median
``enqueue_rate_ratio``       jobs enqueued in the window over ``enqueue_ratio`` (5) times the
                             others' mean
``active_job_ratio``         more than ``active_share`` (50 %) of all active jobs
``error_rate_ratio``         failed attempts / finished attempts in the window over
                             ``error_ratio`` (3) times the others' rate
============================ ==================================================================

Counts (depth, active) are the backend's per-tenant counters
(:class:`~ojs_core.backend.TenantCounts`); rates are read from the event log (``job.enqueued``,
``job.completed``, ``job.failed``), which every replica shares, over a sliding ``window``
measured with the service's clock (injectable: ``ManualClock`` in tests). A detector starts
reading the log at the window's start (found by a binary search over the log), not at its
beginning, and one that falls behind skips ahead the same way (to the newest ``MAX_READ``
events when the window holds more than a pass reads). Small numbers are
not judged (``min_jobs``, ``min_active``): one tenant with three jobs is not a neighbour
problem. The tenants judged are the configured ones, those reported noisy (until cleared),
and of the others seen in the window the :data:`MAX_JUDGED` (1,000) most active (enqueued +
finished jobs in the window): a producer can tag jobs with any number of tenant ids, and the
cost of a pass must not grow with them. An assessment is O(T log T) for T tenants judged (the
baselines are computed once, each tenant's leave-one-out value from them in O(1) or
O(log T)), and reads the counters of at most :data:`COUNT_READS` tenants at a time.

Detection is not throttling: nothing is slowed down (the spec's automatic throttling is a
MAY, and fairness weights stay as configured). A tenant that becomes noisy publishes
``tenant.noisy_neighbor.detected`` with its signals, and ``tenant.noisy_neighbor.cleared``
once no signal holds; :meth:`NoisyNeighbors.assess` is run whenever the tenant admin API shows
statistics and by :meth:`NoisyNeighbors.run` every ``interval_s``. Each process keeps its own
record of which tenants it has reported, so with several replicas checking, each may publish
the transition once.
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import logging
import math
from collections import deque
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import attrs

from .backend import EventFilter
from .errors import OJSError
from .events import make_event
from .model import Event
from .states import JobState
from .tenancy import DEPTH_STATES
from .timeutil import format_ts

if TYPE_CHECKING:
    from .service import JobService

__all__ = [
    "CLEARED",
    "COUNT_READS",
    "DETECTED",
    "MAX_JUDGED",
    "Assessment",
    "NoisyNeighbors",
    "Signal",
    "Thresholds",
    "judge",
]

log = logging.getLogger("ojs.tenancy")

DETECTED = "tenant.noisy_neighbor.detected"
CLEARED = "tenant.noisy_neighbor.cleared"
#: Events read from the log per assessment. A pass that stops here leaves the next one to skip
#: ahead: to the window's start, or to the newest ``MAX_READ`` events when the window holds more.
MAX_READ = 10_000
_PAGE = 1000
#: Tenants judged per assessment beyond the configured ones and those reported noisy: the most
#: active ones seen in the window.
MAX_JUDGED = 1000
#: Per-tenant counter reads in flight at once during an assessment.
COUNT_READS = 16
_WATCHED = ("job.enqueued", "job.completed", "job.failed")


@attrs.frozen(kw_only=True)
class Thresholds:
    """When a tenant counts as noisy (spec §9.1's defaults; every value configurable)."""

    depth_ratio: float = 10.0
    enqueue_ratio: float = 5.0
    active_share: float = 0.5
    error_ratio: float = 3.0
    window: timedelta = timedelta(minutes=5)
    #: A depth, enqueue or error signal needs at least this many of the tenant's jobs.
    min_jobs: int = 10
    #: The active-share signal needs at least this many active jobs in all.
    min_active: int = 4


@attrs.frozen
class Signal:
    """One signal that holds: its value, the threshold it passed and the baseline it was
    compared with."""

    name: str
    value: float
    threshold: float
    baseline: float

    def to_wire(self) -> dict[str, Any]:
        """The API form."""
        return {
            "signal": self.name,
            "value": round(self.value, 4),
            "threshold": self.threshold,
            "baseline": round(self.baseline, 4),
        }


@attrs.frozen
class Assessment:
    """A tenant's signals now, and since when it has been reported noisy (by this process)."""

    tenant: str
    signals: tuple[Signal, ...] = ()
    since: datetime | None = None

    @property
    def detected(self) -> bool:
        """Whether any signal holds."""
        return bool(self.signals)

    def to_wire(self) -> dict[str, Any]:
        """The ``noisy_neighbor`` object of the tenant statistics."""
        return {
            "detected": self.detected,
            "signals": [s.to_wire() for s in self.signals],
            "since": format_ts(self.since) if self.since is not None else None,
        }


@attrs.define
class _Usage:
    """A tenant's figures for one assessment."""

    depth: int = 0
    active: int = 0
    enqueued: int = 0
    completed: int = 0
    failed: int = 0

    @property
    def finished(self) -> int:
        return self.completed + self.failed

    @property
    def error_rate(self) -> float:
        return self.failed / self.finished if self.finished else 0.0

    @property
    def activity(self) -> int:
        """Jobs enqueued or finished in the window (which tenants are judged when too many)."""
        return self.enqueued + self.finished


def _median_without(ordered: Sequence[int], value: int) -> float:
    """The median of ``ordered`` (sorted) with one occurrence of ``value`` removed, in
    O(log n): the remaining list's ``k``-th item is ``ordered[k]`` before the removed index,
    ``ordered[k + 1]`` from it on."""
    gone = bisect.bisect_left(ordered, value)
    n = len(ordered) - 1

    def at(k: int) -> int:
        return ordered[k] if k < gone else ordered[k + 1]

    if n % 2:
        return float(at(n // 2))
    return (at(n // 2 - 1) + at(n // 2)) / 2


def judge(usage: Mapping[str, _Usage], th: Thresholds) -> dict[str, tuple[Signal, ...]]:
    """Each tenant's signals, every baseline over the *other* tenants of ``usage``. The sums
    and the sorted depths are computed once, so each tenant's leave-one-out baseline costs
    O(1) (means, the active total) or O(log T) (the median depth): O(T log T) in all, where
    comparing each tenant with a list of the others would be O(T² log T)."""
    n = len(usage)
    if n < 2:
        return {tenant: () for tenant in usage}  # nobody to be a neighbour to
    depths = sorted(u.depth for u in usage.values())
    total_enqueued = sum(u.enqueued for u in usage.values())
    total_active = sum(u.active for u in usage.values())
    rates = [u.error_rate for u in usage.values() if u.finished]
    total_rate, rated = math.fsum(rates), len(rates)
    out: dict[str, tuple[Signal, ...]] = {}
    for tenant, mine in usage.items():
        signals: list[Signal] = []
        baseline = max(_median_without(depths, mine.depth), 1.0)
        if mine.depth >= th.min_jobs and mine.depth > th.depth_ratio * baseline:
            signals.append(
                Signal("queue_depth_ratio", mine.depth / baseline, th.depth_ratio, baseline)
            )
        baseline = max((total_enqueued - mine.enqueued) / (n - 1), 1.0)
        if mine.enqueued >= th.min_jobs and mine.enqueued > th.enqueue_ratio * baseline:
            signals.append(
                Signal("enqueue_rate_ratio", mine.enqueued / baseline, th.enqueue_ratio, baseline)
            )
        if total_active >= th.min_active and mine.active > th.active_share * total_active:
            share = mine.active / total_active
            signals.append(Signal("active_job_ratio", share, th.active_share, total_active))
        others_rated = rated - (1 if mine.finished else 0)
        others_rate = total_rate - (mine.error_rate if mine.finished else 0.0)
        baseline = max(max(others_rate, 0.0) / others_rated if others_rated else 0.0, 0.01)
        if mine.finished >= th.min_jobs and mine.error_rate > th.error_ratio * baseline:
            signals.append(
                Signal("error_rate_ratio", mine.error_rate / baseline, th.error_ratio, baseline)
            )
        out[tenant] = tuple(signals)
    return out


class NoisyNeighbors:
    """Noisy-neighbour detection for one :class:`~ojs_core.service.JobService`."""

    def __init__(
        self,
        service: JobService,
        thresholds: Thresholds | None = None,
        *,
        max_judged: int = MAX_JUDGED,
    ) -> None:
        self.service = service
        self.thresholds = thresholds or Thresholds()
        #: How many tenants beyond the configured and the reported ones are judged.
        self.max_judged = max_judged
        #: The event log's position read so far, and the watched events inside the window.
        self._after = 0
        #: Whether the next pass must first skip what lies before the window: the first pass
        #: (a new replica must not read the log from its beginning), and one after a pass
        #: that stopped at ``MAX_READ`` with events left (it would otherwise never catch up).
        self._seek = True
        self._recent: deque[Event] = deque()
        #: Tenants reported noisy by this process, and since when.
        self._noisy: dict[str, datetime] = {}
        self._lock = asyncio.Lock()
        #: Whether this process published an event of a tenant's job since the last periodic
        #: pass: a server without tenants then never reads the event log for nothing.
        self._tenant_activity = False
        service.observers.add(self._observe)

    def _observe(self, events: Sequence[Event]) -> None:
        if not self._tenant_activity:
            self._tenant_activity = any("tenant_id" in e.data for e in events)

    async def assess(self) -> dict[str, Assessment]:
        """Every known tenant's assessment now; publishes the transitions (detected,
        cleared) since the last one."""
        async with self._lock:
            now = self.service.now()
            await self._read_events(now)
            usage = await self._usage(now)
            out: dict[str, Assessment] = {}
            events: list[Event] = []
            judged = judge(usage, self.thresholds)
            for tenant in sorted(usage):
                signals = judged[tenant]
                since = self._noisy.get(tenant)
                if signals and since is None:
                    since = self._noisy[tenant] = now
                    data = {"tenant_id": tenant, "signals": [s.to_wire() for s in signals]}
                    events.append(make_event(DETECTED, now, data, subject=tenant))
                elif not signals and since is not None:
                    del self._noisy[tenant]
                    since = None
                    events.append(make_event(CLEARED, now, {"tenant_id": tenant}, tenant))
                out[tenant] = Assessment(tenant, signals, since)
            if events:
                await self.service.emit(events)
            return out

    async def run(self, interval_s: float) -> None:
        """Assess every ``interval_s`` seconds until cancelled (a failed pass is logged). A
        pass is skipped while nothing involves a tenant: no tenant job event published by
        this process since the last pass, no configured tenant, none reported noisy (each
        replica runs its own loop, so another replica's tenants are judged there)."""
        while True:
            await self.service.clock.sleep(interval_s)  # a ManualClock steps it in tests
            try:
                if not await self._involved():
                    continue
                self._tenant_activity = False
                await self.assess()
            except asyncio.CancelledError:
                raise
            except OJSError as exc:
                log.warning("noisy-neighbour check failed (%s)", exc)
            except Exception:
                log.exception("noisy-neighbour check failed")

    async def _involved(self) -> bool:
        if self._tenant_activity or self._noisy:
            return True
        tenancy = self.service.tenancy
        return tenancy.supported and bool(await tenancy.configs())

    # -- figures ----------------------------------------------------------------------------

    async def _read_events(self, now: datetime) -> None:
        """Read the watched events appended since the last pass (at most ``MAX_READ``); drop
        those out of the window. The first pass, and a pass after one that fell behind, first
        skip to the window's start (:meth:`_skip_ahead`)."""
        start = now - self.thresholds.window
        if self._seek:
            await self._skip_ahead(start)
        read = 0
        self._seek = False
        while True:
            if read >= MAX_READ:
                self._seek = True  # events left: the next pass skips ahead
                break
            page = await self.service.events(
                EventFilter(after=self._after, types=_WATCHED, limit=_PAGE)
            )
            for event in page:
                self._after = max(self._after, event.seq or 0)
                if event.time >= start and isinstance(event.data.get("tenant_id"), str):
                    self._recent.append(event)
            read += len(page)
            if len(page) < _PAGE:
                break
        while self._recent and self._recent[0].time < start:
            self._recent.popleft()

    # -- finding a place in the event log (one-event reads, O(log n) of them) ----------------

    async def _first_from(self, seq: int) -> Event | None:
        """The first logged event (of any type) numbered ``seq`` or more."""
        page = await self.service.events(EventFilter(after=max(seq - 1, 0), limit=1))
        return page[0] if page else None

    async def _tail(self) -> int:
        """The last logged event's number (``self._after`` when none follows it): doubling
        steps, then a binary search."""
        first = await self._first_from(self._after + 1)
        if first is None or first.seq is None:
            return self._after
        lo, step = first.seq, MAX_READ
        while (beyond := await self._first_from(lo + step)) is not None and beyond.seq:
            lo, step = beyond.seq, step * 2
        hi = lo + step - 1  # nothing from lo + step on
        while lo < hi:  # lo is an event's number; nothing after hi
            mid = (lo + hi + 1) // 2
            found = await self._first_from(mid)
            if found is None or found.seq is None or found.seq > hi:
                hi = mid - 1
            else:
                lo = found.seq
        return lo

    async def _last_before(self, start: datetime, tail: int) -> int:
        """The number of the last event before ``start`` (the log is in time order, up to
        the replicas' clock differences), at least ``self._after``: a binary search over
        ``(self._after, tail]``."""
        lo, hi = self._after, tail
        while lo < hi:  # every event up to lo is before start; every one after hi is not
            mid = (lo + hi + 1) // 2
            found = await self._first_from(mid)
            if found is None or found.seq is None or found.time >= start:
                hi = mid - 1
            else:
                lo = min(found.seq, hi)
        return lo

    async def _skip_ahead(self, start: datetime) -> None:
        """Skip the events a pass need not read: when more than ``MAX_READ`` follow the
        position read so far, go to the window's start; when the window itself holds more
        than that, to its newest ``MAX_READ`` events (the rates are then those of the most
        recent part of the window, for every tenant alike)."""
        tail = await self._tail()
        if tail - self._after <= MAX_READ:
            return
        self._after = max(self._after, await self._last_before(start, tail))
        if tail - self._after > MAX_READ:
            self._after = tail - MAX_READ

    async def _usage(self, now: datetime) -> dict[str, _Usage]:
        """The figures of the tenants judged: the configured ones, those reported noisy (until
        cleared, even once out of the window) and the ``max_judged`` most active others seen
        in the window; their counters read ``COUNT_READS`` at a time."""
        start = now - self.thresholds.window
        tenancy = self.service.tenancy
        seen: dict[str, _Usage] = {}
        for event in self._recent:
            if event.time < start:
                continue
            one = seen.setdefault(str(event.data["tenant_id"]), _Usage())
            if event.type == "job.enqueued":
                one.enqueued += 1
            elif event.type == "job.completed":
                one.completed += 1
            else:
                one.failed += 1
        kept = set(self._noisy)
        if tenancy.supported:
            kept.update(cfg.tenant_id for cfg in await tenancy.configs())
        usage = {tenant: seen.get(tenant) or _Usage() for tenant in kept}
        rest = (t for t in seen if t not in kept)
        # The most active first; ties by tenant id, so that the choice does not depend on
        # the order the events were read in.
        for tenant in heapq.nsmallest(self.max_judged, rest, key=lambda t: (-seen[t].activity, t)):
            usage[tenant] = seen[tenant]
        if tenancy.counts is not None:
            gate = asyncio.Semaphore(COUNT_READS)

            async def read(one: _Usage, tenant: str) -> None:
                async with gate:
                    counts = await tenancy.stats_counts(tenant)
                one.depth = sum(counts.get(s, 0) for s in DEPTH_STATES)
                one.active = counts.get(JobState.ACTIVE, 0)

            await asyncio.gather(*(read(one, tenant) for tenant, one in usage.items()))
        return usage
