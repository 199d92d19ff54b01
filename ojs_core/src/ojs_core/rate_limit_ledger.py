"""This process's bookkeeping of rate-limit refusals (the rate-limiting extension).

Which jobs wait on which key (a refused job counts as waiting for :data:`WAITING_S` after its
last refusal), the events each fetch's decisions call for (``rate_limit.released``,
``rate_limit.exceeded`` at most once per key and strategy a second, ``rate_limit.dropped``,
and the ``tenant.limit_exceeded`` / ``scheduling.pool_overloaded`` of tenant and pool keys),
and the observers of every refusal and release (the metrics, ``ojs_core.prometheus``).
The admission itself is :mod:`ojs_core.rate_limiting`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Protocol

from .events import make_event
from .model import Event, Job
from .rate_limit_rules import Decision

__all__ = ["EXCEEDED_EVERY_S", "MAX_WAITING", "WAITING_S", "Ledger", "Refused"]

#: A refused job counts as waiting this long after its last refusal; a waiting job is refused
#: again every fetch that pulls it, well within this.
WAITING_S = 30.0
#: Waiting jobs remembered per key, at most.
MAX_WAITING = 10_000
#: ``rate_limit.exceeded`` is emitted at most once per key, strategy and this many seconds.
EXCEEDED_EVERY_S = 1.0

#: Told of every refusal: ``(key, strategy)``.
OnRefused = Callable[[str, str], None]
#: Told of every waiting job a key admitted at last: ``(key, seconds since its first refusal)``.
OnReleased = Callable[[str, float], None]


class Refused(Protocol):
    """A refusal as an admission records it."""

    @property
    def key(self) -> str:
        """The key that refused."""

    @property
    def decision(self) -> Decision:
        """Its decision."""


class Ledger:
    """Waiting jobs per key, event throttling and refusal observers, for one service."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        #: Seconds on the service's clock (injectable for tests).
        self._clock = clock
        #: key -> {job id: (time of its first refusal, of its last)}.
        self._waiting: dict[str, dict[str, tuple[float, float]]] = {}
        self._exceeded_at: dict[tuple[str, str], float] = {}
        self.on_refused: list[OnRefused] = []
        self.on_released: list[OnReleased] = []

    def note(
        self,
        now: datetime,
        admitted: Mapping[str, Sequence[str]],
        refused: Mapping[str, Refused],
        active: set[str],
        dropped: Sequence[Job],
    ) -> list[Event]:
        """Update the waiting sets after a fetch (``admitted``: job id -> the keys that
        admitted it; ``active``: the jobs it claimed); the events it calls for."""
        clock = self._clock()
        events: list[Event] = []
        for job_id, keys in admitted.items():
            for key in keys:
                waiting = self._waiting.get(key)
                since = waiting.pop(job_id, None) if waiting and job_id in active else None
                if since is None:
                    continue
                for observe in self.on_released:
                    observe(key, clock - since[0])
                events.append(
                    make_event(
                        "rate_limit.released",
                        now,
                        {"key": key, "strategy": "wait", "job_id": job_id},
                        subject=job_id,
                    )
                )
        dropped_ids = {job.id for job in dropped}
        for job_id, refusal in refused.items():
            d = refusal.decision
            strategy = d.strategy or "rate"
            for observe_refusal in self.on_refused:
                observe_refusal(refusal.key, strategy)
            if job_id not in dropped_ids:
                waiting = self._waiting.setdefault(refusal.key, {})
                first = waiting.get(job_id)
                if first is not None or len(waiting) < MAX_WAITING:
                    waiting[job_id] = (clock if first is None else first[0], clock)
            mark = (refusal.key, strategy)
            if clock - self._exceeded_at.get(mark, -EXCEEDED_EVERY_S) >= EXCEEDED_EVERY_S:
                self._exceeded_at[mark] = clock
                events.extend(self._exceeded(now, refusal, strategy))
        for job in dropped:
            events.append(
                make_event(
                    "rate_limit.dropped",
                    now,
                    {"key": refused[job.id].key, "job_id": job.id, "job_type": job.type},
                    subject=job.id,
                )
            )
        return events

    def _exceeded(self, now: datetime, refusal: Refused, strategy: str) -> list[Event]:
        d, key = refusal.decision, refusal.key
        events: list[Event] = []
        if key.startswith("pool:"):
            events.append(
                make_event(
                    "scheduling.pool_overloaded",
                    now,
                    {
                        "pool": key[len("pool:") :],
                        "active_jobs": d.current,
                        "waiting_jobs": len(self._waiting.get(key, ())),
                    },
                )
            )
        if key.startswith("tenant:"):
            events.append(
                make_event(
                    "tenant.limit_exceeded",
                    now,
                    {
                        "tenant_id": key[len("tenant:") :],
                        "limit": "max_concurrency",
                        "current": d.current,
                        "maximum": d.limit,
                    },
                )
            )
        events.append(
            make_event(
                "rate_limit.exceeded",
                now,
                {"key": key, "strategy": strategy, "limit": d.limit, "current": d.current},
            )
        )
        return events

    def waiting_count(self, key: str) -> int:
        """Jobs refused by ``key`` in the last :data:`WAITING_S` and not admitted since."""
        waiting = self._waiting.get(key)
        if not waiting:
            return 0
        horizon = self._clock() - WAITING_S
        for job_id in [j for j, (_, last) in waiting.items() if last < horizon]:
            del waiting[job_id]
        return len(waiting)

    def waiting_counts(self) -> dict[str, int]:
        """:meth:`waiting_count` of every key with waiting jobs."""
        counts = {key: self.waiting_count(key) for key in list(self._waiting)}
        for key in [k for k, n in counts.items() if not n]:
            del self._waiting[key]
            del counts[key]
        return counts

    def reset(self) -> None:
        """Forget every waiting job and throttle mark (tests)."""
        self._waiting.clear()
        self._exceeded_at.clear()
