"""Messages nobody waits for, sent with the connection's next write instead of on their own.

A job's lifecycle publishes a few messages whose answer nobody awaits: the acknowledgement of
the ready hint a claim consumed, the removal of a superseded index entry, its events. nats-py
writes each publish to the socket at the next turn of the event loop; when jobs come one at a
time (a worker at a few hundred jobs per second), each of those is a socket write of its own
for this process and a read for nats-server, and a socket write costs tens of microseconds of
kernel time on a small VM, more than building the message.

:class:`LazyPublisher` appends such a message to nats-py's buffer of pending commands without
waking its flusher: it leaves with whatever the connection writes next (a publish that is
awaited, a pull request) and at the latest :data:`LAZY_S` seconds later. Order on the
connection is kept (the buffer is one queue), so a removal never overtakes the write it
follows. Where nats-py lacks the buffer this relies on, or the connection is not up (nats-py
then buffers for the reconnect), or the message is too large, it is an ordinary publish.
"""

from __future__ import annotations

import asyncio
from typing import Any

from nats.aio.client import Client
from nats.protocol.command import pub_cmd

__all__ = ["LAZY_S", "LazyPublisher"]

#: The longest a lazy message waits for another write to leave with (seconds).
LAZY_S = 0.002
#: Characters a subject may not hold (nats-py's publish refuses them).
_UNSAFE = frozenset(" \t\r\n")


class LazyPublisher:
    """Publishes on ``nc`` with the next write, or within :data:`LAZY_S`."""

    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self._timer: asyncio.TimerHandle | None = None
        self._writing: set[asyncio.Future[Any]] = set()
        client: Any = nc
        #: nats-py's pending commands, its flusher's queue: both present, or no lazy sending.
        self._able = isinstance(getattr(client, "_pending", None), list) and hasattr(
            client, "_flush_queue"
        )

    async def publish(self, subject: str, data: bytes = b"") -> None:
        """Queue ``data`` on ``subject`` (no reply, no headers) for the next write."""
        nc: Any = self.nc
        if (
            not self._able
            or not nc.is_connected
            or len(data) > nc.max_payload
            or _UNSAFE.intersection(subject)  # a publish refuses it; raw, it would split the line
        ):
            await self.nc.publish(subject, data)  # also raises what a publish raises
            return
        command = pub_cmd(subject, "", data)
        limit = nc._max_pending_size
        if limit > 0 and nc._pending_data_size + len(command) > limit:
            await self.nc.publish(subject, data)  # nats-py flushes a full buffer at once
            return
        nc._pending.append(command)
        nc._pending_data_size += len(command)
        nc.stats["out_msgs"] += 1
        nc.stats["out_bytes"] += len(data)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(LAZY_S, self._flush)

    def _flush(self) -> None:
        """Nothing else was written meanwhile: wake nats-py's flusher for what waits."""
        self._timer = None
        nc: Any = self.nc
        queue = nc._flush_queue
        if not nc._pending_data_size or not nc.is_connected or queue is None:
            return
        flusher = getattr(nc, "_flusher_task", None)
        if flusher is None or flusher.done():  # nats-py then writes inline: let it
            task = asyncio.ensure_future(nc._flush_pending())
            self._writing.add(task)
            task.add_done_callback(self._writing.discard)
        elif queue.empty():
            queue.put_nowait(asyncio.get_running_loop().create_future())

    def close(self) -> None:
        """Forget the pending wake-up (the connection drains or closes: it writes them)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
