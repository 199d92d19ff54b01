"""Queue-level rate limits (rate-limiting extension §7.2, RL-R005): limits that apply to every
job of a queue whatever its own ``rate_limit``, configured by an operator.

``PUT /ojs/v1/admin/queues/{name}/rate-limit`` takes the override shape (``concurrency``,
``rate``, ``throttle``, optional ``expires_at``). The limit is stored as an override on the
rate-limit key ``queue-limit:<name>`` in the service's rate-limit store (shared by every
replica on NATS), and admitted like any key: a job of the queue counts against it as an extra
:class:`~ojs_core.rate_limiting.AdmissionKeys` key beside its own policy's, so both must allow
its start (the most restrictive wins). ``GET /ojs/v1/rate-limits/queue-limit:<name>`` shows
its counters.

Which queues have a limit is read from the store at most once a second per process (a
snapshot; a change made on this process applies here at once): for up to a second after a
limit is set on another replica, this one may start jobs of the queue without it, and a job's
slot released by a replica that has not seen the limit yet is freed by the repair of lost
releases instead (``ojs_core.rate_limiting``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from .envelope import validate_queue
from .errors import NotFoundError
from .model import Job, RateLimit
from .rate_limiting import AdmissionKeys, RateLimiting, parse_override

__all__ = ["PREFIX", "REFRESH_S", "QueueLimits", "queue_limit_key"]

log = logging.getLogger("ojs.rate_limits")

#: The rate-limit key of a queue's own limit is this prefix and the queue's name.
PREFIX = "queue-limit:"
#: How old the snapshot of limited queues may get before a fetch reads it again (seconds).
REFRESH_S = 1.0


def queue_limit_key(queue: str) -> str:
    """The rate-limit key holding ``queue``'s limit."""
    return PREFIX + queue


class QueueLimits:
    """The queue-level limits of one service: the admin operations and the admission keys."""

    def __init__(
        self,
        limits: RateLimiting,
        now: Callable[[], datetime],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limits = limits
        self._now = now
        self._clock = clock
        #: The queues with a live limit, as of :attr:`_read_at`.
        self._queues: frozenset[str] = frozenset()
        self._read_at = -float("inf")
        self._refreshing: asyncio.Task[None] | None = None
        #: The provider every fetch's admission consults.
        self.keys = AdmissionKeys(
            policy=self._policy, limited=self._limited, load=self._load, held=self._held
        )

    # -- admission ------------------------------------------------------------------------

    def _limited(self, job: Job) -> bool:
        self._refresh_soon()
        return job.queue in self._queues

    def _policy(self, job: Job) -> tuple[str, RateLimit] | None:
        if job.queue not in self._queues:
            return None
        # The limits themselves are the key's override; a job's own on_limit still applies.
        on_limit = job.rate_limit.on_limit if job.rate_limit is not None else "wait"
        key = queue_limit_key(job.queue)
        return key, RateLimit(key=key, on_limit=on_limit)

    def may_hold(self, job: Job) -> bool:
        """Whether ``job`` may hold a slot of its queue's limit (cheap: asked of every job that
        leaves ``active``)."""
        return job.queue in self._queues

    def _held(self, job: Job) -> str | None:
        return queue_limit_key(job.queue) if job.queue in self._queues else None

    async def _load(self, jobs: Sequence[Job]) -> None:
        if self._clock() - self._read_at >= REFRESH_S:
            await self.refresh()

    def _refresh_soon(self) -> None:
        if self._clock() - self._read_at < REFRESH_S:
            return
        task = self._refreshing
        if task is None or task.done():
            with contextlib.suppress(RuntimeError):  # no running loop: the next fetch will
                self._refreshing = asyncio.get_running_loop().create_task(self._refresh_quietly())

    async def _refresh_quietly(self) -> None:
        try:
            await self.refresh()
        except Exception:
            log.warning("could not read the queue-level rate limits", exc_info=True)

    async def refresh(self) -> None:
        """Read which queues have a live limit (one listing of the rate-limit keys)."""
        self._read_at = self._clock()
        now_ms = int(self._now().timestamp() * 1000)
        queues = set()
        for state in await self._limits.store.list_rate_limits():
            override = state.override
            if state.key.startswith(PREFIX) and override is not None and override.live(now_ms):
                queues.add(state.key[len(PREFIX) :])
        self._queues = frozenset(queues)

    # -- admin API (§7.2) ----------------------------------------------------------------

    async def get(self, queue: str) -> dict[str, Any]:
        """The queue's limit and its counters (``GET``); 404 when it has none."""
        validate_queue(queue, "name")
        found = await self._limits.get(queue_limit_key(queue))
        if "override" not in found:
            raise NotFoundError("queue rate limit", queue)
        return {"queue": queue, **found}

    async def put(self, queue: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Set the queue's limit (``PUT``); a body without limits removes it."""
        validate_queue(queue, "name")
        parse_override(body, self._now())  # refused before anything is written
        state = await self._limits.override(queue_limit_key(queue), body)
        self._set_local(queue, "override" in state)
        return {"queue": queue, **state}

    async def delete(self, queue: str) -> dict[str, Any]:
        """Remove the queue's limit (``DELETE``): the key's counters after; 404 when it had
        none."""
        await self.get(queue)
        state = await self._limits.override(queue_limit_key(queue), {})
        self._set_local(queue, False)
        return {"queue": queue, **state}

    def forget(self) -> None:
        """Drop the snapshot (after a reset): the next fetch reads the store again."""
        self._queues = frozenset()
        self._read_at = -float("inf")

    def _set_local(self, queue: str, limited: bool) -> None:
        self._queues = self._queues | {queue} if limited else self._queues - {queue}
