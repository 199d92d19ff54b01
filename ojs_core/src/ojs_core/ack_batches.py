"""The in-process :class:`~ojs_core.worker.Worker`'s acknowledgements, written in batches.

Handlers that finish while an acknowledgement is being written are acknowledged together in
the next write (:meth:`~ojs_core.service.JobService.ack_many`): one at a time in flight, so a
worker whose handlers finish apart acks each at once, and one whose handlers finish together
(a busy one) pays one batched write for many. A backend with batched compare-and-swaps
(``BatchUpdates``) then writes the index entries of all, then the records of all, in two
pipelined rounds instead of two per job; every job is still decided on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from .errors import OJSError

if TYPE_CHECKING:
    from .service import JobService

__all__ = ["AckBatches"]


class AckBatches:
    """Acknowledgements of one worker: :meth:`ack` waits for its job's outcome."""

    def __init__(self, service: JobService, worker_id: str) -> None:
        self.service = service
        self.worker_id = worker_id
        self._pending: list[tuple[str, Any, asyncio.Future[Any]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def ack(self, job_id: str, result: Any) -> None:
        """Acknowledge ``job_id`` with ``result``; raises what ``JobService.ack`` would."""
        loop = asyncio.get_running_loop()
        outcome: asyncio.Future[Any] = loop.create_future()
        self._pending.append((job_id, result, outcome))
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._write())
        # Shielded: a handler task cancelled meanwhile leaves the batch to be written.
        stored = await asyncio.shield(outcome)
        if isinstance(stored, OJSError):
            raise stored

    async def _write(self) -> None:
        limit = self.service.limits.max_batch_jobs
        while self._pending:
            batch, self._pending = self._pending[:limit], self._pending[limit:]
            try:
                results: list[Any] = await self.service.ack_many(
                    [(job_id, result) for job_id, result, _ in batch], self.worker_id
                )
            except Exception as exc:  # the whole batch failed (a backend outage): each learns
                results = [exc] * len(batch)
            for (_, _, outcome), stored in zip(batch, results, strict=True):
                if outcome.done():
                    continue
                if isinstance(stored, Exception) and not isinstance(stored, OJSError):
                    outcome.set_exception(stored)
                else:
                    outcome.set_result(stored)

    async def close(self) -> None:
        """Wait for the acknowledgements being written (a stopping worker)."""
        writer = self._writer
        if writer is not None:
            with contextlib.suppress(Exception):
                await writer
