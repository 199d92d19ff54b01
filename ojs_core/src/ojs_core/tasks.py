"""Stopping background tasks for good.

On Python 3.11, ``asyncio.wait_for`` returns normally, swallowing a cancellation, when what it
awaits completes in the same loop iteration as the ``cancel()`` (fixed in 3.12). nats-py uses
``wait_for`` for its requests, publish acknowledgements and ``next_msg``, and so do parts of
ours: a loop cancelled once at such a moment goes on with its next round, and whoever awaits
it after a single ``cancel()`` waits forever (a server that never exits after SIGTERM).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

__all__ = ["cancel_and_wait"]

log = logging.getLogger("ojs.tasks")

#: Seconds between cancellations of a task that is still running.
RECANCEL_S = 0.5


async def cancel_and_wait(*tasks: asyncio.Future[Any] | None) -> None:
    """Cancel ``tasks`` (``None`` ignored) again and again until each is done, then collect
    their outcomes: neither a cancellation nor a failure is raised (they are being stopped),
    a task that had failed on its own is logged."""
    live = [t for t in tasks if t is not None]
    while pending := [t for t in live if not t.done()]:
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=RECANCEL_S)
    for task in live:
        if task.cancelled():
            continue
        failure = task.exception()
        if failure is not None:  # it ended on its own, failing: say so once, here
            name = task.get_name() if isinstance(task, asyncio.Task) else repr(task)
            log.warning("background task %s had failed: %r", name, failure, exc_info=failure)
