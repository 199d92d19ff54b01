"""The live event feed: one core-NATS subscription per process, fanned out in process.

``OJS_EVENTS`` republishes every event it stores on ``ojs.feed.events.<type>`` with its stream
sequence in the ``Nats-Sequence`` header (the stream's ``republish`` setting). So a plain core
subscription sees each event of every replica once it is stored, numbered as
:meth:`~ojs_nats.stats.EventLog.read` numbers it, in stream order: no consumer per subscriber,
no consumer at all. This module holds that one subscription while any listener wants it and
calls the listeners (the HTTP binding's hub) with each event. Core NATS delivers at most once:
a reconnect or an overflowing subscription loses messages, which listeners notice as a jump in
``seq`` and read back from the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from ojs_core.backend import EventListener, Unsubscribe

from . import names
from .connection import Connection
from .stats import decode_event

__all__ = ["EventFeed"]

log = logging.getLogger("ojs.nats")

#: Messages (and bytes) the subscription may hold before nats-py drops them: a bounded buffer;
#: what is dropped is read back from the stream by the listener.
PENDING_MSGS = 65_536
PENDING_BYTES = 64 * 1024 * 1024


class EventFeed:
    """Holds the feed subscription and calls every listener with each event heard."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._listeners: list[EventListener] = []
        self._sub: Subscription | None = None
        self._subscribing = asyncio.Lock()  # two first listeners: one subscription

    async def subscribe(self, listener: EventListener) -> Unsubscribe:
        """Call ``listener`` with every event stored from now on (subscribing first if this is
        the first listener; the server has the subscription once this returns)."""
        async with self._subscribing:
            if self._sub is None:
                nc = self.conn.nc
                self._sub = await nc.subscribe(
                    names.EVENT_FEED_SUBJECTS,
                    cb=self._heard,
                    pending_msgs_limit=PENDING_MSGS,
                    pending_bytes_limit=PENDING_BYTES,
                )
                await nc.flush()
            self._listeners.append(listener)

        async def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)
            if not self._listeners and self._sub is not None:
                sub, self._sub = self._sub, None
                with contextlib.suppress(Exception):  # the connection may be closing
                    await sub.unsubscribe()

        return unsubscribe

    async def _heard(self, msg: Msg) -> None:
        try:
            seq = int((msg.headers or {})[names.DIRECT_SEQUENCE])
        except (KeyError, ValueError):
            return  # not a republished event
        event = decode_event(msg.data, seq)
        if event is None:
            return
        for listener in tuple(self._listeners):
            try:
                listener(event)
            except Exception:  # one listener's bug must not starve the others
                log.exception("event listener failed")

    def forget_all(self) -> None:
        """Drop the subscription (the connection is closing)."""
        self._sub = None
        self._listeners.clear()
