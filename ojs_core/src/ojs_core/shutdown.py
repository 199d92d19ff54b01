"""Worker states of the graceful-shutdown extension (``ojs-graceful-shutdown.md``).

A worker reports its own state with each heartbeat (``state``): ``running``; ``quiet`` from
the moment it begins to shut down (it fetches no more and drains the jobs it holds; the spec's
quiet and drain phases); ``terminate`` in its final heartbeat. The server also sends a
*directive* (``running``, ``quiet``, ``terminate``) that an operator sets. A worker is handed
no job while either says anything but ``running`` (spec §5.1: "the backend MUST NOT assign new
jobs to a quiet worker"): :func:`accepts_jobs`, checked by every fetch that names a worker.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from .errors import ValidationError
from .model import WorkerInfo

__all__ = [
    "WORKER_STATES",
    "WorkerGate",
    "accepts_jobs",
    "effective_state",
    "parse_worker_state",
]

#: The states a worker may report, weakest first.
WORKER_STATES = ("running", "quiet", "terminate")
#: The spec's second shutdown phase is "drain"; a worker may name it, and is quiet then.
_ALIASES = {"draining": "quiet"}
_STRENGTH = {state: rank for rank, state in enumerate(WORKER_STATES)}


def parse_worker_state(raw: Any, path: str = "state") -> str:
    """The state a heartbeat reports. Absent means ``running``: a worker that does not speak
    the extension (the official SDKs) is running whenever it heartbeats, and a worker id
    reused by a new process must not stay quiet because its predecessor said so."""
    if raw is None:
        return "running"
    if isinstance(raw, str):
        state = _ALIASES.get(raw, raw)
        if state in _STRENGTH:
            return state
    raise ValidationError("must be running, quiet (or draining) or terminate", path=path)


def effective_state(worker: WorkerInfo) -> str:
    """The stronger of what the worker reported and what the server asked of it."""
    return max((worker.state, worker.directive), key=lambda s: _STRENGTH.get(s, 0))


def accepts_jobs(worker: WorkerInfo | None) -> bool:
    """Whether a fetch by this worker may be handed jobs (an unknown worker may)."""
    return worker is None or effective_state(worker) == "running"


class WorkerGate:
    """:func:`accepts_jobs` for the fetches of one process, reading each worker's record at
    most every ``ttl_s`` seconds: a fetch is the hot path, and a worker record changes only
    with a heartbeat or an operator's directive. What this process writes (heartbeats,
    directives) applies at once; what another replica writes, within ``ttl_s``.
    """

    def __init__(
        self,
        read: Callable[[str], Awaitable[WorkerInfo | None]],
        *,
        ttl_s: float = 1.0,
        max_workers: int = 10_000,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self.ttl_s = ttl_s
        self._max = max_workers
        self._monotonic = monotonic
        self._seen: dict[str, tuple[float, WorkerInfo | None]] = {}

    async def record(self, worker_id: str) -> WorkerInfo | None:
        """The worker's record as read at most ``ttl_s`` ago (``None``: unknown)."""
        hit = self._seen.get(worker_id)
        if hit is not None and hit[0] > self._monotonic():
            return hit[1]
        worker = await self._read(worker_id)
        self._remember(worker_id, worker)
        return worker

    async def accepts(self, worker_id: str) -> bool:
        """Whether a fetch by ``worker_id`` may be handed jobs now."""
        return accepts_jobs(await self.record(worker_id))

    def note(self, worker: WorkerInfo) -> None:
        """A record this process just wrote: it applies to the next fetch at once."""
        self._remember(worker.worker_id, worker)

    def forget(self) -> None:
        """Drop every remembered answer."""
        self._seen.clear()

    def _remember(self, worker_id: str, worker: WorkerInfo | None) -> None:
        if len(self._seen) >= self._max:
            self._seen.clear()  # bounded: thousands of short-lived worker ids
        self._seen[worker_id] = (self._monotonic() + self.ttl_s, worker)
